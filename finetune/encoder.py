"""Fine-tune MiniLM itself for the embedding router, with one of three objectives (`LOSSES`).

The frozen router only moves a linear head over fixed MiniLM vectors. Here MiniLM's weights learn
the labels too, then the usual logistic-regression head is fit on the new vectors (the training
objective's own head, if any, is thrown away). The objectives:

- `softmax`: normalised sentence embeddings (scaled, so the softmax can get sharp) feed a linear
  layer over the labels, cross-entropy; one step = `batch_size` shuffled questions.
- `pairs` (SetFit, Tunstall et al. 2022): for each of R iterations, every training question gets
  one positive partner (another question of its label) and one negative (a question of another
  label); MiniLM learns cosine(u, v) -> 1 / 0 (CosineSimilarityLoss: the mean squared error). One
  step = `batch_size // 2` pairs, so `batch_size` texts as in the other objectives; one epoch = one
  pass over the 2 x R x n pairs.
- `supcon`: supervised contrastive loss in the batch (Khosla et al. 2020): a batch holds
  `GROUP` questions of each of `batch_size // GROUP` labels, and every question is pulled towards
  the others of its label and pushed from the rest (softmax over scaled cosines). One epoch =
  n / `batch_size` steps, as with `softmax`.

AdamW with linear warm-up over 10% of the steps and linear decay; seeded. The encoder is saved
(sentence-transformers format) inside the router folder.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.models import minilm_path, offline_env
from core.schemas import RoutingExample

ENCODER_DIR = "encoder"  # inside the router folder
SCALE = 20.0  # logits = SCALE * cosine: lets a softmax be confident on unit vectors
HEAD_LR = 1e-2  # the fresh softmax layer learns much faster than the pretrained encoder
LOSSES = ("softmax", "pairs", "supcon")
# Each objective's encoder learning rate when none is given: SetFit's body default for pairs.
DEFAULT_LR = {"softmax": 8e-5, "pairs": 2e-5, "supcon": 5e-5}
PAIR_ITERATIONS = 20  # SetFit's default R
GROUP = 4  # supcon: questions per label in a batch


def sentence_pairs(train: list[RoutingExample], iterations: int, rng: random.Random) -> list[tuple[int, int, float]]:
    """SetFit's pairs: per iteration and question, one (question, same label, 1.0) and one (question, other label, 0.0).

    The positive partner is another question of the label when it has one; indexes into `train`.
    """
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(train):
        by_label[example.category].append(i)
    pairs: list[tuple[int, int, float]] = []
    for _ in range(iterations):
        for i, example in enumerate(train):
            same = [j for j in by_label[example.category] if j != i] or [i]
            pairs.append((i, rng.choice(same), 1.0))
            other = rng.randrange(len(train))
            while train[other].category == example.category and len(by_label) > 1:
                other = rng.randrange(len(train))
            pairs.append((i, other, 0.0))
    rng.shuffle(pairs)
    return pairs


def supcon_loss(vectors: Any, gold: Any) -> Any:
    """Supervised contrastive loss on unit `vectors` with integer labels `gold` (anchors without a positive skip)."""
    import torch

    n = len(gold)
    logits = SCALE * vectors @ vectors.T
    self_mask = torch.eye(n, dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (gold[:, None] == gold[None, :]) & ~self_mask
    count = positive.sum(dim=1)
    has = count > 0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)[has] / count[has]
    return -mean_log_prob.mean()


class _Batches:
    """An objective: how many steps, the next batch's texts + targets, and its loss on their unit vectors."""

    steps: int
    parameters: list[Any]  # beyond the encoder's (a fresh head), trained at HEAD_LR
    loss: Callable[[Any, Any], Any]

    def next(self) -> tuple[list[str], Any]:
        raise NotImplementedError


class _Softmax(_Batches):
    def __init__(
        self,
        train: list[RoutingExample],
        labels: LabelSet,
        dim: int,
        epochs: float,
        batch_size: int,
        rng: random.Random,
    ) -> None:
        import torch

        self.train, self.rng, self.batch_size = train, rng, batch_size
        self.index = {c: i for i, c in enumerate(labels.ids)}
        self.head = torch.nn.Linear(dim, len(labels))
        self.parameters = list(self.head.parameters())
        self.steps = max(1, round(epochs * len(train) / batch_size))
        self.order: list[int] = []
        self.loss = lambda vectors, gold: torch.nn.functional.cross_entropy(self.head(SCALE * vectors), gold)

    def next(self) -> tuple[list[str], Any]:
        import torch

        if len(self.order) < self.batch_size:
            fresh = list(range(len(self.train)))
            self.rng.shuffle(fresh)
            self.order += fresh
        batch, self.order = [self.train[i] for i in self.order[: self.batch_size]], self.order[self.batch_size :]
        return [e.question for e in batch], torch.tensor([self.index[e.category] for e in batch])


