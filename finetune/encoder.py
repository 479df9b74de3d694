"""Fine-tune MiniLM itself for the embedding router: a softmax head over the labels, trained end to end.

The frozen router only moves a linear head over fixed MiniLM vectors. Here MiniLM's weights learn
the labels too: normalised sentence embeddings (scaled, so the softmax can get sharp) feed a linear
layer, cross-entropy on the training questions, AdamW with linear warm-up and decay. The softmax
layer is thrown away afterwards; the encoder is saved (sentence-transformers format) inside the
router folder, and the usual logistic-regression head is fit on its vectors. Seeded, one pass over
shuffled batches per epoch.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.models import minilm_path, offline_env
from core.schemas import RoutingExample

ENCODER_DIR = "encoder"  # inside the router folder
SCALE = 20.0  # logits = head(SCALE * unit embedding): lets the softmax be confident on unit vectors
HEAD_LR = 1e-2  # the fresh softmax layer learns much faster than the pretrained encoder


def fine_tune_encoder(
    train: list[RoutingExample],
    labels: LabelSet,
    out_dir: Path,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 8e-5,
    seed: int = 0,
    log_every: int = 20,
) -> dict[str, Any]:
    """Train MiniLM + a softmax head on `train`; save the encoder to `out_dir`; return what was done."""
    offline_env()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    index = {c: i for i, c in enumerate(labels.ids)}
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    head = torch.nn.Linear(model.get_embedding_dimension() or 384, len(labels))
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": lr}, {"params": head.parameters(), "lr": HEAD_LR}], weight_decay=0.01
    )
    steps = max(1, round(epochs * len(train) / batch_size))
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / steps)
    )
    order: list[int] = []
    model.train()
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(train)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = [train[i] for i in order[:batch_size]], order[batch_size:]
        features = model.preprocess([e.question for e in batch])
        vectors = torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)
        gold = torch.tensor([index[e.category] for e in batch])
        loss = torch.nn.functional.cross_entropy(head(SCALE * vectors), gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            print(
                f"encoder step {step + 1}/{steps} loss {loss_value:.3f} ({elapsed / (step + 1):.2f} s/step)",
                file=sys.stderr,
                flush=True,
            )
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return {
        "base": "all-MiniLM-L6-v2",
        "objective": f"softmax over the labels on {SCALE:g} x unit embeddings, cross-entropy",
        "epochs": epochs,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr": HEAD_LR,
        "seed": seed,
        "final_loss": round(loss_value, 4),
        "train_s": round(time.perf_counter() - start, 1),
    }
