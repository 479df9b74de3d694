"""Time to first answer on a fresh clone after setup: empty store -> UI ready -> first answer.

    .venv/bin/python -m benchmarks.first_answer [--question Q] [--var-dir DIR]

Runs `python -m app --ingest-if-empty` (what `make chat` runs) with an empty var dir (a temp dir:
no store, no caches, as on a fresh clone), reads its output for the ingest's start and end, polls
the UI until it answers HTTP, then asks one question through the real app with gradio_client
(`/chat`, router on) and a second one for comparison. Prints each phase's seconds and the total.
The answerer is whatever `auto` finds here (Ollama with the model, else the extractive one); the
output says which. Numbers, not a test: they move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from core.settings import PROJECT_ROOT

QUESTION = "When was the water heater last flushed?"
SECOND = "Which breaker feeds the garage?"
INGEST_START = "the store is empty"  # app/cli.py:ingest_if_empty
INGEST_END = "store "  # ingest/cli.py:_print_summary's last line: "store DIR: N notes, M chunks"
ANSWERER_NOTE = "note: answering with"


class AppOutput:
    """Every line the app prints (stdout and stderr), with the time it arrived."""

    def __init__(self, stream: object, echo: bool) -> None:
        self.lines: list[tuple[float, str]] = []
        self._stream, self._echo = stream, echo
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:  # type: ignore[attr-defined]
            self.lines.append((time.perf_counter(), line.rstrip("\n")))
            if self._echo:
                print(f"  app| {line.rstrip()}", file=sys.stderr, flush=True)

    def first(self, prefix: str) -> tuple[float, str] | None:
        """The first line starting with `prefix` (time, text)."""
        return next(((t, s) for t, s in self.lines if s.startswith(prefix)), None)


def wait_for_ui(url: str, app: subprocess.Popen[str], timeout: float) -> float:
    """Poll `url` until it answers 200; the time it did."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if app.poll() is not None:
            raise SystemExit(f"the app exited with {app.returncode} before its UI came up (see its output above)")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the UI at {url} did not come up within {timeout:.0f} s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(var_dir: Path, question: str, echo: bool, timeout: float) -> None:
    from gradio_client import Client

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "HOUSECHAT_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}
    for name in ("HOUSECHAT_STORE", "HOUSECHAT_CHROMA_URL"):
        env.pop(name, None)  # the default store under the empty var dir
    command = [sys.executable, "-m", "app", "--ingest-if-empty", "--port", str(port)]
    start = time.perf_counter()
    app = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = AppOutput(app.stdout, echo)
    try:
        ready = wait_for_ui(url, app, timeout)
        connect_start = time.perf_counter()
        client = Client(url, verbose=False)
        asked = time.perf_counter()
        first = client.predict(question, "on", api_name="/chat")
        answered = time.perf_counter()
        client.predict(SECOND, "on", api_name="/chat")
        second_s = time.perf_counter() - answered
    finally:
        app.terminate()
        app.wait(timeout=30)

    began, ended = output.first(INGEST_START), output.first(INGEST_END)
    if began is None or ended is None:
        raise SystemExit("the app did not ingest (was the store not empty?) — see its output with --echo")
    chunks = ended[1].split(": ", 1)[-1]
    note = output.first(ANSWERER_NOTE)
    badge = next((m["metadata"]["title"] for m in first if m.get("metadata")), "")
    print(f"## Time to first answer (`python -m app --ingest-if-empty`, empty store; {chunks})\n")
    print("| phase | seconds |\n|---|---|")
    print(f"| start: imports, settings, store check | {began[0] - start:.1f} |")
    print(f"| ingest `data/notes` (a subprocess: MiniLM load + embed + write) | {ended[0] - began[0]:.1f} |")
    print(f"| load the pipeline (router, embedder warm-up) and launch the UI | {ready - ended[0]:.1f} |")
    print(f"| **UI ready** (from the command's start) | **{ready - start:.1f}** |")
    print(f"| gradio_client connects | {asked - connect_start:.1f} |")
    print(f"| first answer (`/chat`, router on) | {answered - asked:.2f} |")
    print(f"| **first answer** (from the command's start) | **{answered - start:.1f}** |")
    print(f"| a second answer, for comparison | {second_s:.2f} |\n")
    print(f"question: {question!r}; {badge}")
    print(f"answerer: {note[1].removeprefix('note: answering with ').split(':')[0] if note else 'ollama'}")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"machine: {os.cpu_count()} cores, OMP_NUM_THREADS={threads}, 1-min load average {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    """Measure empty store -> UI ready -> first answer once and print the phases."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_answer", description=__doc__.split("\n")[0])
    parser.add_argument("--question", default=QUESTION, help=f"the first question (default {QUESTION!r})")
    parser.add_argument("--var-dir", help="an empty var dir to use and keep (default: a temp dir, removed)")
    parser.add_argument("--echo", action="store_true", help="show the app's own output on stderr")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the UI")
    args = parser.parse_args(argv)
    if args.var_dir:
        var = Path(args.var_dir)
        if var.exists() and any(var.iterdir()):
            raise SystemExit(f"{var} is not empty — pass an empty or new folder, so the store starts empty")
        measure(var, args.question, args.echo, args.timeout)
        return 0
    with tempfile.TemporaryDirectory(prefix="housechat-first-answer-") as var:
        measure(Path(var), args.question, args.echo, args.timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
