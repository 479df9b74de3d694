"""Router latency: per backend, one question at a time and in batches, with and without the prefix cache.

    .venv/bin/python -m benchmarks.router [--n 60] [--threads 0] [--model DIR] [--store DIR]

Prints a table of p50/p95 milliseconds per question and each row's ratio to the embedding router.
The `llm` rows use the installed adapter (models/router-llm) when there is one, else the bare
SmolLM2 base with the same prompt and label scoring (same architecture, same cost). An installed
classification-head adapter (`mode: classify`) gets float32 and int8 rows of its own (reading
`--store` when it was trained with `store_context`: search, lines and vote included; and the
embedding router's guesses, timed with it, when it was trained with `router_hint`), and the
label-scoring rows then use the bare base. They go lever
by lever: float32 with the whole-vocabulary projection (the scorer before issue #16), float32
reading only the labels' rows of the output layer, then int8 (router.quantize, the app's default).
Those single-question rows take turns question by question, so a shared box's load falls on each.
With `--store` (an ingested store) it also times the default router as the app serves it (the head
+ the store vote, from one question vector) and that route plus the retrieval it drives.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def timed_single(route, questions: list[str]) -> list[float]:
    out = []
    for q in questions:
        start = time.perf_counter()
        route(q)
        out.append((time.perf_counter() - start) * 1000)
    return out


def timed_interleaved(routes: list, questions: list[str]) -> list[list[float]]:
    """`timed_single` for several routers taking turns per question, so a shared box's load falls on all alike."""
    out: list[list[float]] = [[] for _ in routes]
    for q in questions:
        for times, route in zip(out, routes, strict=True):
            start = time.perf_counter()
            route(q)
            times.append((time.perf_counter() - start) * 1000)
    return out


