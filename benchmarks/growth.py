"""Router off vs on as the store fills up with manuals (numbers, not tests).

    OMP_NUM_THREADS=1 nice .venv/bin/python -m benchmarks.growth --sizes 1000,10000

Ingests data/notes into a fresh store under `--work` (default var/growth), then adds generated
manual-like distractor chunks (benchmarks/distractors.py: 20 categories, deterministic from
`--seed`, none containing a QA keyword) in steps up to each size, and at each size scores the
QA split (default test) with the router off and the hard, soft and lift filters: hit@3 over the
answerable questions, category precision (share of retrieved chunks in the gold category) over
all, routing accuracy, and the paired bootstrap interval of on − off hit@3. `--oracle` scores
each filter again routed by the gold category: what a perfect router would gain.

Any household runs the same way: `--notes DIR --qa-file FILE` (Vossberg's file has no halves:
`--split all`). Distractor embeddings are cached in `--work` by their text and the encoder, so a
second run embeds nothing and another household's run embeds only the paragraphs its own QA
keywords changed; embedding runs ~20-30 chunks/s per core here. `--pool A.json B.json ...` adds
up runs written with `--json` (one per household) size by size, with the paired bootstrap over all
their questions. The router is the configured
backend (default `embedding`), which adapts to the store it serves, distractors included, as it
would for a user who ingested those manuals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.pipeline import plan_and_retrieve
from benchmarks.distractors import GENERATOR_VERSION, Distractor, distractors
from core.categories import load_categories
from core.retrieval import retrieve
from core.schemas import read_qa
from core.settings import from_env
from core.store import NoteEntry, NoteStore, NoteVersion, open_store
from eval import metrics
from router.base import Route

ARMS = ("off", "hard", "soft", "lift")
EMBED_BATCH = 256


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.growth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="distractor chunks added, comma-separated")
    parser.add_argument("--seed", type=int, default=7, help="distractor text seed")
    parser.add_argument("--split", default="test", choices=["dev", "test", "all"], help="QA half to score")
    parser.add_argument("--k", type=int, default=5, help="chunks retrieved per question")
    parser.add_argument("--backend", default=None, help="router backend for hard/soft (default: settings)")
    parser.add_argument("--hybrid", choices=["on", "off"], help="BM25 hybrid (default: settings)")
    parser.add_argument(
        "--boosts",
        default="",
        help="more soft-filter boosts to score beside the router's own, comma-separated (e.g. 0.35,0.5)",
    )
    parser.add_argument(
        "--open-notes",
        default="",
        help="more soft-filter settings of how many first notes may come from any category, comma-separated "
        "(e.g. 0 for every place, the filter before router.policy.SOFT_OPEN_NOTES)",
    )
    parser.add_argument(
        "--lift-open",
        default="",
        help="more lift-filter settings of how many first unfiltered notes keep their places, comma-separated "
        "(router.policy.LIFT_OPEN_NOTES is scored anyway)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also score each filter routed by the gold category (a perfect router: the most any router can gain)",
    )
    parser.add_argument("--notes", type=Path, help="the household's notes folder (default data/notes)")
    parser.add_argument("--qa-file", type=Path, help="the household's QA file (default data/eval/qa.jsonl)")
    parser.add_argument("--work", type=Path, help="store and embedding cache folder (default var/growth)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--pool",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="print the table of these --json runs added up size by size (runs nothing else)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.pool:
        print(markdown(pool([json.loads(path.read_text()) for path in args.pool], args.pool)))
        return 0
    base = from_env()
    work = args.work or base.var_dir / "growth"
    household = {"notes_dir": args.notes, "qa_file": args.qa_file}
    # Another household's store and adapted router sit in their own folder, so runs can go side by side;
    # the embedding cache in `work` is shared.
    run_dir = work / args.notes.resolve().parent.name if args.notes else work
    settings = from_env(
        store=run_dir / "store", collection="growth", var_dir=run_dir / "var",
        **{key: value for key, value in household.items() if value is not None},
    )  # fmt: skip
    hybrid = base.hybrid if args.hybrid is None else args.hybrid == "on"
    backend = args.backend or base.router_backend
    sizes = sorted(int(s) for s in args.sizes.split(","))
    boosts = [float(b) for b in args.boosts.split(",") if b.strip()]
    opens = [int(n) for n in args.open_notes.split(",") if n.strip()]
    lifts = [int(n) for n in args.lift_open.split(",") if n.strip()]
    labels = load_categories(settings.categories_file)
    items, errors = read_qa(settings.qa_file, known=set(labels.ids))
    if errors:
        print(f"{settings.qa_file}: {len(errors)} bad lines", file=sys.stderr)
    keywords = [k for item in items for k in item.keywords]
    if args.split != "all":
        items = [item for item in items if item.split == args.split]
    if not items:
        print(f"{settings.qa_file} has no {args.split} questions (a file without halves: --split all)", file=sys.stderr)
        return 2

    store = _fresh_store(settings, labels)
    note_chunks = store.counts()[1]
    texts = list(distractors(sizes[-1], args.seed, keywords))
    vectors = _distractor_vectors(work, args.seed, texts)

    from router.registry import load_router

    loaded = load_router(backend, settings)
    rows = []
    added = 0
    for size in sizes:
        _add(store, texts[added:size], vectors[added:size])
        added = size
        start = time.perf_counter()
        routes = loaded.router.route_batch([item.question for item in items])  # adapts to the store first
        route_s = time.perf_counter() - start
        row = _score(store, items, routes, loaded.policy, args.k, hybrid, boosts, opens, lifts, args.oracle)
        row.update(distractors=size, chunks=store.counts()[1], note_chunks=note_chunks, route_s=round(route_s, 1))
        rows.append(row)
        print(_row_line(row), file=sys.stderr)
    command = "python -m benchmarks.growth " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command,
        "notes": str(settings.notes_dir),
        "qa_file": str(settings.qa_file),
        "backend": backend,
        "hybrid": hybrid,
        "boost": loaded.policy.boost,
        "open_notes": loaded.policy.open_notes,
        "lift_open": loaded.policy.lift_open,
        "k": args.k,
        "split": args.split,
        "n": len(items),
        "answerable": sum(i.answerable for i in items),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return 0


def _fresh_store(settings: Any, labels: Any) -> NoteStore:
    """A new store holding data/notes (the router's adapted heads for it are cleared too)."""
    from ingest.pipeline import sync

    shutil.rmtree(settings.store, ignore_errors=True)
    shutil.rmtree(settings.var_dir / "router-adapted", ignore_errors=True)
    store = open_store(settings)
    summary = sync([settings.notes_dir], store, labels, settings.home)
    print(f"ingested {len(summary.added)} notes, {store.counts()[1]} chunks into {settings.store}", file=sys.stderr)
    return store


def _distractor_vectors(work: Path, seed: int, texts: list[Distractor]) -> Any:
    """MiniLM vectors of `texts`, from the cache, embedding (and caching) the paragraphs it lacks.

    The cache maps each indexed text's sha1 to its vector, so households whose QA keywords redraw a
    few paragraphs share the rest."""
    from core.models import embed
    from core.settings import from_env

    # Keyed on the encoder too: a store refuses vectors of another encoder, and so must the cache.
    path = work / f"distractors-seed{seed}-v{GENERATOR_VERSION}-{from_env().encoder}.npz"
    keys = [hashlib.sha1(_indexed(d).encode()).hexdigest() for d in texts]
    known: dict[str, Any] = {}
    if path.exists():
        with np.load(path) as cached:
            known = dict(zip(cached["keys"].tolist(), cached["vectors"], strict=True))
    missing = list({key: i for i, key in enumerate(keys) if key not in known}.values())  # each text once
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for done in range(0, len(missing), EMBED_BATCH):
        batch = missing[done : done + EMBED_BATCH]
        vectors = np.asarray(embed([_indexed(texts[i]) for i in batch]), dtype=np.float32)
        known.update(zip((keys[i] for i in batch), vectors, strict=True))
        if (done // EMBED_BATCH) % 8 == 7 or done + EMBED_BATCH >= len(missing):  # resumable: a killed run keeps most
            tmp = path.with_suffix(f".{os.getpid()}.npz")
            np.savez(tmp, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
            tmp.replace(path)
        rate = (done + len(batch)) / (time.perf_counter() - start)
        print(f"embedded {done + len(batch)}/{len(missing)} distractors ({rate:.0f} chunks/s)", file=sys.stderr)
    return np.stack([known[key] for key in keys]) if keys else np.zeros((0, 384), dtype=np.float32)


def _indexed(d: Distractor) -> str:
    from core.store import indexed_text

    return indexed_text(d.title, d.text)


def _add(store: NoteStore, chunks: list[Distractor], vectors: Any) -> None:
    """Write distractor chunks as notes (consecutive chunks of one manual form one note)."""
    by_note: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(chunks):
        by_note[d.note_id].append(i)
    live = store.note_hashes()
    versions = []
    for note_id, idx in by_note.items():
        first = chunks[idx[0]]
        digest = f"g{len(idx)}-{live.get(note_id, 'new')[:6]}"  # a manual that grows gets a new version
        old = [h.text for h in store.documents({"note_id": note_id})] if note_id in live else []
        old_vectors = store.embed(old) if old else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        texts = old + [chunks[i].text for i in idx]
        embs = np.concatenate([old_vectors, vectors[idx]])
        entry = NoteEntry(note_id, digest, f"manuals/{note_id}.md", first.category, first.title, len(texts))
        metas = [
            {"note_id": note_id, "category": first.category, "title": first.title, "date": "",
             "path": entry.path, "chunk": j, "heading": "", "line": 1, "hash": digest}
            for j in range(len(texts))
        ]  # fmt: skip
        versions.append(NoteVersion(entry, texts, metas, embs))
    for start in range(0, len(versions), 200):
        store.write_notes(versions[start : start + 200])


def _score(
    store: NoteStore,
    items: list[Any],
    routes: list[Any],
    policy: Any,
    k: int,
    hybrid: bool,
    boosts: Sequence[float] = (),
    opens: Sequence[int] = (),
    lifts: Sequence[int] = (),
    oracle: bool = False,
) -> dict[str, Any]:
    """hit@3, category precision, routing accuracy and on − off per arm at the store's current size.

    Each of `boosts` adds a soft arm "soft boost <b>", each of `opens` a soft arm "soft open <n>"
    (that many first notes from any category), each of `lifts` a lift arm "lift open <n>", beside
    the policy's own. `oracle` adds "oracle <mode>" for each filter, routed by the gold category."""
    variants = {f"soft boost {b:g}": policy.with_mode("soft", boost=b) for b in boosts}
    variants |= {f"soft open {n}": policy.with_mode("soft", open_notes=n) for n in opens}
    variants |= {f"lift open {n}": replace(policy.with_mode("lift"), lift_open=n) for n in lifts}
    if oracle:
        variants |= {f"oracle {mode}": policy.with_mode(mode) for mode in ARMS[1:]}
    arms = [*ARMS, *variants]
    hits: dict[str, list[float]] = {arm: [] for arm in arms}
    precision: dict[str, list[float]] = {arm: [] for arm in arms}
    widened = 0
    for item, route in zip(items, routes, strict=True):
        for arm in arms:
            if arm == "off":
                found = retrieve(store, item.question, k, hybrid=hybrid)
            else:
                arm_policy = variants[arm] if arm in variants else policy.with_mode(arm)
                arm_route = _gold_route(item.category) if arm.startswith("oracle ") else route
                _, found = plan_and_retrieve(store, item.question, arm_route, arm_policy, k, hybrid)  # as the app does
                widened += arm == "hard" and found.widened
            in_gold = [c.category == item.category for c in found.chunks]
            precision[arm].append(sum(in_gold) / len(in_gold) if in_gold else 0.0)
            if item.answerable:
                hits[arm].append(metrics.hit_at_k(found.note_ids, item.gold_note_ids, 3))
    routed = [float(r.category == i.category) for r, i in zip(routes, items, strict=True)]
    return _summary(routed, hits, precision, widened)


def _gold_route(category: str) -> Route:
    """A perfect router's route: all its probability on the gold category."""
    return Route(category, None, 1.0, {category: 1.0}, "oracle")


def _summary(
    routed: list[float], hits: dict[str, list[float]], precision: dict[str, list[float]], widened: int
) -> dict[str, Any]:
    """A size's row from its per-question results (kept in the row, so runs can be pooled)."""
    arms = list(hits)
    return {
        "routing_accuracy": round(float(np.mean(routed)), 4),
        "hard_widened": widened,
        "arms": {
            arm: {
                "hit_at_3": round(float(np.mean(hits[arm])), 4),
                "category_precision": round(float(np.mean(precision[arm])), 4),
            }
            for arm in arms
        },
        "on_minus_off": {arm: metrics.paired_bootstrap(hits["off"], hits[arm]) for arm in arms if arm != "off"},
        "per_question": {"routed": routed, "hits": hits, "precision": precision},
    }


def pool(results: list[dict[str, Any]], paths: Sequence[Path] = ()) -> dict[str, Any]:
    """Runs of several households added up at each distractor count they all have (paired bootstrap over all)."""
    by_size = [{row["distractors"]: row for row in result["rows"]} for result in results]
    sizes = sorted(set.intersection(*(set(rows) for rows in by_size)))
    if not sizes:
        raise ValueError("the runs share no distractor count: run them with the same --sizes")
    pooled = []
    for size in sizes:
        rows = [run_rows[size] for run_rows in by_size]
        arms = [arm for arm in rows[0]["arms"] if all(arm in row["arms"] for row in rows)]
        qs = [row["per_question"] for row in rows]
        row = _summary(
            [x for q in qs for x in q["routed"]],
            {arm: [x for q in qs for x in q["hits"][arm]] for arm in arms},
            {arm: [x for q in qs for x in q["precision"][arm]] for arm in arms},
            sum(row["hard_widened"] for row in rows),
        )
        row.update(
            distractors=size, chunks=max(r["chunks"] for r in rows), note_chunks=sum(r["note_chunks"] for r in rows)
        )
        pooled.append(row)
    first = results[0]
    return {
        **{key: first.get(key) for key in ("backend", "hybrid", "boost", "open_notes", "k")},
        "command": "python -m benchmarks.growth --pool " + " ".join(str(p) for p in paths),
        "split": " + ".join(f"{Path(r.get('qa_file', 'qa')).parent.name}:{r['split']}" for r in results),
        "n": sum(r["n"] for r in results),
        "answerable": sum(r["answerable"] for r in results),
        "load_average": first["load_average"],
        "rows": pooled,
    }


def _row_line(row: dict[str, Any]) -> str:
    arms = ", ".join(f"{a} {v['hit_at_3']:.3f}/{v['category_precision']:.3f}" for a, v in row["arms"].items())
    return f"+{row['distractors']} distractors ({row['chunks']} chunks): hit@3/cat.prec. {arms}"


def _halves(split: str) -> str:
    """ "test half", "whole file", or a pooled run's own list ("eval:test + vossberg:all")."""
    return {"all": "whole file", "dev": "dev half", "test": "test half"}.get(split, split)


def _interval(diff: dict[str, float]) -> str:
    """A paired difference and its bootstrap interval: "+0.010 (-0.021 … +0.052)"."""
    return f"{diff['mean']:+.3f} ({diff['lo']:+.3f} … {diff['hi']:+.3f})"


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    modes = [arm for arm in ARMS[1:] if rows and all(arm in row["arms"] for row in rows)]  # older runs lack lift
    lines = [
        f"`{result['command']}` — router `{result['backend']}`, hybrid {'on' if result['hybrid'] else 'off'}, "
        f"soft boost {result.get('boost')}, soft open notes {result.get('open_notes')}, "
        f"lift open notes {result.get('lift_open', 0)}, "
        f"k = {result['k']}, QA {_halves(result['split'])} ({result['n']} questions, {result['answerable']} answerable), "
        f"load average at the end {' / '.join(str(x) for x in result['load_average'])}",
        "",
        "| distractors | chunks | routing acc. | hit@3 off | "
        + " | ".join(f"hit@3 {m}" for m in modes)
        + " | "
        + " | ".join(f"{m} − off (95% CI)" for m in modes)
        + " | cat. prec. off | "
        + " | ".join(modes)
        + " | hard widened |",
        "|" + "---|" * (5 + 3 * len(modes)),
    ]
    for row in rows:
        a, d = row["arms"], row["on_minus_off"]
        cells = [f"{row['distractors']:,}", f"{row['chunks']:,}", f"{row['routing_accuracy']:.3f}"]
        cells += [f"{a[arm]['hit_at_3']:.3f}" for arm in ("off", *modes)]
        cells += [_interval(d[m]) for m in modes]
        cells += [f"{a[arm]['category_precision']:.3f}" for arm in ("off", *modes)]
        lines.append("| " + " | ".join([*cells, str(row["hard_widened"])]) + " |")
    extra = [(row, arm) for row in rows for arm in row["arms"] if arm.startswith(("soft ", "lift ", "oracle "))]
    if extra:
        lines += [
            "",
            "The soft and lift filters at other settings (oracle: routed by the gold category):",
            "",
            "| distractors | filter | hit@3 | − off (95% CI) | cat. prec. |",
            "|---|---|---|---|---|",
        ]
        for row, arm in extra:
            d, got = row["on_minus_off"][arm], row["arms"][arm]
            lines.append(
                f"| {row['distractors']:,} | {arm} | {got['hit_at_3']:.3f} | {_interval(d)} | {got['category_precision']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
