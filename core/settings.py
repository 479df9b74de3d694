"""One settings object. Defaults live here; `HOUSECHAT_*` environment variables override them.

Nothing else in the project reads the environment: CLIs build a `Settings` and pass it on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "HOUSECHAT_"


def _default_home() -> Path:
    return PROJECT_ROOT


@dataclass(frozen=True)
class Settings:
    """Where things live and which models answer. Override any field with HOUSECHAT_<FIELD>."""

    home: Path = field(default_factory=_default_home)
    var_dir: Path | None = None  # caches, converted models, the default store; default home/var
    store: Path | None = None  # embedded Chroma directory; default var_dir/store
    chroma_url: str | None = None  # a Chroma server (http://127.0.0.1:8000); overrides `store`
    collection: str = "house_notes"
    ollama_host: str = "http://127.0.0.1:11434"
    answer_model: str = "qwen3:4b-instruct"
    answerer: str = "auto"  # auto | ollama | embedded
    # The router with the best validation accuracy on the embedded models (docs/results/routing.md):
    # MiniLM + character n-grams, trained on the routing questions and the house notes (val 86.1%;
    # the ensemble with the 135M LLM ties it at 10x the latency). With Qwen3-0.6B and its adapter,
    # try `llm` or refit `ensemble`.
    router_backend: str = "embedding"
    router_model_dir: Path | None = None  # default home/models/router-llm
    embedding_router_dir: Path | None = None  # default home/models/router-embedding
    categories_file: Path | None = None  # default home/data/categories.yaml
    notes_dir: Path | None = None  # default home/data/notes

    def __post_init__(self) -> None:
        # Fill derived paths once so every reader sees the same resolved values.
        home = Path(self.home)
        var = Path(self.var_dir) if self.var_dir else home / "var"
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "var_dir", var)
        object.__setattr__(self, "store", Path(self.store) if self.store else var / "store")
        defaults = {
            "router_model_dir": home / "models" / "router-llm",
            "embedding_router_dir": home / "models" / "router-embedding",
            "categories_file": home / "data" / "categories.yaml",
            "notes_dir": home / "data" / "notes",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value else default)

    @property
    def var(self) -> Path:
        assert self.var_dir is not None
        return self.var_dir


def from_env(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from defaults, then `HOUSECHAT_*` variables, then explicit `overrides`."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("home") is not None:
        values["home"] = Path(str(values["home"]))
    return Settings(**values)  # type: ignore[arg-type]