def timed_batches(route_batch, questions: list[str], size: int) -> list[float]:
    out = []
    for i in range(0, len(questions), size):
        chunk = questions[i : i + size]
        start = time.perf_counter()
        route_batch(chunk)
        out += [(time.perf_counter() - start) * 1000 / len(chunk)] * len(chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60, help="test questions to route")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--model", type=Path, help="llm router folder (default: the installed models/router-llm)")
    parser.add_argument("--store", type=Path, help="an ingested store: also time the served router + retrieval")
    args = parser.parse_args()

    import copy

    import torch

    from core.categories import load_categories
    from core.models import SMOLLM2, load_causal_lm
    from core.settings import from_env
    from router.embedding import EmbeddingRouter
    from router.llm import LabelScorer, LLMRouter, load_adapted_model
    from router.meta import read_meta
    from router.quantize import quantize_int8

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = from_env()
    labels = load_categories(settings.categories_file)
    lines = (ROOT / "data" / "routing" / "test.jsonl").read_text().splitlines()[: args.n]
    questions = [json.loads(line)["question"] for line in lines]

    embedding = EmbeddingRouter.load(settings.embedding_router_dir, labels)
    adapter = args.model or settings.router_model_dir
    meta = read_meta(adapter) if (adapter / "meta.json").exists() else {}
    heads: list[LLMRouter] = []
    head_name = ""
    if meta.get("mode") == "classify":
        # A classification-head router (one forward, a head over the last token): float32 and int8 rows of
        # its own; the label-scoring lever rows below then use the bare base.
        from router.llm import ClassifierScorer, load_adapted_classifier

        head, head_tok = load_adapted_classifier(adapter, meta["base_model"], settings.var_dir, len(labels))
        context = store_context(meta, args.store)
        hint = None
        if meta.get("router_hint"):  # it reads the embedding router's guesses: their time is part of its own
            from router.registry import router_hint

            hint = router_hint(from_env(store=args.store) if args.store else settings, labels)
        heads = [LLMRouter(ClassifierScorer(head, head_tok, labels, context=context, hint=hint))]
        quantized = ClassifierScorer(copy.deepcopy(head), head_tok, labels, context=context, hint=hint)
        heads.append(LLMRouter(quantize_int8(quantized)))
        reads = (", reads the store" if context else "") + (", reads the embedding router" if hint else "")
        head_name = f"llm (classification head{reads}, adapter merged)"
        meta = {}
    if meta:
        model, tokenizer = load_adapted_model(adapter, meta["base_model"], settings.var_dir)
        llm_name, label_format = f"llm ({meta['label_format']}, adapter merged)", meta["label_format"]
    else:
        model, tokenizer = load_causal_lm(SMOLLM2, settings.var_dir)
        llm_name, label_format = "llm (base, codes)", "codes"
    vocab = LLMRouter(LabelScorer(model, tokenizer, labels, label_format, label_rows=False))
    fp32 = LLMRouter(LabelScorer(model, tokenizer, labels, label_format))
    int8_model = copy.deepcopy(model)
    cached = LLMRouter(quantize_int8(LabelScorer(int8_model, tokenizer, labels, label_format)))
    uncached = LLMRouter(cached.scorer, use_cache=False)
    zero_base, zero_tok = load_causal_lm(SMOLLM2, settings.var_dir)
    zero_shot = LLMRouter(LabelScorer(zero_base, zero_tok, labels, "names", with_scopes=True), "zero-shot")

    for router in (embedding, vocab, fp32, cached):  # warm up: first calls allocate
        router.route_batch(questions[:4])
    served: list[tuple[str, list[float]]] = []
    if args.store:
        served = served_rows(settings, labels, args.store, questions)
    for router in heads:
        router.route_batch(questions[:4])
    head_routes = [h.route for h in heads]
    kinds = ["float32", "int8"][: len(heads)]
    if heads and heads[-1].scorer.context is not None:  # as the app serves it: the question's vector is given
        from core.models import embed

        vectors = dict(zip(questions, embed(questions), strict=True))
        head_routes.append(lambda q: heads[-1].route_vector(q, vectors[q]))
        kinds.append("int8, vector given (as served)")
    singles = timed_interleaved([vocab.route, fp32.route, cached.route, uncached.route, *head_routes], questions)
    head_rows = [(f"{head_name}, {kind}, single", t) for kind, t in zip(kinds, singles[4:], strict=True)]
    rows = [
        ("embedding, single", timed_single(embedding.route, questions)),
        *served,
        ("embedding, batch 16", timed_batches(embedding.route_batch, questions, 16)),
        (f"{llm_name}, float32, whole vocabulary, single", singles[0]),
        (f"{llm_name}, float32, label rows, single", singles[1]),
        (f"{llm_name}, int8, label rows, single", singles[2]),
        (f"{llm_name}, int8, label rows, single, no cache", singles[3]),
        (f"{llm_name}, float32, label rows, batch 16", timed_batches(fp32.route_batch, questions, 16)),
        (f"{llm_name}, int8, label rows, batch 16", timed_batches(cached.route_batch, questions, 16)),
        *head_rows,
        ("zero-shot (names, 20 labels x multi-token), single", timed_single(zero_shot.route, questions[:10])),
    ]
    base = statistics.median(rows[0][1])
    print(f"{len(questions)} test questions, torch threads {torch.get_num_threads()}")
    scorer = fp32.scorer
    lengths = sorted(len(scorer.question_ids(q)) for q in questions)
    tail = len(tokenizer.encode(scorer.suffix_text, add_special_tokens=False))
    print(
        f"tokens per question: prefix {len(scorer.prefix_ids)} (cached once), computed per question "
        f"median {statistics.median(lengths):g} (min {lengths[0]}, max {lengths[-1]}) of which {tail} are the chat tail"
    )
    print(f"{'router':<66}{'p50 ms':>9}{'p95 ms':>9}{'x embedding':>13}")
    for name, values in rows:
        p50 = percentile(values, 50)
        print(f"{name:<66}{p50:>9.1f}{percentile(values, 95):>9.1f}{p50 / base:>13.1f}")
    llm_rows = ("llm (classification head",) if heads else (llm_name,)  # the installed router's rows
    best = min(percentile(v, 50) for name, v in rows if name.startswith(llm_rows) and name.endswith("single"))
    print(f"best llm router, single question: p50 {best:.1f} ms (issue #16 target <= 60 ms)")
    print(f"1-min load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")


def store_context(meta: dict, store_dir: Path | None):
    """The store a classification head trained with `store_context` reads (and its store vote), from --store."""
    if store_dir is None:
        return None
    from core.settings import from_env
    from core.store import open_store
    from router.llm import StoreContext

    return StoreContext.from_meta(meta, lambda: open_store(from_env(store=store_dir), create=False))


def served_rows(settings, labels, store_dir: Path, questions: list[str]) -> list[tuple[str, list[float]]]:
    """The default router as the app serves it: one MiniLM vector, the head + store vote, then retrieval."""
    from app.pipeline import plan_and_retrieve
    from core.settings import from_env
    from core.store import open_store
    from router.registry import load_router

    settings = from_env(store=store_dir)
    store = open_store(settings, create=False)
    loaded = load_router("embedding", settings, labels)
    router = loaded.router
    router.route(questions[0])  # warm up (and adapt, if the store holds other notes)

    def route(question: str) -> None:
        router.route_vector(question, store.embed([question])[0])

    def route_and_retrieve(question: str) -> None:
        vector = store.embed([question])[0]
        found = router.route_vector(question, vector)
        plan_and_retrieve(store, question, found, loaded.policy, 5, False, vector)

    chunks = store.counts()[1]
    return [
        (f"embedding + store vote (served), single, {chunks} chunks", timed_single(route, questions)),
        ("  + filtered retrieval, one question vector", timed_single(route_and_retrieve, questions)),
    ]


if __name__ == "__main__":
    main()
