"""Errors instead of tracebacks: a Chroma server killed mid-ingest, bad arguments, oversized questions,
and the UI login from the environment. Each case is one `error:` line and the conventional exit code
(1 data or user error, 2 usage), reached before any model loads where the case allows."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app import cli as app_cli
from app.pipeline import Pipeline
from app.ui import respond
from core.schemas import MAX_QUESTION_CHARS
from core.settings import ENV_PREFIX, PROJECT_ROOT, Settings, from_env
from eval import cli as eval_cli
from ingest import cli as ingest_cli

WriteNote = Callable[..., Path]


@pytest.fixture(autouse=True)
def no_housechat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLIs read HOUSECHAT_* variables; tests pass everything explicitly."""
    for f in fields(Settings):
        monkeypatch.delenv(ENV_PREFIX + f.name.upper(), raising=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def one_error_line(err: str) -> str:
    """The single `error:` line a command printed on stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- 9. the Chroma server goes away in the middle of an ingest ------------------------------------


def start_chroma(path: Path, port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "chroma"
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("chroma server did not start")
            time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.slow  # brings up a Chroma server twice
def test_a_chroma_server_killed_mid_ingest_is_one_error_and_the_rerun_converges(
    tmp_path: Path, write_note: WriteNote, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.store import NoteStore, open_store
    from ingest import pipeline

    notes = tmp_path / "notes"
    for i in range(4):
        write_note(notes, f"pool-note-{i}", "pool", f"## Pump\n\nThe pool pump note number {i} says it runs {i} hours.")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_chroma(tmp_path / "db", port)
    try:
        settings = from_env(environ={}, chroma_url=url)
        reader = open_store(settings)  # the app's store, opened while the server was up
        monkeypatch.setattr(pipeline, "GROUP_CHUNKS", 1)  # one note per committed group
        write_notes = NoteStore.write_notes

        def write_then_kill(self: NoteStore, versions: Any) -> None:
            write_notes(self, versions)
            stop(server)  # killed after the first note is committed

        monkeypatch.setattr(NoteStore, "write_notes", write_then_kill)
        assert ingest_cli.main([str(notes), "--chroma-url", url]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: the note store at {url} is unreachable")
        assert "start the Chroma server again" in line and "re-run" in line

        # The UI says the store is unreachable instead of a bare error.
        app = Pipeline(settings, reader, None, None)  # type: ignore[arg-type]  # not reached: fails at the store
        [message] = list(respond(app, "when does the pool pump run?", [], "off", "embedding"))[-1]
        assert message["content"].startswith(f"**Error:** the note store at {url} is unreachable")

        monkeypatch.setattr(NoteStore, "write_notes", write_notes)
        server = start_chroma(tmp_path / "db", port)
        assert ingest_cli.main([str(notes), "--chroma-url", url]) == 0
        capsys.readouterr()
        assert open_store(settings, create=False).note_ids() == [f"pool-note-{i}" for i in range(4)]
    finally:
        stop(server)


# -- 10. bad arguments and bad files -----------------------------------------------------------------


def test_app_ask_with_invalid_utf8_bytes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    args = [sys.executable.encode(), b"-m", b"app", b"ask", b"caf\xe9 breaker?", b"--store", str(tmp_path).encode()]
    done = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, env=env, check=False)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1
    assert one_error_line(err) == (
        "error: the question is not valid UTF-8 text — type it again (or set the terminal to UTF-8)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["answers", "--k", "0"],
        ["answers", "--k", "-1"],
        ["answers", "--k", "five"],
        ["answers", "--limit", "-1"],
        ["routing", "--limit", "-1"],
    ],
)
def test_eval_bad_numbers_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert eval_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {argv[1]}:" in err and "Traceback" not in err


def _routing_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Test files that are not usable, and what the one error line says about each."""
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,category\nwhere is the café breaker?,electrical\n".encode("latin-1"))
    huge = tmp_path / "huge.csv"
    huge.write_text("text,category\nok question,pool\n" + "x" * 131_073 + ",pool\n")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"question": "balance?", "category": "banking"}\n{"question": "pin?", "category": "cards"}\n')
    return {
        "latin1": (latin1, f"error: {latin1}:2: not UTF-8 text (byte 0xe9) — save the file as UTF-8"),
        "huge": (huge, f"error: {huge}:3: unreadable CSV (field larger than field limit"),
        "folder": (folder, f"error: {folder}: is a folder, not a file"),
        "unknown": (unknown, f"error: {unknown}: 0 usable questions (0 invalid lines, 2 with a label outside"),
    }


