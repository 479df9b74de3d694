"""Shared fixtures. Several people add here: append, keep each fixture self-contained."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshot",
        type=Path,
        default=None,
        help="where the browser test saves its screenshot (default a temp dir; `make screenshot` refreshes docs/)",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on 127.0.0.1 (its URL); tests share it, so use unique collection names."""
    exe = Path(sys.executable).parent / "chroma"
    if not exe.exists():
        pytest.skip(f"{exe} not found — install chromadb in the venv")
    data = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"chroma server did not start: {(data / 'server.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def write_note() -> Callable[..., Path]:
    """`write_note(folder, note_id, category, body, title=..., **fields) -> Path`: a house note file."""

    def write(folder: Path, note_id: str, category: str, body: str, title: str | None = None, **fields: str) -> Path:
        front = {"id": note_id, "category": category, "title": title or note_id.replace("-", " "), **fields}
        lines = ["---", *(f"{key}: {value}" for key, value in front.items()), "---", body.strip(), ""]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{note_id}.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    return write


@pytest.fixture
def ollama_fake() -> Iterator[Any]:
    """A loopback server speaking Ollama's HTTP API (tests/ollama_fake.py) that serves `qwen3:4b-instruct`.

    Point a client at `ollama_fake.url`; set `.models`, `.reply` or `.choose` to shape answers, read
    `.chats()` for what clients sent, call `.stop()` to take it down.
    """
    from ollama_fake import OllamaFake

    with OllamaFake() as fake:
        yield fake
