"""Any labelled file trains the embedding router, and `eval routing` scores it in its own folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from intents import INTENTS


def write_split(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


@pytest.fixture
def intent_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    train = [(q, c) for c, qs in INTENTS.items() for q in qs[:4]]
    val = [(q, c) for c, qs in INTENTS.items() for q in qs[4:5]]
    test = [(q, c) for c, qs in INTENTS.items() for q in qs[5:]]
    return (
        write_split(tmp_path / "train.csv", train),
        write_split(tmp_path / "val.csv", val),
        write_split(tmp_path / "test.csv", test),
    )


def test_train_file_needs_a_val_file_and_an_output_dir(intent_files, tmp_path, capsys) -> None:
    from finetune.cli import main

    train, val, _ = intent_files
    assert main(["embedding", "--train-file", str(train), "--labels-from-data", "--no-vote"]) == 1
    assert "--train-file needs --val-file" in capsys.readouterr().err
    assert main(["embedding", "--train-file", str(train), "--val-file", str(val), "--no-vote"]) == 1
    assert "--train-file needs --output-dir" in capsys.readouterr().err
    assert main(["embedding", "--val-file", str(val), "--no-vote"]) == 1
    assert "go with --train-file" in capsys.readouterr().err


def test_train_file_labels_are_checked_against_the_categories_file(intent_files, tmp_path, capsys) -> None:
    from finetune.cli import main

    train, val, _ = intent_files
    args = ["embedding", "--train-file", str(train), "--val-file", str(val), "--no-vote", "--no-notes"]
    assert main([*args, "--output-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{train}:2: unknown category 'card_arrival'" in err and "no usable examples" in err
    assert not (tmp_path / "r").exists()


def test_fine_tuning_the_encoder_needs_no_vote(intent_files, tmp_path, capsys) -> None:
    from finetune.cli import main

    train, val, _ = intent_files
    args = ["embedding", "--train-file", str(train), "--val-file", str(val), "--labels-from-data", "--no-notes"]
    assert main([*args, "--output-dir", str(tmp_path / "r"), "--fine-tune-epochs", "1"]) == 1
    assert "--fine-tune-epochs needs --no-vote" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # fine-tunes MiniLM for a few steps, fits and scores a head
def test_a_fine_tuned_encoder_is_saved_with_the_router_and_used_to_route(
    intent_files, tmp_path, monkeypatch, capsys
) -> None:
    import numpy as np

    from core.categories import label_set_from_ids
    from core.errors import HousechatError
    from eval.cli import main as eval_main
    from finetune.cli import main as finetune_main
    from router.adapt import adapt
    from router.embedding import EmbeddingRouter

    train, val, test = intent_files
    var = tmp_path / "var"
    monkeypatch.setenv("HOUSECHAT_VAR_DIR", str(var))
    out = tmp_path / "tuned"
    command = ["embedding", "--train-file", str(train), "--val-file", str(val), "--labels-from-data"]
    command += ["--no-notes", "--no-vote", "--output-dir", str(out), "--fine-tune-epochs", "6"]
    assert finetune_main([*command, "--refit-on-val", "--word-ngrams"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    # 6 epochs x 12 questions / 32 per batch = 2 steps
    assert meta["encoder"]["dir"] == "encoder" and meta["encoder"]["steps"] == 2
    assert meta["features"].startswith("fine-tuned MiniLM") and meta["refit_on_val"] is True
    assert (out / "encoder" / "model.safetensors").exists()
    caches = sorted(p.name for p in (var / "embed-cache").iterdir())
    assert caches == [f"encoder-{meta['encoder']['sha256']}.npz"]  # never mixed into MiniLM's cache
    labels = label_set_from_ids(sorted(INTENTS))
    router = EmbeddingRouter.load(out, labels)
    assert router.encoder == out / "encoder"
    question = "my card still has not come"
    # The app hands over the stock MiniLM vector; a fine-tuned router embeds with its own encoder instead.
    assert router.route_vector(question, np.zeros(384)).scores == pytest.approx(router.route(question).scores)
    with pytest.raises(HousechatError, match="fine-tuned"):
        adapt(out, object(), labels, tmp_path / "adapted")  # type: ignore[arg-type]
    capsys.readouterr()
    score = ["routing", "--test-file", str(test), "--backends", "embedding", "--embedding-dir", str(out)]
    assert eval_main([*score, "--report", str(tmp_path / "reports"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and summary["backends"]["embedding"]["accuracy"] >= 2 / 3


@pytest.mark.slow  # fits and scores a MiniLM head
def test_any_labelled_file_trains_a_router_that_eval_scores_in_its_own_folder(
    intent_files, tmp_path, monkeypatch, capsys, write_note
) -> None:
    from eval.cli import main as eval_main
    from finetune.cli import main as finetune_main
    from ingest.cli import main as ingest_main

    train, val, test = intent_files
    var = tmp_path / "var"
    monkeypatch.setenv("HOUSECHAT_VAR_DIR", str(var))
    # A household store exists: the intent router must neither vote with it nor adapt to it.
    notes = tmp_path / "notes"
    write_note(notes, "pool-pump", "pool", "The pool pump runs from 9 to 5 and was serviced in May.")
    assert ingest_main(["--store", str(var / "store"), str(notes)]) == 0
    out = tmp_path / "intents-router"
    command = ["embedding", "--train-file", str(train), "--val-file", str(val), "--labels-from-data"]
    assert finetune_main([*command, "--no-notes", "--no-vote", "--output-dir", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [c["id"] for c in meta["categories"]] == sorted(INTENTS)
    assert meta["train_file"] == str(train) and meta["labels_from"] == "data" and meta["store"] is None
    assert (var / "embed-cache" / "minilm.npz").exists()
    capsys.readouterr()
    score = ["routing", "--test-file", str(test), "--backends", "embedding", "--embedding-dir", str(out)]
    assert eval_main([*score, "--report", str(tmp_path / "reports"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and summary["backends"]["embedding"]["accuracy"] >= 2 / 3
    assert not (var / "router-adapted").exists()  # the household's adapted heads are untouched


@pytest.mark.slow  # loads MiniLM
def test_embed_cached_returns_the_same_vectors_and_embeds_each_text_once(tmp_path, monkeypatch) -> None:
    import numpy as np

    from core import models

    cache = tmp_path / "cache.npz"
    first = models.embed_cached(["a card question", "a pool question"], cache)
    calls: list[list[str]] = []
    real = models.embed
    monkeypatch.setattr(models, "embed", lambda texts, encoder=None: calls.append(texts) or real(texts))
    again = models.embed_cached(["a pool question", "a new one", "a card question"], cache)
    assert calls == [["a new one"]]
    assert np.allclose(again[0], first[1]) and np.allclose(again[2], first[0])
    assert np.allclose(again[1], real(["a new one"])[0], atol=1e-6)


TINY_RECIPE = (
    "base_model: tiny:qwen3\nlabel_format: codes\nengine: trl\nlora_r: 4\nlora_alpha: 8\nmax_steps: 2\nbatch_size: 4\n"
)


def test_llm_recipe_takes_a_labelled_file_with_its_own_labels(intent_files, tmp_path, capsys) -> None:
    from finetune.cli import main

    train, val, _ = intent_files
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    files = ["--train-file", str(train), "--val-file", str(val)]
    assert main([str(recipe), *files, "--labels-from-data", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["labels"], plan["train_examples"], plan["val_examples"]) == (3, 12, 3)
    # Without --labels-from-data the labels must be the categories file's ids.
    assert main([str(recipe), *files, "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert f"{train}:2: unknown category 'card_arrival'" in err and "no usable examples" in err
    assert main([str(recipe), "--train-file", str(train), "--labels-from-data", "--dry-run"]) == 1
    assert "--train-file needs --val-file" in capsys.readouterr().err
    # The household's llm router is never replaced by one on another label set.
    assert main([str(recipe), *files, "--labels-from-data", "--install"]) == 1
    assert "--install makes the adapter the household's llm router" in capsys.readouterr().err


@pytest.mark.slow  # trains a tiny Qwen3 for 2 steps and scores it
def test_any_labelled_file_trains_an_llm_router_that_eval_scores_in_its_own_folder(
    intent_files, tmp_path, capsys
) -> None:
    from eval.cli import main as eval_main
    from finetune.cli import main as finetune_main
    from finetune.train import single_token_for

    train, val, test = intent_files
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    out = tmp_path / "intents-llm"
    command = [str(recipe), "--train-file", str(train), "--val-file", str(val), "--labels-from-data"]
    assert finetune_main([*command, "--output-dir", str(out), "--threads", "1"]) == 0
    meta = json.loads((out / "adapter" / "meta.json").read_text())
    assert [c["id"] for c in meta["categories"]] == sorted(INTENTS)
    one_token = single_token_for("tiny:qwen3", Path(__file__).resolve().parent.parent / "var")
    assert all(one_token(c["code"]) for c in meta["categories"])
    assert meta["recipe"]["labels_from_data"] and meta["recipe"]["train_file"] == str(train)
    capsys.readouterr()
    score = ["routing", "--test-file", str(test), "--backends", "llm", "--model", str(out / "adapter")]
    assert eval_main([*score, "--report", str(tmp_path / "reports"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 3 and set(summary["backends"]) == {"llm"}  # a 2-step random model: no accuracy bar
    assert summary["backends"]["llm"]["invalid_rate"] == 0.0


def test_label_names_give_each_category_one_example_of_its_name_and_scope() -> None:
    from core.categories import Category, LabelSet, label_set_from_ids
    from finetune.data import label_examples

    household = LabelSet(
        (
            Category("solar", "AA", "Solar panels", "The roof panels, the inverter and the feed-in meter."),
            Category("pool", "AB", "Pool & spa", ""),
        )
    )
    examples = label_examples(household)
    assert [(e.question, e.category) for e in examples] == [
        ("Solar panels: The roof panels, the inverter and the feed-in meter.", "solar"),
        ("Pool & spa", "pool"),
    ]
    # A data set's own labels: the name is the id, read as words, said once (not "name: name").
    from_data = label_examples(label_set_from_ids(["card_arrival", "top_up_failed"]))
    assert [e.question for e in from_data] == ["card arrival", "top up failed"]


@pytest.mark.slow  # fits a MiniLM head
def test_label_names_join_the_training_questions(intent_files, tmp_path, monkeypatch, capsys) -> None:
    from finetune.cli import main as finetune_main

    train, val, _ = intent_files
    monkeypatch.setenv("HOUSECHAT_VAR_DIR", str(tmp_path / "var"))
    command = ["embedding", "--train-file", str(train), "--val-file", str(val), "--labels-from-data"]
    command += ["--no-notes", "--no-vote"]
    assert finetune_main([*command, "--output-dir", str(tmp_path / "plain")]) == 0
    assert finetune_main([*command, "--label-names", "--output-dir", str(tmp_path / "named")]) == 0
    assert "3 category names join train" in capsys.readouterr().out
    plain = json.loads((tmp_path / "plain" / "meta.json").read_text())
    named = json.loads((tmp_path / "named" / "meta.json").read_text())
    assert named["label_names"] == 3 and "label_names" not in plain
    assert named["metrics"]["n_train"] == plain["metrics"]["n_train"] + 3
    assert named["data_hash"].endswith("+label-names")
    # The paired benchmark scores both routers on one file and the difference between them.
    from benchmarks.routing_paired import main as paired_main

    _, _, test = intent_files
    argv = ["routing_paired", "--test-file", str(test), str(tmp_path / "plain"), str(tmp_path / "named")]
    monkeypatch.setattr("sys.argv", argv)
    paired_main()
    out = capsys.readouterr().out
    assert "(n = 3)" in out and "B - A:" in out and "paired bootstrap" in out