@pytest.mark.parametrize("case", ["latin1", "huge", "folder", "unknown"])
def test_eval_routing_unusable_test_files(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, expected = _routing_files(tmp_path)[case]
    code = eval_cli.main(["routing", "--backends", "embedding", "--test-file", str(path), "--report", str(tmp_path)])
    assert code == 1
    assert one_error_line(capsys.readouterr().err).startswith(expected)


def test_app_bad_port_and_a_port_in_use(tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert app_cli.main(["--port", "70000"]) == 2
    assert "argument --port: '70000' is not a port — use 1..65535" in capsys.readouterr().err
    # The store does not exist: had the models been loaded first, that would be the error.
    assert app_cli.main(["--port", str(busy_port), "--store", str(tmp_path / "none")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert (
        line == f"error: port {busy_port} on 127.0.0.1 is in use — stop what runs there, or pick another with --port N"
    )


# -- 11. questions over the limit ---------------------------------------------------------------------


def test_an_oversized_question_is_refused_before_any_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    question = "why " * (MAX_QUESTION_CHARS // 4 + 1)
    assert app_cli.main(["ask", question, "--store", str(tmp_path / "none")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: the question is 2,003 characters, over the 2,000 limit — ask it in a sentence")
    # The UI: the pipeline refuses it before routing (this one has no router or store to reach).
    app = Pipeline(from_env(environ={}), None, None, None)  # type: ignore[arg-type]
    [message] = list(respond(app, question, [], "on", "embedding"))[-1]
    assert message["content"].startswith("**Error:** the question is 2,003 characters, over the 2,000 limit")


# -- 12. the UI login from the environment, and a warning for an open host without one ----------------


def test_auth_from_the_environment_and_the_open_host_warning(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.ui

    served: list[Any] = []
    monkeypatch.setattr(
        Pipeline,
        "load",
        classmethod(lambda cls, settings, **_: SimpleNamespace(answerer=SimpleNamespace(name="ollama"))),
    )
    monkeypatch.setattr(app.ui, "serve", lambda pipeline, host, port, auth, share: served.append((host, auth)))

    monkeypatch.setenv("HOUSECHAT_AUTH", "anna:s3cret")
    assert app_cli.main(["--port", str(_free_port())]) == 0
    assert served == [("127.0.0.1", ("anna", "s3cret"))] and "warning" not in capsys.readouterr().err
    assert app_cli.main(["--host", "0.0.0.0", "--port", str(busy_port)]) == 1  # a login set: no warning
    assert "warning" not in capsys.readouterr().err

    monkeypatch.delenv("HOUSECHAT_AUTH")
    assert app_cli.main(["--host", "0.0.0.0", "--port", str(busy_port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("warning: --host 0.0.0.0 lets other machines reach the UI (and your notes) without a login")
    assert app_cli.main(["--host", "localhost", "--port", str(_free_port())]) == 0
    assert "warning" not in capsys.readouterr().err  # loopback needs no login

    monkeypatch.setenv("HOUSECHAT_AUTH", "no-colon")
    assert app_cli.main(["--port", str(_free_port())]) == 1
    assert one_error_line(capsys.readouterr().err) == (
        "error: HOUSECHAT_AUTH is not USER:PASS — set it as USER:PASS, or unset it"
    )
