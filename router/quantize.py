"""int8 for the `llm` router: the decoder's linear layers quantized after the adapter is merged.

Dynamic quantization (torch's `quantize_dynamic`): weights int8 per output channel, activations
quantized per call with one scale per tensor, so nothing is retrained. Plain int8 everywhere
changed a fifth of the fine-tuned 135M router's decisions; three choices keep most of them
(benchmarks/router_int8.py measures each, docs/results/router.md records it):

- The fixed prompt prefix is run in float32 before quantizing, so its KV cache is exact: the
  prompt's first tokens carry the model's largest activations.
- In several layers the MLP's down projection sees a few input channels many times larger than
  the median one, and one activation scale per tensor then rounds the other channels away. Those
  few channels (found on the categories' own names and scopes, run through the float model) stay
  float32; the rest of the projection is int8 (LLM.int8()'s outlier split, with a fixed set).
- The output layer stays float: the scorer reads only the labels' rows of it.

This module imports torch at the top: only code that has a model in hand imports it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from router.llm import Scorer

OUTLIER_CHANNELS = 16  # down-projection input channels kept float32 per layer (of 1,536 in SmolLM2-135M)


def calibration_texts(scorer: Scorer) -> list[str]:
    """Household text every router has: one line per category, its name and scope."""
    return [f"{c.name}: {c.scope}" for c in scorer.labels.categories]


def down_input_maxima(scorer: Scorer, texts: list[str]) -> dict[str, tuple[Any, Any]]:
    """Per MLP module name: (the MLP, the largest |input| of each down-projection channel over `texts`)."""
    maxima: dict[str, Any] = {}

    def record(name: str) -> Any:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).abs().amax(dim=0)
            maxima[name] = x if name not in maxima else torch.maximum(maxima[name], x)

        return hook

    mlps = {n: m for n, m in scorer.model.named_modules() if hasattr(m, "down_proj") and hasattr(m, "up_proj")}
    hooks = [m.down_proj.register_forward_pre_hook(record(n)) for n, m in mlps.items()]
    try:
        scorer.log_scores(texts)
    finally:
        for h in hooks:
            h.remove()
    return {n: (mlps[n], x) for n, x in maxima.items()}


def _dynamic_int8(module: Any, targets: list[str] | None = None) -> Any:
    """`module` with its linear layers (or only those named in `targets`) int8, weights per output channel."""
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it moves to torchao; it is what torch ships today.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec: dict[Any, Any] = (
            {torch.nn.Linear: per_channel_dynamic_qconfig}
            if targets is None
            else {name: per_channel_dynamic_qconfig for name in targets}
        )
        return quantize_dynamic(module, spec, inplace=True)


class OutlierSplitLinear(torch.nn.Module):
    """A linear layer as int8 over most input channels plus float32 over a few outlier channels."""

    def __init__(self, linear: Any, outliers: Any) -> None:
        super().__init__()
        keep = torch.ones(linear.in_features, dtype=torch.bool)
        keep[outliers] = False
        self.keep, self.outliers = keep.nonzero()[:, 0], outliers
        bulk = torch.nn.Linear(len(self.keep), linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            bulk.weight.copy_(linear.weight[:, self.keep])
            if linear.bias is not None:
                bulk.bias.copy_(linear.bias)
        self.bulk = _dynamic_int8(torch.nn.Sequential(bulk))[0]
        self.outlier_weight = linear.weight.detach()[:, outliers].clone()

    def forward(self, x: Any) -> Any:
        return self.bulk(x.index_select(-1, self.keep)) + x.index_select(-1, self.outliers) @ self.outlier_weight.T


def quantize_int8(scorer: Scorer, outliers: int = OUTLIER_CHANNELS, float_prefix: bool = True) -> Scorer:
    """Quantize the scorer's decoder to int8 in place (prefix cache float32, down-projection outliers float32).

    `outliers=0` quantizes the down projections whole; as many as their inputs leaves them float32.
    `float_prefix=False` computes the prefix cache with the int8 model (benchmarks/router_int8.py
    measures every variant).
    """
    if float_prefix:
        scorer.prefix_cache()
    found = down_input_maxima(scorer, calibration_texts(scorer)) if outliers else {}
    decoder = scorer.model.get_decoder()
    downs = {id(mlp.down_proj) for mlp, _ in found.values()}
    names = [n for n, m in decoder.named_modules() if isinstance(m, torch.nn.Linear) and id(m) not in downs]
    _dynamic_int8(decoder, names)
    for mlp, x_max in found.values():
        if outliers < x_max.numel():
            top = x_max.topk(outliers).indices.sort().values
            mlp.down_proj = OutlierSplitLinear(mlp.down_proj, top)
    return scorer
