"""The encoder's fine-tune objectives: SetFit pairs and supervised contrastive, beside the softmax head."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from intents import INTENTS  # six questions per intent; the fifth (index 4) is not used here

from core.schemas import RoutingExample


def examples() -> list[RoutingExample]:
    return [RoutingExample(question=q, category=c) for c, qs in INTENTS.items() for q in qs[:4]]


@pytest.fixture
def intent_files(tmp_path: Path) -> tuple[Path, Path]:
    """train.csv (4 per intent) and val.csv (1 per intent)."""
    files = []
    for name, rows in (("train", examples()), ("val", [RoutingExample(qs[5], c) for c, qs in INTENTS.items()])):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            writer.writerows((e.question, e.category) for e in rows)
        files.append(path)
    return files[0], files[1]


def test_setfit_pairs_give_every_question_r_positives_and_r_negatives() -> None:
    from finetune.encoder import sentence_pairs

    train = examples()
    pairs = sentence_pairs(train, 3, random.Random(0))
    assert len(pairs) == 2 * 3 * len(train)
    for i in range(len(train)):
        mine = [(j, y) for a, j, y in pairs if a == i]
        positives = [j for j, y in mine if y == 1.0]
        negatives = [j for j, y in mine if y == 0.0]
        assert len(positives) == len(negatives) == 3
        assert all(j != i and train[j].category == train[i].category for j in positives)
        assert all(train[j].category != train[i].category for j in negatives)
    assert sentence_pairs(train, 3, random.Random(0)) == pairs  # seeded


def test_supcon_loss_is_low_when_labels_cluster_and_high_when_they_do_not() -> None:
    import torch

    from finetune.encoder import supcon_loss

    gold = torch.tensor([0, 0, 1, 1])
    clustered = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.01], [1.0, -0.01], [0.01, 1.0], [-0.01, 1.0]]), dim=-1
    )
    mixed = clustered[[0, 2, 1, 3]]
    assert supcon_loss(clustered, gold) < 0.01 < 1.0 < supcon_loss(mixed, gold)
    # an anchor without a positive in the batch is skipped, not a NaN
    assert torch.isfinite(supcon_loss(clustered, torch.tensor([0, 0, 1, 2])))


def test_an_unknown_loss_or_no_pairs_is_a_usage_error(capsys) -> None:
    from finetune.cli import main

    assert main(["embedding", "--fine-tune-loss", "triplet"]) == 2
    assert "invalid choice: 'triplet'" in capsys.readouterr().err
    assert main(["embedding", "--fine-tune-loss", "pairs", "--fine-tune-pair-iterations", "0"]) == 2
    assert "--fine-tune-pair-iterations" in capsys.readouterr().err


@pytest.mark.slow  # fine-tunes MiniLM for a few steps per objective, fits and loads a head
@pytest.mark.parametrize(
    ("loss", "more", "steps"), [("pairs", ["--fine-tune-pair-iterations", "2"], 3), ("supcon", [], 1)]
)
def test_a_contrastive_fine_tune_changes_the_encoder_and_the_router_routes_with_it(
    intent_files,
    tmp_path,
    monkeypatch,
    loss,
    more,
    steps,
) -> None:
    from sentence_transformers import SentenceTransformer

    from core.categories import label_set_from_ids
    from core.models import minilm_path
    from finetune.cli import main as finetune_main
    from router.embedding import EmbeddingRouter

    train, val = intent_files
    monkeypatch.setenv("HOUSECHAT_VAR_DIR", str(tmp_path / "var"))
    out = tmp_path / loss
    command = ["embedding", "--train-file", str(train), "--val-file", str(val), "--labels-from-data"]
    command += ["--no-notes", "--no-vote", "--output-dir", str(out), "--fine-tune-epochs", "1"]
    assert finetune_main([*command, "--fine-tune-loss", loss, *more, "--refit-on-val"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    # pairs: 2 x R=2 x 12 questions = 48 pairs, 16 per step; supcon: 12 questions / 32 per batch = 1 step
    assert meta["encoder"]["loss"] == loss and meta["encoder"]["steps"] == steps
    assert meta["features"].startswith("fine-tuned MiniLM")
    question = ["my card still has not come"]
    stock = SentenceTransformer(str(minilm_path()), device="cpu").encode(question)
    tuned = SentenceTransformer(str(out / "encoder"), device="cpu").encode(question)
    assert abs(stock - tuned).max() > 1e-4  # the encoder's weights moved
    router = EmbeddingRouter.load(out, label_set_from_ids(sorted(INTENTS)))
    assert router.encoder == Path(out / "encoder")
    route = router.route(question[0])
    assert route.category in INTENTS and sum(route.scores.values()) == pytest.approx(1.0)
