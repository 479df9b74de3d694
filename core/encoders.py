"""The sentence encoders: all-MiniLM-L6-v2 in sentence-transformers, or in ONNX Runtime (fp32 or int8).

All four read the same embedded weights (core.models.minilm_path, nothing downloaded) and give
normalised mean-pooled 384-dim vectors:

- `minilm`: sentence-transformers on torch, fp32 (the reference).
- `minilm-onnx`: the same network exported to ONNX (pooling and normalisation inside the graph);
  ONNX Runtime fuses its layers when it loads it. Cosine 1.000 to `minilm`.
- `minilm-int8` (the default): that graph with every weight MatMul quantized to int8 per output
  channel (dynamic quantization: activations are quantized on the fly, per text). Per-tensor
  weights, the quantizer's default, bent the vectors too far (cosine 0.94 to fp32 on the notes'
  chunks; hit@3 and routing fell by more than a point); per channel keeps them at 0.993 on average,
  2.2x fp32's encoding speed, within 0.5 points of `minilm` on QA dev hit@3 and routing val with
  the committed router head (`python -m benchmarks.encoder`, docs/results/ingest.md).
- `minilm-int8-ffn`: only the feed-forward MatMuls quantized (per channel), attention in fp32:
  slightly closer to fp32, 1.6x fp32's speed; the conservative choice (it passed the gate with the
  router head before the multilingual refit too, where `minilm-int8` lost one hit@3 question).

The ONNX files are built on first use (torch export, then `onnx` + ONNX Runtime tools) into
`<var>/models/minilm-onnx/` and reused; later processes load them without importing torch at all,
which is much of the saving for a short `python -m ingest`. Each encoder has its own model id,
recorded by every store it writes (core.store), so vectors of two encoders never meet in one store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import HousechatError

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
BUILD_VERSION = 2  # bump when the export or quantization recipe changes: cached files are rebuilt
# 2: int8 weights in 7 bits (`reduce_range`), so every x86 CPU computes the same vectors (see `_quantize`)


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder a setting can name: its model id (what a store records) and how it runs."""

    name: str
    model_id: str
    precision: str  # "torch" (sentence-transformers); "fp32", "int8", "int8-ffn" (ONNX Runtime)
    description: str


ENCODER_SPECS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec("minilm", "embedded:all-minilm-l6-v2", "torch", "sentence-transformers, fp32"),
        EncoderSpec("minilm-onnx", "embedded:all-minilm-l6-v2:onnx-fp32", "fp32", "ONNX Runtime, fp32"),
        EncoderSpec("minilm-int8", "embedded:all-minilm-l6-v2:onnx-int8", "int8", "ONNX Runtime, int8 per channel"),
        EncoderSpec(
            "minilm-int8-ffn", "embedded:all-minilm-l6-v2:onnx-int8-ffn", "int8-ffn", "ONNX Runtime, int8 FFN only"
        ),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    """The encoder called `name` (a `HOUSECHAT_ENCODER` value)."""
    try:
        return ENCODER_SPECS[name]
    except KeyError:
        raise HousechatError(f"unknown encoder {name!r} — use one of {', '.join(ENCODER_SPECS)}") from None


def encoder_for_model(model_id: str) -> str | None:
    """The encoder name that writes vectors with this model id (None for a model we do not know)."""
    return next((s.name for s in ENCODER_SPECS.values() if s.model_id == model_id), None)


class OnnxEncoder:
    """MiniLM in ONNX Runtime: the fast tokenizer, one session, texts batched by length."""

    def __init__(self, model_file: Path, tokenizer_file: Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], batch_size: int = 1) -> Any:
        """Normalised embeddings, float32 (n, 384).

        One text per run by default: no work goes into padding (it took less CPU than batches of
        16 sorted by length), and under int8 dynamic quantization, whose activation scale spans the
        whole batch, a text's vector does not depend on which texts share its batch (cosine 0.995
        between a question embedded alone and in a batch of 16).
        """
        import numpy as np

        out = np.zeros((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encoded = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def onnx_model_file(precision: str, var_dir: Path, source: Path) -> Path:
    """The ONNX file for `precision` ("fp32", "int8", "int8-ffn"), built once from the weights in `source`.

    A file built from other weights or by another recipe version is rebuilt. Built in a temp
    folder and renamed, so a killed build leaves nothing half-written.
    """
    folder = Path(var_dir) / "models" / "minilm-onnx"
    target = folder / f"{precision}.onnx"
    stamp = _stamp(source)
    marker = folder / f"{precision}.json"
    if target.exists() and marker.exists() and json.loads(marker.read_text()) == stamp:
        return target
    if importlib.util.find_spec("onnx") is None:
        raise HousechatError(
            "building the ONNX encoder needs the `onnx` package — `pip install onnx` (or `pip install -e .`), "
            "or use the sentence-transformers encoder: HOUSECHAT_ENCODER=minilm"
        )
    print(f"building the {precision} ONNX encoder in {folder} (once, ~20 s)...", file=sys.stderr)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        built = tmp / "fp32.onnx"
        _export(source, built)
        if precision.startswith("int8"):
            # The plain export, not a pre-fused graph: the quantizer cannot type the fused ops.
            built, fp32 = tmp / "int8.onnx", built
            _quantize(fp32, built, ffn_only=precision == "int8-ffn")
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(built, target)
        marker.write_text(json.dumps(stamp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _stamp(source: Path) -> dict[str, Any]:
    weights = Path(source) / "model.safetensors"
    stat = weights.stat()
    return {"weights": str(weights), "size": stat.st_size, "mtime": int(stat.st_mtime), "recipe": BUILD_VERSION}


def _export(source: Path, out: Path) -> None:
    """Export BERT + mean pooling + L2 normalisation as one graph (eager attention traces cleanly)."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    model = Pooled(AutoModel.from_pretrained(str(source), attn_implementation="eager").eval())
    # A padded example, so the trace keeps the attention mask's path.
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(out),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=17,
        )


def _quantize(model_in: Path, model_out: Path, ffn_only: bool) -> None:
    """int8 weights per output channel for the MatMuls (or the feed-forward ones only); dynamic activations.

    The weights use 7 of their 8 bits (`reduce_range`). On an x86 CPU without VNNI, ONNX Runtime
    multiplies uint8 activations by int8 weights with an instruction that adds pairs of products
    into int16 and saturates: 2 x 255 x 127 overflows it, 2 x 255 x 64 does not. With full-range
    weights the vectors therefore depended on the CPU (a router fit on another machine lost 4 val
    questions on an AVX2 one); with 7-bit weights the integer products are exact on every x86
    CPU, so a store, a router and a benchmark give the same vectors everywhere.
    """
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(model_in), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    chosen = [name for name in matmuls if _is_ffn(name)] if ffn_only else matmuls
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)  # its advice to pre-process the model is for static quantization
    try:
        quantize_dynamic(
            str(model_in),
            str(model_out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            nodes_to_quantize=chosen,
        )
    finally:
        root.setLevel(level)
        # It logs through `logging.warning`, which gives the root logger a stderr handler when it has
        # none; left there, every library logger set to DEBUG (bm25s's is) would print in the app.
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)


def _is_ffn(node_name: str) -> bool:
    return "/intermediate/dense/" in node_name or ("/output/dense/" in node_name and "/attention/" not in node_name)
