"""The chat app: the pipeline with the embedded models, the Ollama path through ChatOllama (against
tests/ollama_fake.py over HTTP), the Gradio app driven by gradio_client, and a headless Chromium
that looks at the page and takes a screenshot (in a temp dir; `make screenshot` refreshes
docs/screenshot.png)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from ollama_fake import OllamaFake

from app import cli
from app.chain import load_answerer
from app.pipeline import Pipeline
from app.ui import badge_details, normalize_history, serve, status_markdown
from core.errors import HousechatError
from core.settings import ENV_PREFIX, PROJECT_ROOT, Settings, from_env

NOTES = [
    "water_heater-flush-2024",
    "water_heater-anode-2023",
    "pool-pump-schedule",
    "pool-heater-service-2024",
    "electrical-garage-subpanel",
    "electrical-panel-breaker-map",
    "hvac-air-filters",
]
FLUSH = "When was the water heater last flushed?"
BREAKER = "Which breaker feeds the garage subpanel?"
CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cite_first_note(request: dict[str, Any]) -> str:
    """The fake answer model's reply: names the question and cites the first note in the prompt."""
    prompt = request["messages"][-1]["content"]
    note_ids = re.findall(r"^\[([\w-]+)\]", prompt, flags=re.MULTILINE)
    question = prompt.rsplit("Question:", 1)[-1].strip()
    return f"About “{question}”: see [{note_ids[0]}]." if note_ids else "The notes do not say."


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> None:
    """This machine is shared with training runs: one intra-op thread beats two fighting for the cores."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_housechat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads HOUSECHAT_* variables; tests pass everything explicitly."""
    for f in fields(Settings):
        monkeypatch.delenv(ENV_PREFIX + f.name.upper(), raising=False)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store of real house notes, filled the way `make chat` fills an empty one (`python -m ingest`)."""
    root = tmp_path_factory.mktemp("app")
    notes = root / "notes"
    notes.mkdir()
    for note_id in NOTES:
        shutil.copy(PROJECT_ROOT / "data" / "notes" / f"{note_id}.md", notes)
    cli.ingest_if_empty(from_env(environ={}, store=root / "store", notes_dir=notes))
    return root / "store"


@pytest.fixture(scope="module")
def settings_for(store_dir: Path) -> Callable[..., Settings]:
    """Settings on the test store; the Ollama host defaults to a port where nothing listens."""

    def make(**overrides: Any) -> Settings:
        values = {"store": store_dir, "ollama_host": f"http://127.0.0.1:{_free_port()}", **overrides}
        return from_env(environ={}, **values)

    return make


# -- the command line ---------------------------------------------------------------------------


def test_help_imports_nothing_heavy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "ask" in capsys.readouterr().out
    assert cli.main(["ask", "--help"]) == 0
    assert "--router" in capsys.readouterr().out
    assert cli.main(["--auth", "no-colon"]) == 2
    probe = "import sys; from app import cli; cli.make_parser(); print([m for m in ('gradio', 'langchain_core', 'torch', 'chromadb') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_empty_store_says_how_to_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ask", FLUSH, "--store", str(tmp_path / "none")]) == 1
    assert "python -m ingest" in capsys.readouterr().err


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_ingest_if_empty_leaves_a_filled_store_alone(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"ingest ran on a filled store: {args}")

    monkeypatch.setattr(cli.subprocess, "run", no_subprocess)
    cli.ingest_if_empty(from_env(environ={}, store=store_dir, notes_dir=PROJECT_ROOT / "data" / "notes"))


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_ask_json_through_ollama(
    store_dir: Path, ollama_fake: OllamaFake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ollama_fake.reply = cite_first_note
    monkeypatch.setenv("HOUSECHAT_OLLAMA_HOST", ollama_fake.url)
    assert cli.main(["ask", FLUSH, "--json", "--store", str(store_dir), "--router-backend", "embedding"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"answer", "answerer", "route", "sources"}
    assert doc["answerer"] == "ollama:qwen3:4b-instruct"
    assert doc["answer"] == f"About “{FLUSH}”: see [water_heater-flush-2024]."
    route = doc["route"]
    assert set(route) == {"category", "confidence", "backend", "latency_ms", "filter", "filter_mode", "widened"}
    assert route["category"] == "water_heater" and route["backend"] == "embedding"
    assert 0 < route["confidence"] <= 1 and route["latency_ms"] >= 0 and route["widened"] is False
    assert route["filter"] in ({"category": "water_heater"}, {"category": {"$in": ["water_heater", "hvac"]}})
    assert doc["sources"][0]["note_id"] == "water_heater-flush-2024"
    assert all(set(s) == {"note_id", "category", "title", "score", "path"} for s in doc["sources"])
    assert {s["category"] for s in doc["sources"]} <= {"water_heater", "hvac"}

    # What ChatOllama sent: thinking off, temperature 0, streamed, the rules first, the notes with the question.
    sent = ollama_fake.chats()[-1]
    assert sent["model"] == "qwen3:4b-instruct" and sent["stream"] is True and sent["think"] is False
    assert sent["options"]["temperature"] == 0
    system, user = sent["messages"][0], sent["messages"][-1]
    assert system["role"] == "system" and "cite" in system["content"] and "do not say" in system["content"]
    assert user["content"].startswith("Notes:") and "[water_heater-flush-2024]" in user["content"]
    assert user["content"].endswith(f"Question: {FLUSH}")

    assert cli.main(["ask", FLUSH, "--json", "--router", "off", "--store", str(store_dir)]) == 0
    off = json.loads(capsys.readouterr().out)["route"]
    assert (off["category"], off["backend"], off["filter"], off["confidence"]) == (None, "off", None, 0.0)
    assert off["filter_mode"] == "none"

    # The soft filter (and the hybrid switch): the same route ranks its category up, nothing is excluded.
    argv = ["ask", FLUSH, "--json", "--store", str(store_dir), "--filter-mode", "soft", "--hybrid", "on"]
    assert cli.main(argv) == 0
    soft = json.loads(capsys.readouterr().out)
    assert soft["route"]["filter_mode"] == "soft" and soft["route"]["widened"] is False
    assert soft["route"]["filter"] == route["filter"]
    assert soft["sources"][0]["note_id"] == "water_heater-flush-2024"


# -- the answerers ------------------------------------------------------------------------------


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_ollama_answer_streams_in_pieces(settings_for: Callable[..., Settings], ollama_fake: OllamaFake) -> None:
    ollama_fake.reply = cite_first_note
    pipeline = Pipeline.load(settings_for(ollama_host=ollama_fake.url, router_backend="embedding"))
    snapshots = [(answer.text, answer.done) for answer in pipeline.stream(BREAKER)]
    assert snapshots[0] == ("", False)  # route and sources come before any text
    assert len({text for text, _ in snapshots}) > 4  # the text grew piece by piece
    assert snapshots[-1] == (f"About “{BREAKER}”: see [electrical-garage-subpanel].", True)


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_ollama_down_or_model_missing_falls_back_with_a_banner(
    settings_for: Callable[..., Settings], ollama_fake: OllamaFake, capsys: pytest.CaptureFixture[str]
) -> None:
    down = load_answerer(settings_for())
    assert down.name == "embedded" and down.note is not None
    assert "not reachable" in down.note and "ollama serve" in down.note

    ollama_fake.models = ["llama3.2:3b"]
    missing = load_answerer(settings_for(ollama_host=ollama_fake.url))
    assert missing.name == "embedded" and "ollama pull qwen3:4b-instruct" in str(missing.note)

    with pytest.raises(HousechatError, match="ollama pull qwen3:4b-instruct"):
        load_answerer(settings_for(ollama_host=ollama_fake.url, answerer="ollama"))

    pipeline = Pipeline.load(settings_for(router_backend="embedding"))
    banner = status_markdown(pipeline.status())
    assert "small embedded SmolLM2-135M fallback" in banner and "ollama serve" in banner
    assert "7 notes" in banner


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_pipeline_end_to_end_with_embedded_models(settings_for: Callable[..., Settings]) -> None:
    """The default router (embedding) → filter → Chroma → SmolLM2."""
    pipeline = Pipeline.load(settings_for(answerer="embedded"))
    texts, answer = [], None
    for answer in pipeline.stream(FLUSH):
        texts.append(answer.text)
    assert answer is not None and answer.done and answer.text
    assert texts[0] == "" and len(set(texts)) > 2  # streamed
    assert answer.answerer.name == "embedded" and answer.answerer.note is None
    assert answer.route.category == "water_heater" and answer.route.backend == "embedding"
    assert answer.where is not None and "water_heater" in json.dumps(answer.where)
    assert answer.sources[0].note_id == "water_heater-flush-2024"
    assert set(answer.timings) == {"route", "retrieve", "first_token", "answer", "total"}


@pytest.mark.slow  # ingests real notes into a store (python -m ingest)
def test_ollama_going_away_hands_the_question_to_the_embedded_model(
    settings_for: Callable[..., Settings], ollama_fake: OllamaFake
) -> None:
    pipeline = Pipeline.load(settings_for(ollama_host=ollama_fake.url, router_backend="embedding"), max_new_tokens=16)
    assert pipeline.answerer.name == "ollama" and pipeline.answerer.fallback is not None
    ollama_fake.stop()
    answer = pipeline.ask(FLUSH)
    assert answer.answerer.name == "embedded" and answer.text
    note = str(answer.answerer.note)
    assert "Ollama qwen3:4b-instruct failed" in note and "ollama serve" in note
    assert "Why not Ollama" in badge_details(answer)


# -- the Gradio app, driven by gradio_client ------------------------------------------------------


@pytest.fixture(scope="module")
def ollama_app(settings_for: Callable[..., Settings]) -> Iterator[tuple[str, OllamaFake]]:
    """The UI answering through ChatOllama and the Ollama fake: (url, fake)."""
    fake = OllamaFake(reply=cite_first_note)
    pipeline = Pipeline.load(settings_for(ollama_host=fake.url, router_backend="embedding"))
    port = _free_port()
    demo = serve(pipeline, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", fake
    finally:
        demo.close()
        fake.stop()


def _client(url: str) -> Any:
    from gradio_client import Client

    return Client(url, verbose=False)


def _titles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["metadata"]["title"] for m in messages if m.get("metadata")]


@pytest.mark.slow  # a Gradio server
def test_ui_router_on_and_off(ollama_app: tuple[str, OllamaFake]) -> None:
    url, _ = ollama_app
    on = _client(url).predict(FLUSH, "on", "embedding", api_name="/chat")
    assert on[0] == {"role": "assistant", "content": f"About “{FLUSH}”: see [water_heater-flush-2024]."}
    badge, *sources = _titles(on)
    assert badge.startswith("Route: water_heater · ") and "% · embedding · " in badge and " ms" in badge
    assert sources[0].startswith("Source: Annual water heater flush, October 2024 · water_heater · 2024-10-12 · score ")
    assert "[water_heater-flush-2024]" in on[2]["content"]

    off = _client(url).predict(FLUSH, "off", "embedding", api_name="/chat")
    assert _titles(off)[0].startswith("Route: router off")
    assert len(_titles(off)) > 1  # sources are shown with the router off too


@pytest.mark.slow  # a Gradio server
def test_ui_follow_up_sends_the_history(ollama_app: tuple[str, OllamaFake]) -> None:
    url, fake = ollama_app
    client = _client(url)
    first = client.predict(FLUSH, "on", "embedding", api_name="/chat")
    client.predict("And who did it?", "on", "embedding", api_name="/chat")
    messages = fake.chats()[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == FLUSH and messages[2]["content"] == first[0]["content"]  # no badge, no sources
    assert "[water_heater-flush-2024]" in messages[3]["content"]  # the follow-up found the same note


@pytest.mark.slow  # a Gradio server
def test_ui_sessions_do_not_share_histories(ollama_app: tuple[str, OllamaFake]) -> None:
    url, fake = ollama_app
    anna, ben = _client(url), _client(url)
    asks = {anna: [FLUSH, "Anna asks: and the year before?"], ben: [BREAKER, "Ben asks: and the amps?"]}
    with ThreadPoolExecutor(2) as pool:
        for turn in range(2):  # both users at once, twice
            jobs = [pool.submit(c.predict, asks[c][turn], "on", "embedding", api_name="/chat") for c in (anna, ben)]
            assert all(job.result()[0]["content"].startswith("About") for job in jobs)
    for client, other in ((anna, ben), (ben, anna)):
        follow_up = next(c for c in fake.chats() if asks[client][1] in c["messages"][-1]["content"])
        history = [m["content"] for m in follow_up["messages"][1:-1]]
        assert history[0] == asks[client][0] and not any(asks[other][0] in text for text in history)


@pytest.mark.slow  # a Gradio server
def test_ui_compare_and_status(ollama_app: tuple[str, OllamaFake]) -> None:
    url, _ = ollama_app
    client = _client(url)
    off, on = client.predict(BREAKER, "embedding", api_name="/compare")
    assert _titles(off)[0].startswith("Route: router off") and _titles(on)[0].startswith("Route: electrical · ")
    assert off[0]["content"][0]["text"] == BREAKER == on[0]["content"][0]["text"]
    status = client.predict(api_name="/status")
    assert status.startswith("**Answer model:** Ollama qwen3:4b-instruct") and "7 notes, " in status


def test_history_shapes_from_browser_and_client_agree() -> None:
    browser = [
        {"role": "user", "metadata": None, "content": [{"type": "text", "text": FLUSH}], "options": None},
        {"role": "assistant", "metadata": None, "content": [{"type": "text", "text": "In October 2024."}]},
        {
            "role": "assistant",
            "metadata": {"title": "Route: water_heater"},
            "content": [{"type": "text", "text": "..."}],
        },
    ]
    client = [
        {"role": "user", "content": FLUSH},
        {"role": "assistant", "content": "In October 2024."},
        {"role": "assistant", "content": "...", "metadata": {"title": "Source: a source"}},
    ]
    pairs = [[FLUSH, "In October 2024."]]
    expected = [("user", FLUSH), ("assistant", "In October 2024.")]
    assert normalize_history(browser) == normalize_history(client) == normalize_history(pairs) == expected


# -- what a person sees: the embedded defaults in a headless Chromium -----------------------------


@pytest.fixture(scope="module")
def embedded_app(settings_for: Callable[..., Settings]) -> Iterator[str]:
    """The UI as `make chat` brings it up on a machine without Ollama: the embedded answerer, a banner."""
    pipeline = Pipeline.load(settings_for())
    port = _free_port()
    demo = serve(pipeline, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.mark.slow  # a Gradio server and headless Chromium
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing — `apt-get install -y chromium` to run the browser test"
)
def test_browser_shows_answer_badge_and_sources(embedded_app: str, tmp_path: Path, pytestconfig: pytest.Config) -> None:
    from playwright.sync_api import expect, sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(embedded_app)
            expect(page.get_by_text("small embedded SmolLM2-135M fallback")).to_be_visible(timeout=60_000)
            box = page.get_by_placeholder("Type a message...")
            box.fill(FLUSH)
            box.press("Enter")
            badge = page.get_by_text("answered by SmolLM2-135M in", exact=False)  # the badge once the answer is done
            expect(badge).to_be_visible(timeout=120_000)
            expect(badge).to_contain_text("Route: water_heater · ")
            source = page.get_by_text("Source: Annual water heater flush, October 2024 · water_heater", exact=False)
            expect(source).to_be_visible()
            expect(page.locator("[data-testid='bot']").first).not_to_be_empty()  # the answer text
            source.click()  # open it: the snippet and the note id
            expect(page.locator("code", has_text="[water_heater-flush-2024]")).to_be_visible()
            page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")  # fully open
            screenshot = pytestconfig.getoption("screenshot") or tmp_path / "screenshot.png"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
