"""The encoders side by side: speed (encode, ingest, one question) and quality (retrieval, routing).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.encoder [--encoders minilm,minilm-onnx,minilm-int8]

For each encoder (core.encoders), on `data/notes` and its real chunks:

1. **encode**: load time and chunks/s over every 4th chunk (in this process; the ONNX files are
   built before anything is timed, and the build time is printed).
2. **ingest**: one `python -m ingest` of data/notes into a fresh store, as a subprocess: wall
   seconds and CPU seconds (user + system; robust on a shared box), model load included. The
   reference is a subprocess that imports sentence-transformers, loads fp32 MiniLM and encodes the
   same chunks, nothing else; ratio = ingest / reference (target <= 0.67).
3. **question**: the default router (head + store vote) plus the filtered retrieval it drives,
   from one question vector, per question: p50/p95 ms over the routing test questions, at the
   ~1k chunks of data/notes (target p50 <= 30 ms).
4. **quality**: hit@3 of the default pipeline (router on) on the QA dev half
   (`python -m eval answers --split dev --answerer none`) and the embedding router's accuracy on
   val (`python -m eval routing --split val --backends embedding`), each against that encoder's
   own store; the delta to `minilm` must stay within 0.5 points for an encoder to be the default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATE_POINTS = 0.5  # the largest drop (in accuracy points) an encoder may cost to become the default
REFERENCE = """
import json, sys
from core.models import minilm_path, offline_env
offline_env()
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[1]))
model = SentenceTransformer(str(minilm_path()), device="cpu")
model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def chunk_texts() -> list[str]:
    """What an ingest of data/notes embeds, in its order."""
    from core.categories import load_categories
    from core.notes import read_notes
    from core.settings import from_env
    from core.store import indexed_text
    from ingest.pipeline import prepare

    settings = from_env()
    corpus = read_notes([settings.notes_dir], load_categories(settings.categories_file), settings.home)
    return [indexed_text(n.file.note.title, c.text) for n in prepare(corpus) for c in n.chunks]


def child(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of a subprocess; CPU = its user + system time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0,):
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def encode_speed(name: str, texts: list[str]) -> dict[str, float]:
    from core.models import load_encoder

    start, cpu0 = time.perf_counter(), time.process_time()
    encoder = load_encoder(name)
    load_s = time.perf_counter() - start
    start, cpu0 = time.perf_counter(), time.process_time()
    encoder.encode(texts, batch_size=64)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"load_s": load_s, "encode_s": wall, "encode_cpu_s": cpu, "chunks_per_s": len(texts) / wall}


def question_latency(name: str, store_dir: Path, questions: list[str]) -> tuple[list[float], list[float]]:
    """(wall ms, CPU ms) per question: one vector, the default router on it, the retrieval it drives.

    CPU time stands in for wall time on a loaded box (one thread: equal on an idle one).
    """
    from dataclasses import replace

    from app.pipeline import plan_and_retrieve
    from core.categories import load_categories
    from core.settings import from_env
    from core.store import open_store
    from router.registry import load_router

    settings = replace(from_env(store=store_dir), encoder=name)
    labels = load_categories(settings.categories_file)
    store = open_store(settings, create=False)
    loaded = load_router("embedding", settings, labels)
    router = loaded.router  # it opens the store itself, with this encoder

    def ask(question: str) -> None:
        vector = store.embed([question])[0]
        found = router.route_vector(question, vector)
        plan_and_retrieve(store, question, found, loaded.policy, 5, settings.hybrid, vector)

    for question in questions[:5]:  # warm up: the BM25 index, the category collections
        ask(question)
    wall, cpu = [], []
    for question in questions:
        start, cpu0 = time.perf_counter(), time.process_time()
        ask(question)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - cpu0) * 1000)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", default="minilm,minilm-onnx,minilm-int8")
    parser.add_argument("--n", type=int, default=60, help="routing test questions timed one at a time")
    parser.add_argument("--skip-quality", action="store_true", help="speed only (no eval runs)")
    parser.add_argument("--workdir", type=Path, help="keep the stores here (default: a temp folder)")
    args = parser.parse_args()
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args, names, args.workdir)
        return
    with tempfile.TemporaryDirectory(prefix="housechat-encoder-") as work:
        run(args, names, Path(work))


