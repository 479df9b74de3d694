"""Fine-tune MiniLM itself for routing: a softmax classification head trained end to end with the encoder.

The frozen-MiniLM head only moves a hyperplane; here the encoder learns which words separate
"pool heater" from "water heater". The result is saved as a sentence-transformers folder, so
the embedding router can use it in place of the embedded MiniLM (its meta names the folder).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from core.schemas import RoutingExample

SCALE = 20.0  # cosine logits need a temperature; 20 is the usual one for normalised embeddings


def fine_tune_minilm(
    examples: list[RoutingExample],
    labels: list[str],
    out_dir: Path,
    epochs: int = 2,
    lr: float = 5e-5,
    batch_size: int = 32,
    max_length: int = 96,
    seed: int = 13,
    log: Any = print,
) -> Path:
    """Train MiniLM + a cosine classifier on `examples`; save the encoder to `out_dir`."""
    import torch
    from sentence_transformers import SentenceTransformer

    from core.models import minilm_path, offline_env

    offline_env()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = max_length
    index = {c: i for i, c in enumerate(labels)}
    # The head starts at each class's mean embedding, so step 0 is already a sensible classifier.
    with torch.no_grad():
        base = model.encode(
            [e.question for e in examples], batch_size=64, convert_to_tensor=True, normalize_embeddings=True
        )
        y_all = torch.tensor([index[e.category] for e in examples])
        centroids = torch.stack(
            [base[y_all == i].mean(0) if (y_all == i).any() else torch.zeros(base.shape[1]) for i in range(len(labels))]
        )
    head = torch.nn.Parameter(torch.nn.functional.normalize(centroids, dim=1))
    optimizer = torch.optim.AdamW([{"params": model.parameters(), "lr": lr}, {"params": [head], "lr": 1e-3}])
    order = list(range(len(examples)))
    steps = epochs * ((len(order) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    model.train()
    step, start = 0, time.perf_counter()
    for epoch in range(epochs):
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[b : b + batch_size]]
            features = model.tokenize([e.question for e in batch])
            emb = model(features)["sentence_embedding"]
            emb = torch.nn.functional.normalize(emb, dim=1)
            logits = SCALE * emb @ torch.nn.functional.normalize(head, dim=1).T
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([index[e.category] for e in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 20 == 0 or step == steps:
                log(
                    f"minilm: epoch {epoch + 1} step {step}/{steps} loss {loss.item():.3f} "
                    f"({time.perf_counter() - start:.0f} s)"
                )
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return out_dir