class _Pairs(_Batches):
    def __init__(
        self, train: list[RoutingExample], iterations: int, epochs: float, batch_size: int, rng: random.Random
    ) -> None:
        import torch

        self.train, self.rng = train, rng
        self.per_step = max(1, batch_size // 2)
        self.pairs = sentence_pairs(train, iterations, rng)
        self.steps = max(1, round(epochs * len(self.pairs) / self.per_step))
        self.parameters = []
        self.at = 0

        def loss(vectors: Any, target: Any) -> Any:
            half = len(target)
            cosine = (vectors[:half] * vectors[half:]).sum(dim=1)
            return torch.nn.functional.mse_loss(cosine, target)

        self.loss = loss

    def next(self) -> tuple[list[str], Any]:
        import torch

        if self.at + self.per_step > len(self.pairs):  # a new epoch: the same pairs, reshuffled
            self.rng.shuffle(self.pairs)
            self.at = 0
        batch = self.pairs[self.at : self.at + self.per_step]
        self.at += self.per_step
        texts = [self.train[i].question for i, _, _ in batch] + [self.train[j].question for _, j, _ in batch]
        return texts, torch.tensor([y for _, _, y in batch])


class _SupCon(_Batches):
    def __init__(
        self, train: list[RoutingExample], labels: LabelSet, epochs: float, batch_size: int, rng: random.Random
    ) -> None:
        self.train, self.rng = train, rng
        self.by_label: dict[str, list[int]] = defaultdict(list)
        for i, example in enumerate(train):
            self.by_label[example.category].append(i)
        self.index = {c: i for i, c in enumerate(labels.ids)}
        self.per_batch = max(1, min(batch_size // GROUP, len(self.by_label)))
        self.steps = max(1, round(epochs * len(train) / batch_size))
        self.parameters = []
        self.loss = supcon_loss
        self.label_order: list[str] = []

    def next(self) -> tuple[list[str], Any]:
        import torch

        if len(self.label_order) < self.per_batch:  # cycle through the labels so each gets its turn
            fresh = sorted(self.by_label)
            self.rng.shuffle(fresh)
            self.label_order += fresh
        chosen, self.label_order = self.label_order[: self.per_batch], self.label_order[self.per_batch :]
        batch = [i for c in chosen for i in self.rng.sample(self.by_label[c], min(GROUP, len(self.by_label[c])))]
        return [self.train[i].question for i in batch], torch.tensor(
            [self.index[self.train[i].category] for i in batch]
        )


def fine_tune_encoder(
    train: list[RoutingExample],
    labels: LabelSet,
    out_dir: Path,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    log_every: int = 20,
    loss: str = "softmax",
    pair_iterations: int = PAIR_ITERATIONS,
) -> dict[str, Any]:
    """Train MiniLM on `train` with the objective `loss` (see the module doc); save it to `out_dir`; return what was done.

    `lr` None = the objective's `DEFAULT_LR`; `pair_iterations` (R) only matters for `pairs`.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown fine-tune loss {loss!r}: one of {', '.join(LOSSES)}")
    offline_env()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    lr = DEFAULT_LR[loss] if lr is None else lr
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    dim = model.get_embedding_dimension() or 384
    batches: _Batches
    if loss == "softmax":
        batches = _Softmax(train, labels, dim, epochs, batch_size, rng)
    elif loss == "pairs":
        batches = _Pairs(train, pair_iterations, epochs, batch_size, rng)
    else:
        batches = _SupCon(train, labels, epochs, batch_size, rng)
    groups = [{"params": model.parameters(), "lr": lr}]
    if batches.parameters:
        groups.append({"params": batches.parameters, "lr": HEAD_LR})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = batches.steps
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / steps)
    )
    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(steps):
        texts, target = batches.next()
        vectors = torch.nn.functional.normalize(model(model.preprocess(texts))["sentence_embedding"], dim=-1)
        value = batches.loss(vectors, target)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(value.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            print(
                f"encoder step {step + 1}/{steps} {loss} loss {loss_value:.3f} ({elapsed / (step + 1):.2f} s/step)",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    objective = {
        "softmax": f"softmax over the labels on {SCALE:g} x unit embeddings, cross-entropy",
        "pairs": f"SetFit pairs: R = {pair_iterations} x (1 positive + 1 negative) per question, MSE of cosine vs 1/0",
        "supcon": f"supervised contrastive in batch ({GROUP} per label, {SCALE:g} x cosine)",
    }[loss]
    info: dict[str, Any] = {
        "base": "all-MiniLM-L6-v2",
        "loss": loss,
        "objective": objective,
        "epochs": epochs,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "final_loss": round(loss_value, 4),
        "train_s": round(time.perf_counter() - start, 1),
    }
    if loss == "softmax":
        info["head_lr"] = HEAD_LR
    if loss == "pairs":
        info["pair_iterations"] = pair_iterations
    return info
