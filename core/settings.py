"""One settings object. Defaults live here; `HOUSECHAT_*` environment variables override them.

Nothing else in the project reads the environment, and nothing else builds a project path by
hand: CLIs build a `Settings` with `from_env` and pass it on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from core.encoders import ENCODER_SPECS
from core.errors import HousechatError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "HOUSECHAT_"
OLLAMA_ROUTER_MODEL = "housechat-router"  # the name `ollama create` gives the exported router
FILTER_MODES = ("auto", "hard", "soft", "lift", "none")  # router.policy says what each does
ENCODERS = tuple(ENCODER_SPECS)  # the `encoder` setting's values; core.encoders says what each is


@dataclass(frozen=True)
class Settings:
    """Where things live and which models answer. Override any field with HOUSECHAT_<FIELD>.

    Build it with `from_env`, which fills every path from `home` (the defaults are in `_paths`).
    """

    home: Path  # where data/, models/, runs/ and reports/ live; default the checkout
    var_dir: Path  # caches, converted models, the default store; default home/var
    store: Path  # embedded Chroma directory; default var_dir/store
    router_model_dir: Path  # the LLM router's adapter + meta.json; default home/models/router-llm
    embedding_router_dir: Path  # default home/models/router-embedding
    ensemble_router_dir: Path  # default router-ensemble next to router_model_dir
    categories_file: Path  # default home/data/categories.yaml
    notes_dir: Path  # default home/data/notes
    routing_data_dir: Path  # train/val/test.jsonl and pool/; default home/data/routing
    qa_file: Path  # the answer-eval set; default home/data/eval/qa.jsonl
    reports_dir: Path  # eval reports; default home/reports
    runs_dir: Path  # training runs; default home/runs
    chroma_url: str | None = None  # a Chroma server (http://127.0.0.1:8000); overrides `store`
    collection: str = "house_notes"
    ollama_host: str = "http://127.0.0.1:11434"
    answer_model: str = "qwen3:4b-instruct"
    answerer: str = "auto"  # auto | ollama | extractive | smollm2
    # The router with the best validation accuracy on the embedded models (docs/results/routing.md):
    # MiniLM + character n-grams + the store vote, trained on the routing questions and the house
    # notes (val 94.2%; the ensemble with the LLM router puts no weight on the LLM). With Qwen3-0.6B
    # and its adapter, try `llm` or refit `ensemble`.
    router_backend: str = "embedding"
    ollama_router_model: str = OLLAMA_ROUTER_MODEL  # the exported router as Ollama serves it
    # The UI login as USER:PASS; set HOUSECHAT_AUTH rather than --auth to keep it out of `ps`.
    auth: str | None = field(default=None, repr=False)
    # How retrieval uses the route (router.policy): `auto` = the filter mode per confidence band
    # chosen on the QA dev split, or `hard`, `soft`, `none` in every band.
    filter_mode: str = "auto"
    # Fuse BM25 keyword hits with the vector hits (core.retrieval): on by the QA dev split, where it
    # raised hit@3 in every filter mode (docs/results/filtering.md).
    hybrid: bool = True
    # Run the `llm` router's decoder with int8 linear layers (router.quantize.quantize_int8): the latency
    # lever of docs/results/router.md, kept on because val accuracy held there. 0 = float32.
    llm_int8: bool = True
    # The sentence encoder for ingest, the router's features and the question vector (core.encoders):
    # `minilm` = sentence-transformers fp32, `minilm-onnx` = the same weights in ONNX Runtime (fp32),
    # `minilm-int8` = ONNX Runtime with int8 weights per channel, `minilm-int8-ffn` = int8 in the
    # feed-forward layers only. The default is the fastest one within 0.5 points of `minilm` on QA dev
    # hit@3 and routing val (docs/results/ingest.md). A store remembers its encoder; switching needs
    # `python -m ingest --rebuild`.
    encoder: str = "minilm-int8"
    # CPU threads for the ONNX encoders (0 = OMP_NUM_THREADS when set, else ONNX Runtime's default).
    encoder_threads: int = 0


def _paths(given: dict[str, object]) -> dict[str, Path]:
    """Every path field: the given ones as `Path`s, the rest derived from `home` (and each other)."""

    def pick(name: str, default: Path) -> Path:
        value = given.get(name)
        return Path(str(value)) if value else default

    home = pick("home", PROJECT_ROOT)
    var = pick("var_dir", home / "var")
    router_model_dir = pick("router_model_dir", home / "models" / "router-llm")
    return {
        "home": home,
        "var_dir": var,
        "store": pick("store", var / "store"),
        "router_model_dir": router_model_dir,
        "embedding_router_dir": pick("embedding_router_dir", home / "models" / "router-embedding"),
        "ensemble_router_dir": pick("ensemble_router_dir", router_model_dir.parent / "router-ensemble"),
        "categories_file": pick("categories_file", home / "data" / "categories.yaml"),
        "notes_dir": pick("notes_dir", home / "data" / "notes"),
        "routing_data_dir": pick("routing_data_dir", home / "data" / "routing"),
        "qa_file": pick("qa_file", home / "data" / "eval" / "qa.jsonl"),
        "reports_dir": pick("reports_dir", home / "reports"),
        "runs_dir": pick("runs_dir", home / "runs"),
    }


def _flag(name: str, raw: str) -> bool:
    """A boolean setting from its environment value (1/0, true/false, yes/no, on/off)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise HousechatError(f"{ENV_PREFIX}{name.upper()}={raw!r}: write 1 or 0 (true/false, on/off)")


def from_env(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from defaults, then `HOUSECHAT_*` variables, then explicit `overrides` (None = not given)."""
    env = os.environ if environ is None else environ
    names = {f.name for f in fields(Settings)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, object] = {}
    kinds = {f.name: f.type for f in fields(Settings)}
    for name in names:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw:
            values[name] = _flag(name, raw) if kinds[name] in (bool, "bool") else _number(name, raw, kinds[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.update(_paths(values))
    if values.get("filter_mode", "auto") not in FILTER_MODES:
        raise HousechatError(
            f"filter mode {values['filter_mode']!r} is not one of {', '.join(FILTER_MODES)} "
            f"(--filter-mode or {ENV_PREFIX}FILTER_MODE)"
        )
    if values.get("encoder", "minilm") not in ENCODERS:
        raise HousechatError(f"encoder {values['encoder']!r} is not one of {', '.join(ENCODERS)} ({ENV_PREFIX}ENCODER)")
    return Settings(**values)  # type: ignore[arg-type]


def _number(name: str, raw: str, kind: object) -> object:
    """An int setting parsed from its environment value; other kinds stay strings."""
    if kind not in (int, "int"):
        return raw
    try:
        return int(raw)
    except ValueError:
        raise HousechatError(f"{ENV_PREFIX}{name.upper()}={raw!r}: write a whole number") from None


def cpu_threads(settings: Settings) -> int:
    """Threads for the ONNX encoders: the setting, else OMP_NUM_THREADS (as torch uses), else 0 (library default)."""
    if settings.encoder_threads > 0:
        return settings.encoder_threads
    raw = os.environ.get("OMP_NUM_THREADS", "")
    return int(raw) if raw.isdigit() else 0
