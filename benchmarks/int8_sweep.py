"""How to quantize MiniLM to int8: cosine to fp32 and CPU time per recipe (how `minilm-int8*` were chosen).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.int8_sweep [--every 3]

Exports the embedded MiniLM to ONNX once (core.encoders), quantizes it with ONNX Runtime's dynamic
quantization in several ways, and prints for each: cosine to the fp32 ONNX vectors over every
`--every`-th chunk of data/notes and the val questions (mean / min), and the CPU seconds to encode
those chunks with one thread, in batches of 16 sorted by length. Cosines of full-range recipes
depend on the CPU (without VNNI their products can saturate; core.encoders._quantize). Quality on
the real tasks is `benchmarks.encoder`'s job.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {  # name: (per_channel, which MatMuls, 7-bit weights)
    "every MatMul, per tensor (ORT's default)": (False, "all", False),
    "feed-forward only, per tensor": (False, "ffn", False),
    "every MatMul, per channel, full-range weights (minilm-int8 until 2026-12-02)": (True, "all", False),
    "every MatMul, per channel, 7-bit weights (minilm-int8)": (True, "all", True),
    "feed-forward only, per channel, full-range weights": (True, "ffn", False),
    "feed-forward only, per channel, 7-bit weights (minilm-int8-ffn)": (True, "ffn", True),
    "all but the first and last layer, per channel": (True, "middle", False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=3, help="use every N-th chunk of data/notes")
    args = parser.parse_args()

    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from benchmarks.encoder import chunk_texts
    from core.encoders import OnnxEncoder, _export, _is_ffn
    from core.models import minilm_path

    chunks = chunk_texts()[:: args.every]
    lines = (ROOT / "data" / "routing" / "val.jsonl").read_text().splitlines()
    questions = [json.loads(line)["question"] for line in lines]
    source = minilm_path()
    with tempfile.TemporaryDirectory(prefix="housechat-int8-") as work:
        fp32 = Path(work) / "fp32.onnx"
        _export(source, fp32)
        names = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if n.op_type == "MatMul"]
        chosen = {
            "all": names,
            "ffn": [n for n in names if _is_ffn(n)],
            "middle": [n for n in names if "/layer.0/" not in n and "/layer.5/" not in n],
        }

        def measure(model: Path) -> tuple[float, object, object]:
            encoder = OnnxEncoder(model, source / "tokenizer.json", threads=1)
            encoder.encode(chunks[:16], batch_size=16)  # warm up
            start = time.process_time()
            c = encoder.encode(chunks, batch_size=16)  # as recorded in docs/results/ingest.md
            return time.process_time() - start, c, encoder.encode(questions, batch_size=16)

        base_s, base_c, base_q = measure(fp32)
        print(f"{len(chunks)} chunks (1 in {args.every} of data/notes), {len(questions)} val questions, one thread")
        print()
        print("| recipe | cosine chunks mean / min | cosine questions mean / min | CPU s | x fp32 |")
        print("|---|---|---|---|---|")
        print(f"| fp32 (`minilm-onnx`) | 1 / 1 | 1 / 1 | {base_s:.1f} | 1.00 |")
        for name, (per_channel, which, seven_bit) in RECIPES.items():
            out = Path(work) / "int8.onnx"
            quantize_dynamic(
                str(fp32),
                str(out),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=seven_bit,  # what core.encoders does: exact products on CPUs without VNNI
                nodes_to_quantize=chosen[which],
            )
            seconds, c, q = measure(out)
            cc, cq = (np.asarray(c) * base_c).sum(1), (np.asarray(q) * base_q).sum(1)
            print(
                f"| {name} | {cc.mean():.4f} / {cc.min():.4f} | {cq.mean():.4f} / {cq.min():.4f} | "
                f"{seconds:.1f} | {seconds / base_s:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
