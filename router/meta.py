"""meta.json: the provenance every router artifact carries, and the check loaders run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.categories import LabelSet
from core.errors import HousechatError
from core.settings import Settings

# The command that makes (or remakes) each kind of router artifact, said in every "missing" or
# "trained on other categories" message so the fix fits the router at hand.
MAKE_LLM = "python -m finetune RECIPE.yaml --install"
MAKE_EMBEDDING = "python -m finetune embedding"
MAKE_ENSEMBLE = "python -m finetune ensemble"
MAKE_OLLAMA = "python -m finetune RECIPE.yaml && python -m finetune export runs/RECIPE --ollama"


def read_meta(model_dir: Path, make: str = MAKE_LLM) -> dict[str, Any]:
    """The model's meta.json; `make` is the command that creates one (said when it is missing)."""
    path = Path(model_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HousechatError(f"{path}: no router model here — make one with `{make}`") from None
    except json.JSONDecodeError as exc:
        raise HousechatError(
            f"{path}:{exc.lineno}: invalid JSON — restore the file or remake it with `{make}`"
        ) from None
    if not isinstance(meta, dict):
        raise HousechatError(f"{path}:1: meta.json must be an object — remake it with `{make}`")
    return meta


def check_labels(meta: dict[str, Any], labels: LabelSet, where: Path, make: str) -> None:
    """Refuse a model trained on another label set: its scores would mean other categories."""
    trained = meta.get("categories_hash")
    if trained != labels.fingerprint():
        theirs = {c["id"]: c["code"] for c in meta.get("categories", [])}
        ours = {c.id: c.code for c in labels.categories}
        diff = sorted(set(theirs.items()) ^ set(ours.items()))
        raise HousechatError(
            f"{where}/meta.json: this router was trained on other categories than {labels.source} "
            f"(differences: {diff[:6]}) — remake it with `{make}`, or point "
            "HOUSECHAT_CATEGORIES_FILE at the categories it was trained on"
        )


def stale_routers(settings: Settings, labels: LabelSet) -> dict[str, tuple[Path, str]]:
    """The router artifacts on disk trained on other categories than `labels`: {name: (folder, refit command)}.

    In refit order: the ensemble mixes the other two, so it comes last. A folder without a
    meta.json is not listed (nothing to refit there).
    """
    found = {}
    for name, folder, make in (
        ("embedding", settings.embedding_router_dir, MAKE_EMBEDDING),
        ("llm", settings.router_model_dir, MAKE_LLM),
        ("ensemble", settings.ensemble_router_dir, f"{MAKE_ENSEMBLE} (after the llm and embedding refits)"),
    ):
        path = Path(folder) / "meta.json"
        if not path.exists():
            continue
        try:
            check_labels(read_meta(folder, make), labels, Path(folder), make)
        except HousechatError:
            found[name] = (Path(folder), make)
    return found


def write_meta(model_dir: Path, meta: dict[str, Any]) -> None:
    path = Path(model_dir) / "meta.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def label_meta(labels: LabelSet) -> dict[str, Any]:
    return {"categories": labels.to_json(), "categories_hash": labels.fingerprint()}


def labels_from_meta(meta: dict[str, Any], source: str) -> LabelSet:
    """The label set a model was trained on (for external data sets such as BANKING77)."""
    from core.categories import Category

    cats = tuple(
        Category(c["id"], c["code"], c.get("name", c["id"]), c.get("name", c["id"])) for c in meta["categories"]
    )
    return LabelSet(cats, source=source)
