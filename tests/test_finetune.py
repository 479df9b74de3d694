"""Fine-tuning: recipes, the CI smoke training run, the artifact it leaves, and the GGUF export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.categories import load_categories
from core.errors import HousechatError
from core.models import SMOLLM2
from core.settings import from_env
from finetune.cli import main
from finetune.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
QUESTIONS = [
    json.loads(line)["question"] for line in (ROOT / "data" / "routing" / "val.jsonl").read_text().splitlines()[:20]
]


def test_shipped_recipes_load() -> None:
    names = {p.stem for p in (ROOT / "finetune" / "recipes").glob("*.yaml")}
    assert {
        "smollm2-135m-codes",
        "smollm2-135m-names",
        "qwen3-0.6b-codes",
        "qwen3-0.6b-names",
        "tiny-qwen3-smoke",
    } <= names
    for name in names:
        recipe = load_recipe(Path(name))
        assert recipe.target_modules == "all-linear" and recipe.label_format in ("codes", "names")
    codes, names_ = load_recipe(Path("smollm2-135m-codes")), load_recipe(Path("smollm2-135m-names"))
    from_names = load_recipe(Path("smollm2-135m-codes-from-names"))
    # The experiment's three arms differ in the label format and the code rows only.
    same = ("name", "label_format", "code_rows", "notes")
    arms = [{k: v for k, v in vars(r).items() if k not in same} for r in (codes, names_, from_names)]
    assert arms[0] == arms[1] == arms[2]
    assert (codes.code_rows, names_.code_rows, from_names.code_rows) == ("frozen", "frozen", "from_names")
    # Gemma 3 270M runs the same experiment: only the base differs from SmolLM2's arms.
    for arm in ("codes-from-names", "names"):
        gemma, smol = load_recipe(Path(f"gemma3-270m-{arm}")), load_recipe(Path(f"smollm2-135m-{arm}"))
        assert gemma.base_model == "embedded:gemma3-270m"
        assert {**vars(gemma), "name": "", "base_model": ""} == {**vars(smol), "name": "", "base_model": ""}


def test_bad_recipe_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("base_model: tiny:qwen3\nlearnig_rate: 0.1\n")
    with pytest.raises(
        HousechatError, match=r"r.yaml:2: unknown recipe key 'learnig_rate' — did you mean 'learning_rate'"
    ):
        load_recipe(bad)
    bad.write_text("base_model: tiny:qwen3\nlabel_format: letters\n")
    with pytest.raises(HousechatError, match="label_format must be codes or names"):
        load_recipe(bad)
    assert main(["train", str(bad)]) == 1
    bad.write_text("base_model: tiny:qwen3\nlabel_format: codes\ncode_rows: random\n")
    with pytest.raises(HousechatError, match="r.yaml:3: code_rows must be frozen, trained, from_names"):
        load_recipe(bad)
    bad.write_text("base_model: tiny:qwen3\nlabel_format: names\ncode_rows: from_names\n")
    with pytest.raises(HousechatError, match="r.yaml:3: code_rows 'from_names' needs label_format codes"):
        load_recipe(bad)


def test_code_rows_start_from_the_category_names() -> None:
    import torch

    from core.models import TINY_QWEN3, load_causal_lm
    from finetune.train import code_rows

    labels = load_categories(ROOT / "data" / "categories.yaml")
    model, tokenizer = load_causal_lm(TINY_QWEN3, VAR, cache=False)
    weight = model.get_output_embeddings().weight
    before = weight.detach().clone()
    assert code_rows(load_recipe(Path("tiny-qwen3-smoke"), code_rows="frozen"), model, tokenizer, labels) is None
    assert torch.equal(weight, before)
    rows = code_rows(load_recipe(Path("tiny-qwen3-smoke")), model, tokenizer, labels)
    assert rows is not None and list(rows) == ["embed_tokens"]  # tied: PEFT follows lm_head itself
    ids = rows["embed_tokens"]
    assert ids == [tokenizer.encode(c, add_special_tokens=False)[0] for c in labels.labels("codes")]
    norm = before[ids].norm(dim=1).mean()
    pool = before[tokenizer.encode("pool", add_special_tokens=False)].mean(dim=0)
    pool_code = ids[labels.ids.index("pool")]
    assert torch.allclose(weight[pool_code], pool / pool.norm() * norm, atol=1e-6)
    changed = (weight != before).any(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(ids)  # only the code rows moved


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["smollm2-135m-codes.yaml", "--dry-run", "--output-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["recipe"]["base_model"] == SMOLLM2 and printed["plan"]["labels"] == 20
    assert printed["plan"]["total_steps"] == printed["plan"]["steps_per_epoch"] * 2
    assert not out.exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    assert main(["tiny-qwen3-smoke.yaml", "--output-dir", str(out), "--threads", "1"]) == 0
    return out


@pytest.mark.slow  # trains the smoke recipe
def test_smoke_recipe_trains_with_falling_loss_and_a_valid_meta(smoke_run: Path) -> None:
    log = [json.loads(line) for line in (smoke_run / "train_log.jsonl").read_text().splitlines()]
    losses = [float(row["loss"]) for row in log if row.get("loss") is not None and "val_accuracy" not in row]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses
    meta = json.loads((smoke_run / "adapter" / "meta.json").read_text())
    labels = load_categories(ROOT / "data" / "categories.yaml")
    assert meta["base_model"] == "tiny:qwen3" and meta["label_format"] == "codes"
    assert meta["categories_hash"] == labels.fingerprint() and meta["data_hash"]
    assert set(meta["thresholds"]) == {"single", "pair"} and 0 <= meta["metrics"]["val_accuracy"] <= 1
    assert (smoke_run / "adapter" / "adapter_model.safetensors").exists() and (smoke_run / "curve.png").exists()


@pytest.mark.slow  # trains the smoke recipe
def test_trained_code_rows_are_saved_and_merged_into_the_loaded_router(smoke_run: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from core.models import TINY_QWEN3, load_causal_lm
    from router.llm import load_adapted_model

    weights = load_file(smoke_run / "adapter" / "adapter_model.safetensors")
    rows = next(v for k, v in weights.items() if k.endswith("trainable_tokens_delta"))
    merged, tokenizer = load_adapted_model(smoke_run / "adapter", TINY_QWEN3, VAR)
    base, _ = load_causal_lm(TINY_QWEN3, VAR, cache=False)
    ids = [
        tokenizer.encode(c, add_special_tokens=False)[0]
        for c in load_categories(ROOT / "data" / "categories.yaml").labels("codes")
    ]
    out = merged.get_output_embeddings().weight
    assert rows.shape == (20, out.shape[1]) and torch.allclose(out[ids], rows.float())
    assert not torch.allclose(out[ids], base.get_output_embeddings().weight[ids])  # trained, not the base's


@pytest.mark.slow  # trains the smoke recipe
def test_router_loads_the_trained_adapter_and_refuses_a_mismatch(smoke_run: Path, tmp_path: Path) -> None:
    from router.registry import load_router

    settings = from_env({}, router_model_dir=smoke_run / "adapter", var_dir=VAR)
    loaded = load_router("llm", settings, fallback=False)
    route = loaded.router.route("pool heater won't fire")
    assert route.backend == "llm" and len(route.scores) == 20
    bad = tmp_path / "bad"
    shutil.copytree(smoke_run / "adapter", bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["categories_hash"] = "elsewhere"
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(HousechatError, match="trained on other categories"):
        load_router("llm", from_env({}, router_model_dir=bad, var_dir=VAR), fallback=False)


def _same_predictions(export_dir: Path, labels_format: str = "codes") -> None:
    from core.categories import load_categories as load
    from finetune.export import load_gguf_back
    from router.llm import LabelScorer

    labels = load(ROOT / "data" / "categories.yaml")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(export_dir / "merged")
    tokenizer = AutoTokenizer.from_pretrained(export_dir / "merged")
    back, back_tokenizer = load_gguf_back(export_dir / "router.gguf")
    a = LabelScorer(merged, tokenizer, labels, labels_format).probabilities(QUESTIONS)
    b = LabelScorer(back, back_tokenizer, labels, labels_format).probabilities(QUESTIONS)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    assert abs(a - b).max() < 1e-4


@pytest.mark.slow  # export: merge, GGUF, load back
def test_export_tiny_qwen3_gguf_round_trip(smoke_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "export"
    assert main(["export", str(smoke_run), "--ollama", "--output-dir", str(out)]) == 0
    assert "ollama create housechat-router -f Modelfile" in capsys.readouterr().out
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./router.gguf") and "<think>\n\n</think>" in modelfile
    assert "PARAMETER temperature 0" in modelfile and "{{ .Prompt }}" in modelfile
    # The filter thresholds travel in the GGUF, where `ollama show` (and so the ollama router) finds them.
    import gguf

    from router.ollama_router import CATEGORIES_KEY, POLICY_KEY

    fields = gguf.GGUFReader(str(out / "router.gguf")).fields
    meta = json.loads((smoke_run / "adapter" / "meta.json").read_text())
    assert json.loads(fields[POLICY_KEY].contents()) == meta["thresholds"]
    # So do the categories, which the ollama router checks against the categories file.
    assert json.loads(fields[CATEGORIES_KEY].contents()) == [[c["id"], c["code"]] for c in meta["categories"]]
    _same_predictions(out)


@pytest.mark.slow  # export: merge, GGUF, load back
def test_export_smollm2_gguf_round_trip(tmp_path: Path) -> None:
    """A non-trivial LoRA (random B) on the embedded SmolLM2: merge, write GGUF (llama q/k permuted), load back."""
    import torch
    from peft import LoraConfig, get_peft_model

    from core.models import load_causal_lm
    from finetune.export import export
    from router.meta import label_meta, write_meta

    labels = load_categories(ROOT / "data" / "categories.yaml")
    model, tokenizer = load_causal_lm(SMOLLM2, VAR, cache=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    run = tmp_path / "run" / "adapter"
    peft_model.save_pretrained(run)
    tokenizer.save_pretrained(run)
    write_meta(run, {"base_model": SMOLLM2, "label_format": "codes", **label_meta(labels)})
    written = export(tmp_path / "run", from_env({}, var_dir=VAR), tmp_path / "export", want_gguf=True, want_ollama=True)
    assert written["gguf"].stat().st_size > 100_000_000  # F32 weights
    _same_predictions(tmp_path / "export")


@pytest.mark.slow  # trains the smoke recipe
def test_install_writes_fp16_weights_the_router_loads(smoke_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from finetune.train import install
    from router.registry import load_router

    target = install(smoke_run / "adapter", tmp_path / "router-llm")
    weights = load_file(target / "adapter_model.safetensors")
    assert all(str(t.dtype) == "torch.float16" for t in weights.values())
    route = load_router("llm", from_env({}, router_model_dir=target, var_dir=VAR), fallback=False).router.route("x")
    assert route.backend == "llm"


def test_classify_mode_and_extra_data_keys_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("base_model: tiny:qwen3\nmode: generate\n")
    with pytest.raises(HousechatError, match=r"r.yaml:2: mode must be score or classify"):
        load_recipe(bad)
    bad.write_text("base_model: tiny:qwen3\nmode: classify\ncode_rows: from_names\n")
    with pytest.raises(HousechatError, match="mode classify trains a LoRA adapter and a head"):
        load_recipe(bad)
    bad.write_text("base_model: tiny:qwen3\nnotes: true\n")
    with pytest.raises(HousechatError, match="r.yaml:2: extra_questions and notes add the household's data"):
        load_recipe(bad, train_file="x.jsonl")
    recipe = load_recipe(Path("smollm2-135m-classify"))
    assert (recipe.mode, recipe.extra_questions, recipe.notes) == ("classify", True, True)
    assert load_recipe(Path("smollm2-135m-codes")).mode == "score"  # today's behaviour stays the default


def test_extra_questions_and_notes_join_train_only(capsys) -> None:
    from finetune.data import Dropped, extra_examples, note_examples
    from finetune.train import load_training_data

    settings = from_env({}, var_dir=VAR)
    plain = load_training_data(load_recipe(Path("tiny-qwen3-smoke"), max_train_examples=0), settings)
    more = load_training_data(
        load_recipe(Path("tiny-qwen3-smoke"), max_train_examples=0, extra_questions=True, notes=True), settings
    )
    labels = load_categories(ROOT / "data" / "categories.yaml")
    extra, _ = extra_examples(ROOT / "data" / "routing" / "extra", labels, Dropped())
    notes, _ = note_examples(ROOT / "data" / "notes", labels)
    assert len(more.train) == len(plain.train) + len(extra) + len(notes) and len(extra) and len(notes)
    assert [e.question for e in more.val] == [e.question for e in plain.val]  # val untouched
    assert more.data_hash.startswith(plain.data_hash) and "+extra:" in more.data_hash and "+notes:" in more.data_hash
    assert capsys.readouterr().out == ""  # stdout stays free for --dry-run's JSON


@pytest.mark.slow  # trains the tiny Qwen3 in classify mode
def test_classify_mode_trains_saves_and_routes_over_the_closed_label_set(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from finetune.train import install, train
    from router.llm import load_adapted_classifier
    from router.registry import availability, load_router

    recipe = load_recipe(
        Path("tiny-qwen3-smoke"),
        mode="classify",
        code_rows="frozen",
        extra_questions=True,
        notes=True,
        output_dir=str(tmp_path / "run"),
        threads=1,
    )
    meta = train(recipe, from_env({}, var_dir=VAR))
    adapter = tmp_path / "run" / "adapter"
    assert meta["mode"] == "classify" and "+notes:" in meta["data_hash"]
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    # The trained head is saved with the adapter and is the one the router loads (not a fresh one).
    weights = load_file(adapter / "adapter_model.safetensors")
    head = next(v for k, v in weights.items() if "score" in k)
    labels = load_categories(ROOT / "data" / "categories.yaml")
    model, _ = load_adapted_classifier(adapter, "tiny:qwen3", VAR, len(labels))
    assert torch.allclose(model.score.weight, head.float())
    for folder in (adapter, install(adapter, tmp_path / "router-llm")):
        loaded = load_router("llm", from_env({}, router_model_dir=folder, var_dir=VAR), fallback=False)
        routes = loaded.router.route_batch(QUESTIONS[:5] + ["pool heater won't fire"])
        for route in routes:
            assert route.backend == "llm" and route.category in labels.ids
            assert set(route.scores) == set(labels.ids) and abs(sum(route.scores.values()) - 1) < 1e-4
            assert all(p >= 0 for p in route.scores.values())
    with pytest.raises(HousechatError, match="does not generate"):
        load_router("llm-generate", from_env({}, router_model_dir=adapter, var_dir=VAR), fallback=False)
    listed = availability(from_env({}, router_model_dir=adapter, var_dir=VAR))
    assert listed["llm"] is None and "does not generate" in (listed["llm-generate"] or "")  # `router --list`
    assert main(["export", str(tmp_path / "run"), "--output-dir", str(tmp_path / "export")]) == 1  # no GGUF of a head


@pytest.mark.slow  # ingests three notes and trains the tiny Qwen3 in classify mode
def test_classify_head_reads_the_store_it_was_trained_with(tmp_path: Path, write_note) -> None:
    from ingest.cli import main as ingest_main
    from router.registry import load_router

    notes = tmp_path / "notes"
    write_note(notes, "pool-pump", "pool", "Replaced the Aquavolt VS-2 pump seal in May 2024.", title="Pool pump seal")
    write_note(notes, "hvac-filter", "hvac", "The furnace takes a 16x25x1 MERV 11 filter.", title="Furnace filter")
    write_note(
        notes, "roof-leak", "roof", "Shingles over the porch lifted in the March storm.", title="Porch roof leak"
    )
    store = tmp_path / "store"
    assert ingest_main(["--store", str(store), str(notes)]) == 0
    recipe = tmp_path / "ctx.yaml"
    smoke = (ROOT / "finetune" / "recipes" / "tiny-qwen3-smoke.yaml").read_text()
    recipe.write_text(smoke.replace("code_rows: from_names", "mode: classify\nstore_context: 2"))
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--store", str(store), "--output-dir", str(out), "--threads", "1"]) == 0
    trained = json.loads((out / "adapter" / "meta.json").read_text())
    assert trained["store_context"] == 2 and trained["store_context_titles"] is True

    question = "the Aquavolt seal is leaking again"
    loaded = load_router(
        "llm", from_env({}, store=store, router_model_dir=out / "adapter", var_dir=VAR), fallback=False
    )
    scorer = loaded.router.scorer
    (lines,) = scorer.context([question])
    assert lines.startswith("pool: Pool pump seal | ") and lines.count(" | ") == 1  # the top 2, best first
    with_notes = scorer.probabilities([question])
    scorer.context = None  # the same head without the store's lines: its input, so its output, changes
    assert abs(with_notes - scorer.probabilities([question])).max() > 1e-4
    # The store vote, fit on val: three notes' categories lift val's pool/hvac/roof questions over a random head.
    import torch

    torch.set_num_threads(2)  # training set 1: `--threads` must set it again
    assert main(["store-vote", str(out / "adapter"), "--store", str(store), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    meta = json.loads((out / "adapter" / "meta.json").read_text())
    vote = meta["store_vote"]
    assert (
        vote["weight"] > 0
        and meta["metrics"]["val_accuracy_with_vote"] > meta["metrics"]["val_accuracy_head_as_served"]
    )
    voting = load_router(
        "llm", from_env({}, store=store, router_model_dir=out / "adapter", var_dir=VAR), fallback=False
    )
    assert voting.router.scorer.context.vote.weight == vote["weight"]
    assert abs(voting.router.scorer.probabilities([question]) - scorer.probabilities([question])).max() > 1e-4
    # A head trained with `store_context_titles: false` reads the chunks' categories alone (a shorter input).
    (out / "adapter" / "meta.json").write_text(json.dumps({**meta, "store_context_titles": False}))
    short = load_router("llm", from_env({}, store=store, router_model_dir=out / "adapter", var_dir=VAR), fallback=False)
    (short_lines,) = short.router.scorer.context([question])
    assert short_lines.startswith("pool | ") and short_lines.count(" | ") == 1 and ":" not in short_lines
    # The app embeds a question once: route_vector searches with the vector it is given.
    from core.models import embed

    own, other = embed([question, "which filter does the furnace take"])
    routed = short.router.route(question).scores
    assert short.router.route_vector(question, own).scores == pytest.approx(routed, abs=1e-5)
    (moved,) = short.router.scorer.context.lines(short.router.scorer.context.hits([question], other[None]))
    assert moved.startswith("hvac | ")
    assert short.router.route_vector(question, other).scores != pytest.approx(routed, abs=1e-5)
    # No store where the settings point (not ingested yet): the head reads the question alone, and routes.
    bare = load_router("llm", from_env({}, store=tmp_path / "none", router_model_dir=out / "adapter", var_dir=VAR))
    assert bare.router.scorer.context([question]) == [""]
    assert bare.router.route(question).category in load_categories(ROOT / "data" / "categories.yaml").ids


@pytest.mark.slow  # ingests two notes, fits five out-of-fold heads and trains the tiny Qwen3 in classify mode
def test_classify_head_reads_the_embedding_routers_guesses(tmp_path: Path, write_note, monkeypatch, capsys) -> None:
    from ingest.cli import main as ingest_main
    from router.llm import hint_line
    from router.registry import load_router

    notes = tmp_path / "notes"
    write_note(notes, "pool-pump", "pool", "Replaced the Aquavolt VS-2 pump seal in May 2024.", title="Pool pump seal")
    write_note(notes, "hvac-filter", "hvac", "The furnace takes a 16x25x1 MERV 11 filter.", title="Furnace filter")
    store = tmp_path / "store"
    assert ingest_main(["--store", str(store), str(notes)]) == 0
    monkeypatch.setenv("HOUSECHAT_NOTES_DIR", str(notes))  # the out-of-fold heads learn these notes' paragraphs
    recipe = tmp_path / "hint.yaml"
    smoke = (ROOT / "finetune" / "recipes" / "tiny-qwen3-smoke.yaml").read_text()
    recipe.write_text(smoke.replace("code_rows: from_names", "mode: classify\nrouter_hint: true"))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", str(recipe), "--store", str(store), "--output-dir", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("router hints: fold") == 5 and "guesses of" in err  # the 32 questions, out of fold
    assert json.loads((out / "adapter" / "meta.json").read_text())["router_hint"] == {"folds": 5}

    settings = from_env({}, store=store, router_model_dir=out / "adapter", var_dir=VAR)
    scorer = load_router("llm", settings, fallback=False).router.scorer
    question = "the Aquavolt seal is leaking again"
    (line,) = scorer.hint([question])
    guessed = load_router("embedding", settings, fallback=False).router.route(question)
    assert line == hint_line(guessed.scores) and line.startswith(guessed.category.replace("_", " ") + " ")
    with_hint = scorer.probabilities([question])
    scorer.hint = None  # the same head without the guesses: its input, so its output, changes
    assert abs(with_hint - scorer.probabilities([question])).max() > 1e-4


def test_router_hint_text_and_recipe_check(tmp_path: Path) -> None:
    from router.llm import classify_text, hint_line

    line = hint_line({"pool": 0.812, "water_heater": 0.121, "hvac": 0.067})
    assert line == "pool 81 | water heater 12"  # the top two, in percent
    assert (
        classify_text("pump  hums", "pool | hvac", line)
        == "pump hums\nNotes: pool | hvac\nRouter: pool 81 | water heater 12\nCategory:"
    )
    assert classify_text("pump hums", "", line) == "pump hums\nNotes: \nRouter: pool 81 | water heater 12\nCategory:"
    assert classify_text("pump hums") == "pump hums\nCategory:"
    bad = tmp_path / "r.yaml"
    bad.write_text("base_model: tiny:qwen3\nrouter_hint: true\n")
    with pytest.raises(HousechatError, match="r.yaml:2: router_hint needs `mode: classify`"):
        load_recipe(bad)
    assert load_recipe(Path("gemma3-270m-classify-context-cats-hint")).router_hint is True


def test_note_paragraphs_train_a_store_reading_head_without_context(tmp_path: Path) -> None:
    """A note's paragraph would find its own note at the top of the store search: it trains bare."""
    from core.schemas import RoutingExample
    from finetune.train import classify_rows, load_training_data
    from router.llm import classify_text

    labels = load_categories(ROOT / "data" / "categories.yaml")
    examples = [RoutingExample("pump seal leaking", "pool"), RoutingExample("Pool pump. Replaced the seal.", "pool")]
    asked: list[str] = []

    def context(questions: list[str]) -> list[str]:
        asked.extend(questions)
        return ["pool | hvac"] * len(questions)

    rows = classify_rows(examples, labels, context, frozenset({"Pool pump. Replaced the seal."}))
    pool = labels.ids.index("pool")
    assert rows == [
        (classify_text("pump seal leaking", "pool | hvac"), pool),
        (classify_text("Pool pump. Replaced the seal."), pool),
    ]
    assert asked == ["pump seal leaking"]  # the paragraph is never searched
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base_model: tiny:qwen3\nmode: classify\nnotes: true\nstore_context: 3\n")
    data = load_training_data(load_recipe(recipe), from_env({}, var_dir=VAR))
    recipe.write_text("base_model: tiny:qwen3\nmode: classify\nnotes: false\nstore_context: 3\n")
    questions = load_training_data(load_recipe(recipe), from_env({}, var_dir=VAR))
    assert len(data.bare) > 1000 and not questions.bare  # the paragraphs, and only with `notes: true`
    assert [e for e in data.train if e.question not in data.bare] == questions.train


def test_store_context_needs_the_classify_mode(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("base_model: tiny:qwen3\nstore_context: 3\n")
    with pytest.raises(HousechatError, match="r.yaml:2: store_context is a number of chunks .* needs `mode: classify`"):
        load_recipe(bad)
    assert load_recipe(Path("gemma3-270m-classify-context")).store_context == 3


@pytest.mark.slow  # uses the smoke run
def test_store_vote_needs_a_head_that_reads_the_store(smoke_run: Path, capsys) -> None:
    assert main(["store-vote", str(smoke_run / "adapter")]) == 1
    assert "does not read the store — train a recipe with `store_context`" in capsys.readouterr().err
