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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import HousechatError

ASSIGN_CODES = "python -m finetune categories"
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

        near = difflib.get_close_matches(wrong.lower(), self.ids, n=1, cutoff=0.6)  # not fountain → flooring
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
        if isinstance(entry, dict) and "id" in entry and "code" not in entry:
            raise HousechatError(
                f"{where} ({entry['id']}) has no code — assign one with `{ASSIGN_CODES}` (it rewrites the file)"
            )
        if not isinstance(entry, dict) or not {"id", "code", "name", "scope"} <= entry.keys():
            raise HousechatError(f"{where}: needs id, code, name and scope — add the missing keys")
        cid, code = str(entry["id"]), str(entry["code"])
        if not ID_RE.match(cid):
            raise HousechatError(f"{where}: id {cid!r} must be lowercase letters, digits, underscores")
        if not CODE_RE.match(code):
            raise HousechatError(f"{where}: code {code!r} must be two uppercase letters")
        cats.append(Category(cid, code, str(entry["name"]), " ".join(str(entry["scope"]).split())))
    return LabelSet(tuple(cats), source=str(path))


def label_set_from_ids(ids: list[str], source: str = "<data>", usable: Callable[[str], bool] | None = None) -> LabelSet:
    """A label set for external data: ids as given (sorted), codes AA, AB, ... in order.

    `usable` skips codes a base model's tokenizer cannot take as one token (an LLM router reads a
    single-token code from one logit).
    """
    unique = sorted(set(ids))
    letters = string.ascii_uppercase
    pairs = ("".join(p) for p in itertools.product(letters, repeat=2))
    codes = (c for c in pairs if usable is None or usable(c))
    try:
        cats = tuple(Category(i, next(codes), i.replace("_", " "), i.replace("_", " ")) for i in unique)
    except (StopIteration, RuntimeError):
        raise HousechatError(f"{source}: {len(unique)} labels, more than the usable two-letter codes") from None
    return LabelSet(cats, source=source)


def code_for(category_id: str, taken: set[str], usable: Callable[[str], bool]) -> str:
    """An opaque code for a new id: the first free, `usable` one in an order seeded by the id.

    Seeded by the id (not drawn from its letters), so the code carries no name prior and the same
    file always gets the same codes.
    """
    import random

    seed = int(hashlib.sha256(category_id.encode()).hexdigest()[:8], 16)
    codes = ["".join(p) for p in itertools.product(string.ascii_uppercase, repeat=2)]
    random.Random(seed).shuffle(codes)
    for code in codes:
        if code not in taken and usable(code):
            return code
    raise HousechatError(f"no free two-letter code left for {category_id!r} — remove a category first")


def assign_codes(path: Path, usable: Callable[[str], bool]) -> tuple[str, dict[str, str]]:
    """The categories file's text with a `code:` line added to every entry that has none.

    Existing codes never change (a router trained on them stays valid for those ids); a new entry
    without `name`/`scope` gets them from its id. The file's comments and layout are kept: lines
    are inserted, nothing is re-dumped. Returns the new text and {id: assigned code}.
    """
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    entries = raw.get("categories") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise HousechatError(f"{path}:1: no 'categories' list — see data/categories.yaml for the layout")
    taken = {str(e["code"]) for e in entries if isinstance(e, dict) and "code" in e}
    lines = text.splitlines(keepends=True)
    assigned: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "code" in entry or "id" not in entry:
            continue
        cid = str(entry["id"])
        code = code_for(cid, taken, usable)
        taken.add(code)
        assigned[cid] = code
        at = next((n for n, line in enumerate(lines) if re.match(rf"^\s*- id:\s*{re.escape(cid)}\s*$", line)), None)
        if at is None:
            raise HousechatError(f"{path}: write the entry for {cid!r} in block style (`- id: {cid}` on its own line)")
        lines[at] = lines[at].rstrip("\n") + "\n"
        indent = " " * (len(lines[at]) - len(lines[at].lstrip()) + 2)
        new = [f"{indent}code: {code}\n"]
        if "name" not in entry:
            new.append(f"{indent}name: {cid.replace('_', ' ').capitalize()}\n")
        if "scope" not in entry:
            new.append(f"{indent}scope: {cid.replace('_', ' ')}\n")
        lines[at + 1 : at + 1] = new
    return "".join(lines), assigned
