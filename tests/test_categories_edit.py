"""Editable categories end to end: add `solar`, remove `fountain`, assign codes, refuse the old router, refit, route."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.categories import assign_codes, code_for, load_categories
from core.errors import HousechatError

ROOT = Path(__file__).resolve().parent.parent

SOLAR = [
    "how much power did the solar panels make last month?",
    "the inverter for the pv panels shows an error",
    "when were the solar panels cleaned?",
    "is the home battery charging from the roof panels?",
    "what does the solar inverter warranty cover?",
]
OTHERS = {
    "pool": ["when was the pool pump serviced?", "how warm does the pool heater get?", "pool chlorine level"],
    "electrical": ["which breaker feeds the garage?", "the kitchen outlet trips", "who is our electrician?"],
    "garden": ["when should we prune the roses?", "lawn mower service", "which fertiliser for the hedge?"],
}


def edited_categories(path: Path) -> Path:
    """data/categories.yaml without fountain and with a new `solar` entry (no code yet)."""
    text = (ROOT / "data" / "categories.yaml").read_text(encoding="utf-8")
    text = re.sub(r"  - id: fountain\n(?:    .*\n|      .*\n)+", "", text)
    text += "  - id: solar\n    name: Solar panels\n    scope: PV panels, the inverter and the home battery.\n"
    path.write_text(text, encoding="utf-8")
    return path


def test_new_codes_are_opaque_unique_stable_and_skip_unusable(tmp_path) -> None:
    path = edited_categories(tmp_path / "categories.yaml")
    with pytest.raises(
        HousechatError, match=r"\(solar\) has no code — assign one with `python -m finetune categories`"
    ):
        load_categories(path)
    taken = set(load_categories(ROOT / "data" / "categories.yaml").codes)
    text, assigned = assign_codes(path, lambda code: code != code_for("solar", taken, lambda _: True))
    assert list(assigned) == ["solar"] and assigned["solar"] not in taken
    assert assigned["solar"] != code_for("solar", taken, lambda _: True)  # an unusable code is skipped
    again, _ = assign_codes(path, lambda code: code != code_for("solar", taken, lambda _: True))
    assert again == text  # the same file always gets the same code
    path.write_text(text, encoding="utf-8")
    new = load_categories(path)
    old = {c.id: c.code for c in load_categories(ROOT / "data" / "categories.yaml").categories}
    assert "fountain" not in new and all(old[c.id] == c.code for c in new.categories if c.id != "solar")
    assert text.startswith("# The single source")  # comments and layout kept
    assert assign_codes(path, lambda _: True)[1] == {}  # nothing left to assign


FOUNTAIN = ["when was the fountain pump cleaned?", "the fountain basin is green again", "fountain nozzle clogged"]
TINY_RECIPE = """base_model: tiny:qwen3
label_format: codes
engine: trl
lora_r: 4
lora_alpha: 8
max_steps: 2
batch_size: 4
early_stopping_patience: 0
"""


@pytest.mark.slow  # SmolLM2 tokenizer, MiniLM, a real Chroma store, fits a head, trains a tiny Qwen3 for 2 steps
def test_add_solar_remove_fountain_refuse_refit_route(tmp_path, monkeypatch, capsys, write_note) -> None:
    """The whole path on tiny data whose own questions and notes still carry the removed category."""
    from core.models import single_token_check
    from core.settings import from_env
    from finetune.cli import main as finetune_main
    from ingest.cli import main as ingest_main
    from router.cli import main as router_main
    from router.registry import load_router

    cats = edited_categories(tmp_path / "categories.yaml")
    routing, notes, store = tmp_path / "routing", tmp_path / "notes", tmp_path / "store"
    (routing / "extra").mkdir(parents=True)
    rows = [(q, "solar") for q in SOLAR] + [(q, c) for c, qs in {**OTHERS, "fountain": FOUNTAIN}.items() for q in qs]
    train = [r for i, r in enumerate(rows) if i % 3]
    val = [r for i, r in enumerate(rows) if not i % 3]
    extra = [("the fountain light is out", "fountain"), ("battery backup for the solar inverter", "solar")]
    for path, split in (
        (routing / "train.jsonl", train),
        (routing / "val.jsonl", val),
        (routing / "extra" / "more.jsonl", extra),
    ):
        path.write_text("".join(json.dumps({"question": q, "category": c}) + "\n" for q, c in split))
    models = ROOT / "models"  # the committed routers: trained on the old categories
    env = {
        "CATEGORIES_FILE": cats,
        "ROUTING_DATA_DIR": routing,
        "NOTES_DIR": notes,
        "STORE": store,
        "VAR_DIR": ROOT / "var",  # the converted SmolLM2 tokenizer and the tiny Qwen3 are cached there
        "REPORTS_DIR": tmp_path / "reports",
        "RUNS_DIR": tmp_path / "runs",
        "EMBEDDING_ROUTER_DIR": models / "router-embedding",
        "ROUTER_MODEL_DIR": models / "router-llm",
        "ENSEMBLE_ROUTER_DIR": models / "router-ensemble",
    }
    for key, value in env.items():
        monkeypatch.setenv(f"HOUSECHAT_{key}", str(value))

    # 1. The command assigns solar's code, shows the diff, rewrites the file and lists what to refit.
    assert finetune_main(["categories"]) == 0
    out, err = capsys.readouterr()
    code = load_categories(cats).by_id("solar").code
    assert f"+    code: {code}" in out and "fountain" not in load_categories(cats)
    assert single_token_check(ROOT / "var")(code)
    for make in ("python -m finetune embedding", "python -m finetune RECIPE.yaml --install", "finetune ensemble"):
        assert make in err

    # 2. Ingest takes the solar note and names the note still filed under fountain, with the fix.
    write_note(notes, "solar-inverter", "solar", "The SolarEdge inverter in the garage logs the panels' output.")
    write_note(notes, "pool-pump", "pool", "The pool pump runs from 9 to 5 and was serviced in May.")
    fountain_note = write_note(notes, "fountain-pump", "fountain", "The fountain pump is cleaned every spring.")
    assert ingest_main(["--check", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["unknown_categories"] == {"fountain": [str(fountain_note)]}
    assert f"1 note(s) are filed under 'fountain', which is not in {cats}: {fountain_note}" in err
    assert "change its `category:` line" in err and "`python -m finetune categories`" in err
    assert ingest_main(["--json"]) == 1  # the fountain note is reported; the others go in
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 2 and list(summary["unknown_categories"]) == ["fountain"]

    # 3. Every committed router refuses and names the command that refits it.
    for backend, make in (
        ("embedding", "python -m finetune embedding"),
        ("llm", "python -m finetune RECIPE.yaml --install"),
        ("ensemble", "python -m finetune ensemble"),
    ):
        with pytest.raises(HousechatError, match=rf"other categories .* remake it with `{re.escape(make)}`"):
            load_router(backend, from_env(), fallback=False)

    # 4. Refit the embedding router: the removed category's questions and notes are dropped and counted.
    emb = tmp_path / "router-embedding"
    assert finetune_main(["embedding", "--no-vote", "--output-dir", str(emb)]) == 0
    err = capsys.readouterr().err
    assert f"dropped 5 examples labelled 'fountain', not a category in {cats}" in err
    assert "(train: 2, val: 1, extra: 1, notes: 1)" in err  # train.jsonl, val.jsonl, extra/ and the notes folder
    assert [c["id"] for c in json.loads((emb / "meta.json").read_text())["categories"]][-1] == "solar"
    monkeypatch.setenv("HOUSECHAT_EMBEDDING_ROUTER_DIR", str(emb))

    # 5. Refit the LLM router (a tiny Qwen3, 2 steps) and install it, then the ensemble of the two.
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    monkeypatch.setenv("HOUSECHAT_ROUTER_MODEL_DIR", str(tmp_path / "router-llm"))
    assert finetune_main([str(recipe), "--threads", "1", "--install"]) == 0
    assert "dropped 3 examples labelled 'fountain'" in capsys.readouterr().err  # train + val
    monkeypatch.setenv("HOUSECHAT_ENSEMBLE_ROUTER_DIR", str(tmp_path / "router-ensemble"))
    assert finetune_main(["ensemble"]) == 0
    capsys.readouterr()

    # 6. Routing works with every refit router, on the new label set.
    labels = load_categories(cats)
    for backend in ("embedding", "llm", "ensemble"):
        route = load_router(backend, from_env(), fallback=False).router.route("the solar panels inverter is blinking")
        assert route.backend == backend and set(route.scores) == set(labels.ids)
    assert router_main(["the solar panels inverter is blinking red", "--backend", "embedding", "--json"]) == 0
    route_json = json.loads(capsys.readouterr().out)
    assert route_json["category"] == "solar" and route_json["code"] == code and route_json["backend"] == "embedding"
    assert router_main(["--list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert all(listing[b]["available"] for b in ("embedding", "llm", "ensemble"))


@pytest.fixture
def new_categories(tmp_path) -> Path:
    """The edited categories file (solar added, fountain removed) with solar's code assigned."""
    path = edited_categories(tmp_path / "categories.yaml")
    path.write_text(assign_codes(path, lambda _: True)[0], encoding="utf-8")
    return path


