"""Editable categories end to end: add `solar`, remove `fountain`, assign codes, refuse the old router, refit, route."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.categories import assign_codes, code_for, load_categories
from core.errors import HousechatError

ROOT = Path(__file__).resolve().parent.parent

SOLAR = [
    "how much power did the solar panels make last month?",
    "the inverter for the pv panels shows an error",
    "when were the solar panels cleaned?",
    "is the home battery charging from the roof panels?",
    "what does the solar inverter warranty cover?",
]
OTHERS = {
    "pool": ["when was the pool pump serviced?", "how warm does the pool heater get?", "pool chlorine level"],
    "electrical": ["which breaker feeds the garage?", "the kitchen outlet trips", "who is our electrician?"],
    "garden": ["when should we prune the roses?", "lawn mower service", "which fertiliser for the hedge?"],
}


def edited_categories(path: Path) -> Path:
    """data/categories.yaml without fountain and with a new `solar` entry (no code yet)."""
    text = (ROOT / "data" / "categories.yaml").read_text(encoding="utf-8")
    text = re.sub(r"  - id: fountain\n(?:    .*\n|      .*\n)+", "", text)
    text += "  - id: solar\n    name: Solar panels\n    scope: PV panels, the inverter and the home battery.\n"
    path.write_text(text, encoding="utf-8")
    return path


def test_new_codes_are_opaque_unique_stable_and_skip_unusable(tmp_path) -> None:
    path = edited_categories(tmp_path / "categories.yaml")
    with pytest.raises(
        HousechatError, match=r"\(solar\) has no code — assign one with `python -m finetune categories`"
    ):
        load_categories(path)
    taken = set(load_categories(ROOT / "data" / "categories.yaml").codes)
    text, assigned = assign_codes(path, lambda code: code != code_for("solar", taken, lambda _: True))
    assert list(assigned) == ["solar"] and assigned["solar"] not in taken
    assert assigned["solar"] != code_for("solar", taken, lambda _: True)  # an unusable code is skipped
    again, _ = assign_codes(path, lambda code: code != code_for("solar", taken, lambda _: True))
    assert again == text  # the same file always gets the same code
    path.write_text(text, encoding="utf-8")
    new = load_categories(path)
    old = {c.id: c.code for c in load_categories(ROOT / "data" / "categories.yaml").categories}
    assert "fountain" not in new and all(old[c.id] == c.code for c in new.categories if c.id != "solar")
    assert text.startswith("# The single source")  # comments and layout kept
    assert assign_codes(path, lambda _: True)[1] == {}  # nothing left to assign


@pytest.mark.slow  # SmolLM2 tokenizer, MiniLM, a real Chroma store, fits a head
def test_add_solar_remove_fountain_refuse_refit_route(tmp_path, monkeypatch, capsys, write_note) -> None:
    from core.models import single_token_check
    from core.settings import from_env
    from finetune.cli import main as finetune_main
    from ingest.cli import main as ingest_main
    from router.registry import load_router

    cats = edited_categories(tmp_path / "categories.yaml")
    routing, notes, store = tmp_path / "routing", tmp_path / "notes", tmp_path / "store"
    routing.mkdir()
    rows = [(q, "solar") for q in SOLAR] + [(q, c) for c, qs in OTHERS.items() for q in qs]
    train = [r for i, r in enumerate(rows) if i % 3]
    val = [r for i, r in enumerate(rows) if not i % 3]
    for name, split in (("train", train), ("val", val)):
        (routing / f"{name}.jsonl").write_text(
            "".join(json.dumps({"question": q, "category": c}) + "\n" for q, c in split)
        )
    env = {
        "CATEGORIES_FILE": cats,
        "ROUTING_DATA_DIR": routing,
        "NOTES_DIR": notes,
        "STORE": store,
        "VAR_DIR": ROOT / "var",  # the converted SmolLM2 tokenizer is cached there
        "REPORTS_DIR": tmp_path / "reports",
        "EMBEDDING_ROUTER_DIR": ROOT / "models" / "router-embedding",  # the committed head: old categories
    }
    for key, value in env.items():
        monkeypatch.setenv(f"HOUSECHAT_{key}", str(value))

    # 1. The command assigns solar's code, shows the diff and rewrites the file.
    assert finetune_main(["categories"]) == 0
    diff = capsys.readouterr().out
    code = load_categories(cats).by_id("solar").code
    assert f"+    code: {code}" in diff and "fountain" not in load_categories(cats)
    assert single_token_check(ROOT / "var")(code)

    # 2. Ingest takes a solar note and refuses a fountain one.
    write_note(notes, "solar-inverter", "solar", "The SolarEdge inverter in the garage logs the panels' output.")
    assert ingest_main([str(notes)]) == 0
    write_note(tmp_path / "old", "fountain-pump", "fountain", "The fountain pump is cleaned every spring.")
    assert ingest_main(["--check", str(tmp_path / "old")]) == 1
    assert "fountain" in capsys.readouterr().err

    # 3. The old router refuses and names the command that refits it.
    with pytest.raises(HousechatError, match=r"other categories .* remake it with `python -m finetune embedding`"):
        load_router("embedding", from_env(), fallback=False)

    # 4. Refit on the new categories, then route a solar question.
    out = tmp_path / "router-embedding"
    assert finetune_main(["embedding", "--no-notes", "--no-vote", "--output-dir", str(out)]) == 0
    assert [c["id"] for c in json.loads((out / "meta.json").read_text())["categories"]][-1] == "solar"
    monkeypatch.setenv("HOUSECHAT_EMBEDDING_ROUTER_DIR", str(out))
    router = load_router("embedding", from_env(), fallback=False).router
    route = router.route("the solar panels inverter is blinking red")
    assert route.category == "solar" and route.code == code


@pytest.fixture
def new_categories(tmp_path) -> Path:
    """The edited categories file (solar added, fountain removed) with solar's code assigned."""
    path = edited_categories(tmp_path / "categories.yaml")
    path.write_text(assign_codes(path, lambda _: True)[0], encoding="utf-8")
    return path


