"""Training engines: `trl` (CPU or GPU) and `unsloth` (CUDA QLoRA). `pick()` chooses for `auto`."""

from __future__ import annotations

import importlib.util

from core.errors import HousechatError


def pick(engine: str) -> str:
    """`auto` → unsloth when CUDA and the `gpu` extra are present, else trl."""
    if engine == "trl":
        return "trl"
    cuda = _cuda()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if engine == "unsloth":
        if not (cuda and has_unsloth):
            raise HousechatError(
                "the unsloth engine needs CUDA and `pip install -e '.[gpu]'` — use `engine: trl` on this machine"
            )
        return "unsloth"
    return "unsloth" if cuda and has_unsloth else "trl"


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