def _adapted_head_of_old_categories(settings) -> None:
    """A base head on the new categories and an adapted head, current for the (empty) store, still on the old ones."""
    import shutil

    from core.store import open_store
    from router.adapt import ADAPT_VERSION, adapted_dir, store_fingerprint
    from router.meta import label_meta, read_meta, write_meta

    committed = ROOT / "models" / "router-embedding"
    base, adapted = settings.embedding_router_dir, adapted_dir(settings)
    for folder in (base, adapted):
        shutil.copytree(committed, folder, ignore=shutil.ignore_patterns("questions.npz"))
    meta = read_meta(committed)
    write_meta(base, {**meta, **label_meta(load_categories(settings.categories_file))})
    store = open_store(settings, create=True)
    write_meta(
        adapted,
        {
            **meta,
            "adapted_from": {"created": meta["created"]},
            "adapt_version": ADAPT_VERSION,
            "store": {"fingerprint": store_fingerprint(store)},
        },
    )


@pytest.mark.parametrize(
    ("backend", "command"),
    [
        ("embedding", "python -m finetune embedding"),
        ("llm", "python -m finetune RECIPE.yaml --install"),
        ("ensemble", "python -m finetune ensemble"),
        ("ollama", "python -m finetune RECIPE.yaml && python -m finetune export runs/RECIPE --ollama"),
        pytest.param("adapted", "python -m finetune embedding", marks=pytest.mark.slow),  # opens a Chroma store
    ],
)
def test_every_router_refuses_other_categories_and_names_its_refit(
    backend, command, new_categories, tmp_path, ollama_fake
) -> None:
    from core.settings import from_env
    from router.meta import stale_routers
    from router.ollama_router import CATEGORIES_KEY
    from router.registry import load_router

    models = ROOT / "models"
    settings = from_env(
        {},
        categories_file=new_categories,
        router_model_dir=models / "router-llm",
        embedding_router_dir=models / "router-embedding",
        ensemble_router_dir=models / "router-ensemble",
        ollama_host=ollama_fake.url,
        var_dir=tmp_path / "var",
        store=tmp_path / "store",
    )
    labels = load_categories(new_categories)
    old = load_categories(ROOT / "data" / "categories.yaml")
    ollama_fake.models = [settings.ollama_router_model]
    ollama_fake.model_info = {CATEGORIES_KEY: json.dumps([[c.id, c.code] for c in old.categories])}
    assert set(stale_routers(settings, labels)) == {"embedding", "llm", "ensemble"}
    if backend == "adapted":
        settings = from_env({}, **{**vars(settings), "embedding_router_dir": tmp_path / "base"})
        _adapted_head_of_old_categories(settings)
        router = load_router("embedding", settings, labels, fallback=False).router  # the base is on the new ones
        with pytest.raises(HousechatError, match=rf"other categories than {re.escape(str(new_categories))}"):
            router.route("the solar inverter is blinking")  # the store's adapted head is not
        return
    with pytest.raises(HousechatError) as refused:
        load_router(backend, settings, labels, fallback=False)
    message = str(refused.value)
    assert "other categories" in message and f"`{command}" in message and "('solar'," in message
    # The fallback chain answers instead and says why.
    if backend != "embedding":
        route = load_router(backend, settings, labels).router.route("x")
        assert route.backend == "off" and f"`{command}" in (route.fallback_reason or "")
    # A served model exported with these very categories is taken.
    if backend == "ollama":
        ollama_fake.model_info = {CATEGORIES_KEY: json.dumps([[c.id, c.code] for c in labels.categories])}
        assert load_router("ollama", settings, labels, fallback=False).name == "ollama"