def _adapted_head_of_old_categories(settings) -> None:
    """A base head on the new categories and an adapted head, current for the (empty) store, still on the old ones."""
    import shutil

    from core.store import open_store
    from router.adapt import adapted_dir, store_fingerprint
    from router.meta import label_meta, read_meta, write_meta

    committed = ROOT / "models" / "router-embedding"
    base, adapted = settings.embedding_router_dir, adapted_dir(settings)
    for folder in (base, adapted):
        shutil.copytree(committed, folder, ignore=shutil.ignore_patterns("questions.npz"))
    meta = read_meta(committed)
    write_meta(base, {**meta, **label_meta(load_categories(settings.categories_file))})
    store = open_store(settings, create=True)
    write_meta(
        adapted,
        {**meta, "adapted_from": {"created": meta["created"]}, "store": {"fingerprint": store_fingerprint(store)}},
    )


@pytest.mark.parametrize(
    ("backend", "command"),
    [
        ("embedding", "python -m finetune embedding"),
        ("llm", "python -m finetune RECIPE.yaml --install"),
        ("ensemble", "python -m finetune ensemble"),
        ("ollama", "python -m finetune RECIPE.yaml && python -m finetune export runs/RECIPE --ollama"),
        pytest.param("adapted", "python -m finetune embedding", marks=pytest.mark.slow),  # opens a Chroma store
    ],
)
def test_every_router_refuses_other_categories_and_names_its_refit(
    backend, command, new_categories, tmp_path, ollama_fake
) -> None:
    from core.settings import from_env
    from router.meta import stale_routers
    from router.ollama_router import CATEGORIES_KEY
    from router.registry import load_router

    models = ROOT / "models"
    settings = from_env(
        {},
        categories_file=new_categories,
        router_model_dir=models / "router-llm",
        embedding_router_dir=models / "router-embedding",
        ensemble_router_dir=models / "router-ensemble",
        ollama_host=ollama_fake.url,
        var_dir=tmp_path / "var",
        store=tmp_path / "store",
    )
    labels = load_categories(new_categories)
    old = load_categories(ROOT / "data" / "categories.yaml")
    ollama_fake.models = [settings.ollama_router_model]
    ollama_fake.model_info = {CATEGORIES_KEY: json.dumps([[c.id, c.code] for c in old.categories])}
    assert set(stale_routers(settings, labels)) == {"embedding", "llm", "ensemble"}
    if backend == "adapted":
        settings = from_env({}, **{**vars(settings), "embedding_router_dir": tmp_path / "base"})
        _adapted_head_of_old_categories(settings)
        router = load_router("embedding", settings, labels, fallback=False).router  # the base is on the new ones
        with pytest.raises(HousechatError, match=rf"other categories than {re.escape(str(new_categories))}"):
            router.route("the solar inverter is blinking")  # the store's adapted head is not
        return
    with pytest.raises(HousechatError) as refused:
        load_router(backend, settings, labels, fallback=False)
    message = str(refused.value)
    assert "other categories" in message and f"`{command}" in message and "('solar'," in message
    # The fallback chain answers instead and says why.
    if backend != "embedding":
        route = load_router(backend, settings, labels).router.route("x")
        assert route.backend == "off" and f"`{command}" in (route.fallback_reason or "")
    # A served model exported with these very categories is taken.
    if backend == "ollama":
        ollama_fake.model_info = {CATEGORIES_KEY: json.dumps([[c.id, c.code] for c in labels.categories])}
        assert load_router("ollama", settings, labels, fallback=False).name == "ollama"
