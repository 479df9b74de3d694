"""The label set: category ids, their opaque codes, display names and scopes.

`data/categories.yaml` is the single source for the house categories. External intent data
(e.g. BANKING77) gets a `LabelSet` built from its label names with codes assigned automatically.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

from core.errors import HousechatError

CODE_RE = re.compile(r"^[A-Z]{2}$")
ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Category:
    id: str
    code: str
    name: str
    scope: str


@dataclass(frozen=True)
class LabelSet:
    """An ordered, validated set of categories. Order is the order of score vectors."""

    categories: tuple[Category, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        codes = [c.code for c in self.categories]
        if not ids:
            raise HousechatError(f"{self.source}: no categories — add at least two")
        for seen, what in ((ids, "id"), (codes, "code")):
            dupes = sorted({x for x in seen if seen.count(x) > 1})
            if dupes:
                raise HousechatError(f"{self.source}: duplicate category {what} {dupes} — make each unique")

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.categories]

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.categories]

    def __len__(self) -> int:
        return len(self.categories)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self.ids

    def by_id(self, category_id: str) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise HousechatError(f"unknown category {category_id!r} — {self.suggest(category_id)}")

    def suggest(self, wrong: str) -> str:
        """A fix hint for an unknown id: the nearest valid id, then the full list."""
        import difflib

        near = difflib.get_close_matches(wrong.lower(), self.ids, n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return f"{hint}valid ids: {', '.join(self.ids)}"

    def labels(self, label_format: str) -> list[str]:
        """The strings the router emits: opaque codes, or the category ids as words."""
        if label_format == "codes":
            return self.codes
        if label_format == "names":
            return self.ids
        raise HousechatError(f"unknown label format {label_format!r} — use 'codes' or 'names'")

    def fingerprint(self) -> str:
        """A hash of ids and codes: an adapter trained on another label set is refused."""
        payload = json.dumps([[c.id, c.code] for c in self.categories])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_json(self) -> list[dict[str, str]]:
        return [{"id": c.id, "code": c.code, "name": c.name} for c in self.categories]


def load_categories(path: Path) -> LabelSet:
    """Read and validate a categories YAML file (see data/categories.yaml)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HousechatError(f"{path}: categories file not found — set HOUSECHAT_CATEGORIES_FILE") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", -1) + 1
        raise HousechatError(f"{path}:{line}: invalid YAML — fix the syntax ({exc})") from None
    entries = raw.get("categories") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise HousechatError(f"{path}:1: no 'categories' list — see data/categories.yaml for the layout")
    cats = []
    for i, entry in enumerate(entries):
        where = f"{path}: category #{i + 1}"
        if not isinstance(entry, dict) or not {"id", "code", "name", "scope"} <= entry.keys():
            raise HousechatError(f"{where}: needs id, code, name and scope — add the missing keys")
        cid, code = str(entry["id"]), str(entry["code"])
        if not ID_RE.match(cid):
            raise HousechatError(f"{where}: id {cid!r} must be lowercase letters, digits, underscores")
        if not CODE_RE.match(code):
            raise HousechatError(f"{where}: code {code!r} must be two uppercase letters")
        cats.append(Category(cid, code, str(entry["name"]), " ".join(str(entry["scope"]).split())))
    return LabelSet(tuple(cats), source=str(path))


def label_set_from_ids(ids: list[str], source: str = "<data>") -> LabelSet:
    """A label set for external data: ids as given (sorted), codes AA, AB, ... in order."""
    unique = sorted(set(ids))
    letters = string.ascii_uppercase
    codes = ("".join(p) for p in itertools.product(letters, repeat=2))
    cats = tuple(Category(i, next(codes), i.replace("_", " "), i.replace("_", " ")) for i in unique)
    return LabelSet(cats, source=source)