def test_ingest_check_names_the_notes_of_a_removed_category(new_categories, tmp_path, monkeypatch, capsys, write_note):
    from ingest.cli import main

    monkeypatch.setenv("HOUSECHAT_CATEGORIES_FILE", str(new_categories))
    notes = tmp_path / "notes"
    write_note(notes, "solar-inverter", "solar", "The inverter logs the panels' output.")
    paths = [write_note(notes, f"fountain-{n}", "fountain", "The fountain pump is cleaned.") for n in range(7)]
    assert main(["--check", str(notes)]) == 1
    out, err = capsys.readouterr()
    assert "1 valid notes" in out and "solar" in out
    assert f"{paths[0]}:3: unknown category 'fountain' — valid ids: appliances" in err  # no look-alike offered
    assert f"7 note(s) are filed under 'fountain', which is not in {new_categories}: {paths[0]}" in err
    assert "and 2 more. Re-file each (change its `category:` line" in err and "Until then" not in err


def test_data_check_reports_a_removed_category_once_per_file(new_categories, tmp_path) -> None:
    from finetune.data import check_splits

    rows = {"train": [*FOUNTAIN, SOLAR[0]], "val": [SOLAR[1]], "test": [SOLAR[2]]}
    for split, questions in rows.items():
        lines = [{"question": q, "category": "fountain" if q in FOUNTAIN else "solar"} for q in questions]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = check_splits(tmp_path, load_categories(new_categories), [])
    assert [str(e) for e in report.errors] == [
        f"{tmp_path / 'train.jsonl'}:1: 3 questions labelled 'fountain', not a category in {new_categories} "
        "(lines 1, 2, 3) — re-label or delete them (a refit leaves them out meanwhile), or add the category back "
        "and run `python -m finetune categories`"
    ]
    assert report.counts["train"]["solar"] == 1 and "fountain" not in report.counts["train"]


def test_a_file_with_every_code_assigned_loads_no_tokenizer(tmp_path, monkeypatch, capsys) -> None:
    import core.models
    from finetune.cli import main as finetune_main

    def no_base_model(*_args: object) -> Path:
        raise AssertionError("a base model was unpacked")

    monkeypatch.setattr(core.models, "embedded_causal_lm_dir", no_base_model)
    monkeypatch.setenv("HOUSECHAT_VAR_DIR", str(tmp_path / "var"))
    assert finetune_main(["categories", "--dry-run"]) == 0
    assert "every category has a code" in capsys.readouterr().out
    check = core.models.single_token_check(tmp_path / "var")  # asks nothing yet: loads nothing
    with pytest.raises(AssertionError, match="unpacked"):
        check("AA")
