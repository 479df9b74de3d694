"""Which routing levers pay? Every lever fit on train (+ notes, + extra questions), scored on val and test.

    python -m benchmarks.routing_levers --store var/store [--extra] [--household DIR --household-store DIR]

The store gives the retrieval vote: the categories of the top chunks of an unfiltered search,
weighted by score**power. Weights and C are chosen on val only; test is printed for the record.
MiniLM vectors are cached in var/cache/levers (keyed by the text) so reruns are quick.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from core.categories import load_categories
from core.schemas import RoutingExample, read_routing_examples
from core.settings import from_env


def cached_embed(texts: list[str], cache_dir: Path) -> Any:
    """MiniLM vectors of `texts`, cached on disk by their content."""
    import numpy as np

    from core.models import embed

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"{key}.npy"
    if path.exists():
        return np.load(path)
    x = embed(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def read_split(path: Path, known: set[str]) -> list[RoutingExample]:
    examples, errors = read_routing_examples(path, known=known)
    if errors:
        raise SystemExit(f"{path}: {len(errors)} bad lines")
    return examples


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from finetune.data import note_examples
    from router.embedding import char_vectorizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a store ingested from data/notes")
    parser.add_argument("--extra", action="store_true", help="add data/routing/extra/*.jsonl to train")
    parser.add_argument("--household", type=Path, default=None, help="also score data/households/NAME's questions")
    parser.add_argument("--household-store", type=Path, default=None, help="that household's ingested store")
    parser.add_argument("--chunks", action="store_true", help="learn the notes from the store's chunks, not paragraphs")
    parser.add_argument("--vote-grid", action="store_true", help="also tune the vote's k and power on val")
    parser.add_argument("--scopes", action="store_true", help="add each category's scope text as an example")
    parser.add_argument("--misses", action="store_true", help="list the val questions the best mix misroutes")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)

    settings = from_env(store=args.store)
    labels = load_categories(settings.categories_file)
    known = set(labels.ids)
    index = {c: i for i, c in enumerate(labels.ids)}
    data = settings.routing_data_dir
    train, val, test = (read_split(data / f"{s}.jsonl", known) for s in ("train", "val", "test"))
    notes, _ = note_examples(settings.notes_dir, labels)
    from core.store import open_store

    store = open_store(settings, create=False)
    vectors, metas, chunk_texts = store.chunk_vectors()
    if args.chunks:  # the store's chunks stand in for the notes' paragraphs
        notes = [RoutingExample(t, str(m.get("category"))) for t, m in zip(chunk_texts, metas, strict=True)]
    extra: list[RoutingExample] = []
    if args.extra:
        for path in sorted((data / "extra").glob("*.jsonl")):
            extra += read_split(path, known)
    scopes = [RoutingExample(question=f"{c.name}: {c.scope}", category=c.id) for c in labels.categories]
    fit_set = train + extra + notes + (scopes if args.scopes else [])
    cache = settings.var_dir / "cache" / "levers"
    emb = {
        name: cached_embed([e.question for e in xs], cache)
        for name, xs in (("fit", fit_set), ("val", val), ("test", test))
    }
    y = {
        name: np.array([index[e.category] for e in xs]) for name, xs in (("fit", fit_set), ("val", val), ("test", test))
    }
    print(
        f"fit {len(fit_set)} (train {len(train)}, extra {len(extra)}, notes {len(notes)}); val {len(val)}; test {len(test)}"
    )

    # The retrieval vote: chunk vectors and categories straight from the store.
    chunk_cat = np.array([index.get(str(m.get("category")), -1) for m in metas])

    def vote(x: Any, k: int = 10, power: float = 4.0) -> Any:
        sims = x @ vectors.T
        top = np.argsort(-sims, axis=1)[:, :k]
        out = np.full((len(x), len(labels)), 1e-3)
        for i, row in enumerate(top):
            for j in row:
                if chunk_cat[j] >= 0:
                    out[i, chunk_cat[j]] += max(sims[i, j], 0.0) ** power
        return out / out.sum(axis=1, keepdims=True)

    def acc(p: Any, split: str) -> float:
        return float((p.argmax(1) == y[split]).mean())

    rows: list[dict[str, Any]] = []

    def record(name: str, p_val: Any, p_test: Any, note: str = "") -> None:
        rows.append(
            {"lever": name, "val": round(acc(p_val, "val"), 4), "test": round(acc(p_test, "test"), 4), "note": note}
        )
        print(f"{name:<44} val {acc(p_val, 'val'):.3f}  test {acc(p_test, 'test'):.3f}  {note}", flush=True)

    for k, power in ((1, 1.0), (5, 4.0), (10, 4.0), (20, 4.0)):
        record(f"vote top-{k} score^{power:g}", vote(emb["val"], k, power), vote(emb["test"], k, power))

    chars = char_vectorizer().fit([e.question for e in fit_set])
    grams = {s: chars.transform([e.question for e in xs]) for s, xs in (("fit", fit_set), ("val", val), ("test", test))}
    best: tuple[float, Any] = (-1.0, None)
    for weight in (0.0, 1.0, 2.0, 3.0):
        feats = {s: sp.hstack([sp.csr_matrix(emb[s]), weight * grams[s]]).tocsr() if weight else emb[s] for s in emb}
        for c in (4.0, 16.0, 64.0):
            start = time.perf_counter()
            clf = LogisticRegression(C=c, max_iter=3000).fit(feats["fit"], y["fit"])
            p_val, p_test = clf.predict_proba(feats["val"]), clf.predict_proba(feats["test"])
            record(f"head w={weight:g} C={c:g}", p_val, p_test, f"fit {time.perf_counter() - start:.0f} s")
            if acc(p_val, "val") > best[0]:
                best = (acc(p_val, "val"), (weight, c, p_val, p_test, feats["fit"]))
    weight, c, p_val, p_test, best_feats = best[1]
    v_val, v_test = vote(emb["val"]), vote(emb["test"])
    best_mix = max((acc(np.log(p_val) + m * np.log(v_val), "val"), m) for m in np.arange(0.0, 2.01, 0.1))
    m = best_mix[1]
    record(
        f"best head (w={weight:g}, C={c:g}) + vote x{m:.1f}",
        np.log(p_val) + m * np.log(v_val),
        np.log(p_test) + m * np.log(v_test),
        "mix weight on val",
    )
    if args.vote_grid:  # the vote's own shape (k, power) with its weight, all on val
        for k in (1, 3, 5, 10, 20):
            for power in (1.0, 4.0, 8.0):
                vv, vt = vote(emb["val"], k, power), vote(emb["test"], k, power)
                score, mm = max((acc(np.log(p_val) + w * np.log(vv), "val"), w) for w in np.arange(0.0, 3.01, 0.1))
                record(
                    f"head + vote top-{k} score^{power:g} x{mm:.1f}",
                    np.log(p_val) + mm * np.log(vv),
                    np.log(p_test) + mm * np.log(vt),
                    "weight on val",
                )
    if args.household is not None:  # an unseen household: its questions, the vote from its own store
        from core.schemas import read_qa

        home = args.household
        asked = read_split(home / "routing.jsonl", known)
        asked += [RoutingExample(q.question, q.category) for q in read_qa(home / "qa.jsonl", known)[0]]
        x_h = cached_embed([e.question for e in asked], cache)
        y_h = np.array([index[e.category] for e in asked])
        h_feats = sp.hstack([sp.csr_matrix(x_h), weight * chars.transform([e.question for e in asked])]).tocsr()
        p_h = LogisticRegression(C=c, max_iter=3000).fit(best_feats, y["fit"]).predict_proba(h_feats)
        h_store = open_store(from_env(store=args.household_store), create=False)
        vectors, metas, texts = h_store.chunk_vectors()
        chunk_cat = np.array([index.get(str(m.get("category")), -1) for m in metas])
        v_h = vote(x_h)
        # Adapted: the head refit on the questions + this store's chunks (stored vectors, no re-embedding).
        n_q = len(train) + len(extra)
        a_x = sp.vstack(
            [best_feats[:n_q], sp.hstack([sp.csr_matrix(vectors), weight * chars.transform(texts)])]
        ).tocsr()
        a_y = np.concatenate([y["fit"][:n_q], chunk_cat])
        start = time.perf_counter()
        p_a = LogisticRegression(C=c, max_iter=3000).fit(a_x[a_y >= 0], a_y[a_y >= 0]).predict_proba(h_feats)
        fit_s = time.perf_counter() - start
        print(
            f"household {home.name}: adapted head {float((p_a.argmax(1) == y_h).mean()):.3f}, "
            f"adapted + vote x{m:.1f} {float(((np.log(p_a) + m * np.log(v_h)).argmax(1) == y_h).mean()):.3f} "
            f"(refit {fit_s:.1f} s on {a_x.shape[0]} rows)"
        )
        print(
            f"household {home.name} ({len(asked)} questions): head {float((p_h.argmax(1) == y_h).mean()):.3f}, "
            f"vote alone {float((v_h.argmax(1) == y_h).mean()):.3f}, "
            f"head + vote x{m:.1f} {float(((np.log(p_h) + m * np.log(v_h)).argmax(1) == y_h).mean()):.3f}"
        )
    if args.misses:
        final = (np.log(p_val) + m * np.log(v_val)).argmax(1)
        for e, guess in zip(val, final, strict=True):
            if labels.ids[guess] != e.category:
                print(f"  val miss: {e.question!r} gold {e.category} -> {labels.ids[guess]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
