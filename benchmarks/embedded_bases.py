"""The embedded LLM bases: one-time GGUF conversion, later loads, and label-scoring latency.

    .venv/bin/python -m benchmarks.embedded_bases [--bases gemma3-270m smollm2-135m] [--var-dir DIR] [--n 20]

Without `--var-dir` it converts into a fresh temporary var dir (so the conversion is timed), then
loads the converted folder in a fresh subprocess (the load a later run pays; the torch/transformers
imports timed apart) and routes `--n`
validation questions one at a time with the fine-tuned router's short `codes` prompt and label scoring
(untrained base: latency only, the predictions mean nothing). Prints one row per base.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOAD_AND_SCORE = """
import json, statistics, sys, time
from pathlib import Path
start = time.perf_counter()
from core.categories import load_categories
from core.models import load_causal_lm
from router.llm import LabelScorer
import torch, transformers  # noqa: E401 (imported here, so the load below times the weights only)
transformers.AutoModelForCausalLM, transformers.AutoTokenizer
imported = time.perf_counter()
model, tokenizer = load_causal_lm(sys.argv[1], Path(sys.argv[2]))
loaded = time.perf_counter() - imported
scorer = LabelScorer(model, tokenizer, load_categories(Path(sys.argv[3])), "codes")
scorer.probabilities(["warm-up"])
questions = [json.loads(line)["question"] for line in Path(sys.argv[4]).read_text().splitlines()[: int(sys.argv[5])]]
times = []
for q in questions:
    t = time.perf_counter()
    scorer.probabilities([q])
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"import_s": round(imported - start, 1), "load_s": round(loaded, 1),
                  "p50_ms": round(statistics.median(times), 1)}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", nargs="+", default=["gemma3-270m"], help="embedded base names (without embedded:)")
    parser.add_argument("--var-dir", type=Path, default=None, help="reuse this var dir (default: a fresh temp dir)")
    parser.add_argument("--n", type=int, default=20, help="validation questions to time")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from core.models import embedded_causal_lm_dir

    with tempfile.TemporaryDirectory(prefix="housechat-bases-") as tmp:
        var_dir = args.var_dir or Path(tmp)
        print("| base | conversion s | imports s | load s | label scoring p50 ms (float32) |")
        print("|---|---|---|---|---|")
        for name in args.bases:
            base = f"embedded:{name}"
            start = time.perf_counter()
            embedded_causal_lm_dir(var_dir, base)
            converted = time.perf_counter() - start
            out = subprocess.run(
                [sys.executable, "-c", LOAD_AND_SCORE, base, str(var_dir), str(ROOT / "data" / "categories.yaml"),
                 str(ROOT / "data" / "routing" / "val.jsonl"), str(args.n)],
                check=True, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {base} | {converted:.1f} | {row['import_s']} | {row['load_s']} | {row['p50_ms']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