def run(args: argparse.Namespace, names: list[str], work: Path) -> None:
    from core.encoders import encoder_spec, onnx_model_file
    from core.models import minilm_path
    from core.settings import from_env

    settings = from_env()
    texts = chunk_texts()
    (work / "chunks.json").write_text(json.dumps(texts))
    lines = (ROOT / "data" / "routing" / "test.jsonl").read_text().splitlines()[: args.n]
    questions = [json.loads(line)["question"] for line in lines]
    for name in names:  # build the ONNX files first: a one-off cost, not the ingest's
        spec = encoder_spec(name)
        if spec.precision != "torch":
            start = time.perf_counter()
            onnx_model_file(spec.precision, settings.var_dir, minilm_path())
            print(f"{name}: ONNX file ready in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref_wall, ref_cpu, _ = child([sys.executable, "-c", REFERENCE, str(work / "chunks.json")], base_env)
    print(
        f"reference (sentence-transformers load + encode): {ref_wall:.1f} s wall, {ref_cpu:.1f} s CPU", file=sys.stderr
    )

    rows = {}
    for name in names:
        env = {**base_env, "HOUSECHAT_ENCODER": name}
        store = work / f"store-{name}"
        speed = encode_speed(name, texts[::4])  # a quarter of the chunks: the ingest below embeds them all
        wall, cpu, _ = child([sys.executable, "-m", "ingest", "--rebuild", "--store", str(store)], env)
        latency, latency_cpu = question_latency(name, store, questions)
        row = {**speed, "ingest_s": wall, "ingest_cpu_s": cpu, "ratio": wall / ref_wall, "ratio_cpu": cpu / ref_cpu}
        row |= {
            "q_p50": percentile(latency, 50),
            "q_p95": percentile(latency, 95),
            "q_cpu_p50": percentile(latency_cpu, 50),
        }
        if not args.skip_quality:
            row |= quality(env, store)
        rows[name] = row
        print(f"{name}: {json.dumps({k: round(v, 4) for k, v in row.items()})}", file=sys.stderr, flush=True)
    report(rows, texts, ref_wall, ref_cpu, len(questions))


def quality(env: dict[str, str], store: Path) -> dict[str, float]:
    """hit@3 (router on) on the QA dev half and routing accuracy on val, with this store's encoder."""
    _, _, out = child(
        [sys.executable, "-m", "eval", "answers", "--split", "dev", "--answerer", "none", "--arms", "on"]
        + ["--store", str(store), "--json", "--report", str(store.parent / "reports")],
        env,
    )
    answers = json.loads(out.strip().splitlines()[-1])
    _, _, out = child(
        [sys.executable, "-m", "eval", "routing", "--split", "val", "--backends", "embedding"]
        + ["--store", str(store), "--json", "--report", str(store.parent / "reports")],
        env,
    )
    routing = json.loads(out.strip().splitlines()[-1])
    return {
        "hit3_dev": float(answers["arms"]["on"]["hit_at_k"]["3"]),
        "routing_val": float(routing["backends"]["embedding"]["accuracy"]),
    }


def report(rows: dict[str, dict[str, float]], texts: list[str], ref_wall: float, ref_cpu: float, n: int) -> None:
    load = os.getloadavg()[0]
    print(f"{len(texts)} chunks of data/notes; {n} routing test questions; 1-min load average {load:.1f}")
    print(
        f"reference: sentence-transformers fp32 MiniLM load + encode in a fresh process: {ref_wall:.1f} s wall, {ref_cpu:.1f} s CPU"
    )
    print()
    print(
        "| encoder | load s | encode chunks/s | ingest s wall / CPU | ingest ratio wall / CPU | question p50 / p95 ms | question CPU p50 ms | hit@3 dev | Δ | routing val | Δ | gate |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ref = rows.get("minilm")
    passing = []
    for name, r in rows.items():
        cells = [
            f"`{name}`",
            f"{r['load_s']:.1f}",
            f"{r['chunks_per_s']:.1f}",
            f"{r['ingest_s']:.1f} / {r['ingest_cpu_s']:.1f}",
        ]
        cells += [
            f"{r['ratio']:.2f} / {r['ratio_cpu']:.2f}",
            f"{r['q_p50']:.1f} / {r['q_p95']:.1f}",
            f"{r['q_cpu_p50']:.1f}",
        ]
        if "hit3_dev" in r and ref is not None:
            d_hit = 100 * (r["hit3_dev"] - ref["hit3_dev"])
            d_route = 100 * (r["routing_val"] - ref["routing_val"])
            ok = d_hit >= -GATE_POINTS and d_route >= -GATE_POINTS
            passing += [name] if ok else []
            cells += [f"{r['hit3_dev']:.3f}", f"{d_hit:+.1f}", f"{r['routing_val']:.3f}", f"{d_route:+.1f}"]
            cells += ["pass" if ok else "**fail**"]
        else:
            cells += ["-"] * 5
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        "Δ = points against `minilm`; gate = both within -0.5 points. Targets: ingest ratio <= 0.67, question p50 <= 30 ms."
    )
    if passing:
        fastest = min(passing, key=lambda n: rows[n]["ingest_cpu_s"])
        print(f"fastest encoder that passes the gate (by ingest CPU time): {fastest}")


if __name__ == "__main__":
    main()
