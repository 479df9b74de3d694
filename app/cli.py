"""`python -m app`: the chat UI. `python -m app ask "question"`: one answer on the command line.

Exit codes: 0 success, 1 a problem the message says how to fix (empty store, Ollama missing when
insisted on), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import TYPE_CHECKING

from core.cli import port_number, run
from core.errors import HousechatError
from core.settings import FILTER_MODES
from router.registry import BACKENDS

if TYPE_CHECKING:
    from app.pipeline import Answer
    from core.settings import Settings

ANSWERERS = ["auto", "ollama", "extractive", "smollm2"]  # app.chain.CHOICES; spelled out so --help imports nothing

EPILOG = """\
examples:
  python -m app                                  the chat UI on http://127.0.0.1:7860
  python -m app --ingest-if-empty                ingest data/notes first when the store is empty (make chat)
  HOUSECHAT_AUTH=anna:s3cret python -m app       with a login (--auth USER:PASS works too, but shows in `ps`)
  python -m app --port 8080 --host 0.0.0.0       another port, reachable from the home network
  python -m app ask "when was the water heater last flushed?"
  python -m app ask "which breaker feeds the garage?" --router off --json

Answers come from Ollama (HOUSECHAT_ANSWER_MODEL, default qwen3:4b-instruct, at
HOUSECHAT_OLLAMA_HOST) when it is running and has the model, else from the extractive answerer
(the notes' own sentences, each cited), and the UI says which. Every answer is checked: facts the
cited notes do not state are flagged.
"""


def _add_common(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Flags shared by the UI and `ask` (given before or after `ask`, they mean the same)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--store", metavar="DIR", default=default, help="embedded Chroma directory (env HOUSECHAT_STORE)"
    )
    parser.add_argument(
        "--chroma-url",
        metavar="URL",
        default=default,
        help="a Chroma server, e.g. http://127.0.0.1:8000 (env HOUSECHAT_CHROMA_URL)",
    )
    parser.add_argument("--collection", metavar="NAME", default=default, help="collection name (default house_notes)")
    parser.add_argument(
        "--router-backend",
        metavar="NAME",
        choices=list(BACKENDS),
        default=default,
        help=f"{' | '.join(BACKENDS)} (env HOUSECHAT_ROUTER_BACKEND, default "
        "embedding; falls back llm/ensemble/ollama → embedding → off)",
    )
    parser.add_argument(
        "--filter-mode",
        choices=list(FILTER_MODES),
        default=default,
        help="how retrieval uses the route: auto (per confidence band, chosen on the QA dev split; the "
        "default), hard (only the routed categories), soft (routed categories ranked up), lift (routed categories first, in the unfiltered order), none "
        "(env HOUSECHAT_FILTER_MODE)",
    )
    parser.add_argument(
        "--hybrid",
        choices=["on", "off"],
        default=default,
        help="fuse BM25 keyword hits with the vector hits (default on; env HOUSECHAT_HYBRID=1/0)",
    )
    parser.add_argument(
        "--answerer",
        choices=ANSWERERS,
        default=default,
        help="auto (default; env HOUSECHAT_ANSWERER): Ollama when it has the model, else extractive (the notes' "
        "own sentences, cited); smollm2: the small generative model (rough, invents facts)",
    )


def _auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("write it as USER:PASS")
    return user, password


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Fail now, before any model loads, when the UI could not listen on host:port."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise HousechatError(
            f"cannot listen on --host {host!r} ({exc.strerror}) — use 127.0.0.1 (this machine only) "
            "or 0.0.0.0 (every network interface)"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HousechatError(
                    f"port {port} on {host} is in use — stop what runs there, or pick another with --port N"
                ) from None
            raise HousechatError(
                f"cannot listen on {host}:{port} ({exc.strerror}) — pick another --host or --port"
            ) from None


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by `--help` tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Chat with your house notes: routed retrieval, answers with [note-id] citations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--auth",
        metavar="USER:PASS",
        type=_auth,
        help="require this login (env HOUSECHAT_AUTH, which keeps the password out of `ps`)",
    )
    parser.add_argument(
        "--share",
        action="store_true",
        help="also open a public gradio.live link (off by default: the notes are private)",
    )
    parser.add_argument(
        "--ingest-if-empty",
        action="store_true",
        help="run `python -m ingest` on data/notes first when the store is empty",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    ask = commands.add_parser(
        "ask",
        help="answer one question on the command line",
        description="Answer one question: the answer streams to stdout, then its route and sources.",
    )
    ask.add_argument("question", help="the question, in quotes")
    ask.add_argument("--router", choices=["on", "off"], default="on", help="route and filter (on) or search every note")
    ask.add_argument("--json", action="store_true", help="print one JSON document on stdout (logs go to stderr)")
    _add_common(ask, suppress=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    return run(make_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from core.settings import from_env

    settings = from_env(
        store=args.store,
        chroma_url=args.chroma_url,
        collection=args.collection,
        router_backend=args.router_backend,
        answerer=args.answerer,
        filter_mode=args.filter_mode,
        hybrid=None if args.hybrid is None else args.hybrid == "on",
    )
    if args.command == "ask":
        return _ask(settings, args.question, args.router == "on", args.json)
    return _serve(settings, args)


def _ask(settings: Settings, question: str, routing: bool, as_json: bool) -> int:
    from app.pipeline import Pipeline, check_question

    question = check_question(question)  # before any model loads
    pipeline = Pipeline.load(settings, routing=routing)
    if pipeline.answerer.note:
        print(f"note: answering with {pipeline.answerer.label}: {pipeline.answerer.note}", file=sys.stderr)
    if as_json:
        print(json.dumps(pipeline.ask(question, routing=routing).to_json(), ensure_ascii=False))
        return 0
    shown = 0
    answer = None
    for answer in pipeline.stream(question, routing=routing):
        if not answer.done:
            print(answer.text[shown:], end="", flush=True)
            shown = len(answer.text)
    assert answer is not None
    print("\n")
    _print_route_and_sources(answer)
    return 0


def _print_route_and_sources(answer: Answer) -> None:
    route = answer.route
    if route.backend == "off":
        print("route:   router off — every note searched")
    else:
        widened = " (widened: too few matches)" if answer.widened else ""
        print(
            f"route:   {route.category} {route.confidence:.0%} · {route.backend} · {route.latency_ms:.0f} ms · "
            f"{answer.filter_mode} filter {json.dumps(answer.where)}{widened}"
        )
    print(f"answer:  {answer.answerer.label} · {answer.timings['total'] / 1000:.1f} s")
    grounding = answer.grounding
    if grounding is not None:
        if grounding.grounded:
            print(f"checked: every fact found in the cited notes ({grounding.supported} sentences with facts)")
        for sentence in grounding.unsupported:
            print(f"checked: NOT FOUND IN YOUR NOTES: {sentence}")
        if grounding.removed_citations:
            print(
                f"checked: removed citations to notes that were not retrieved: {', '.join(grounding.removed_citations)}"
            )
    print("sources:")
    for source in answer.sources:
        print(
            f"  [{source.note_id}] {source.title} ({source.category}, {source.date or 'no date'}) score {source.score:.2f}"
        )


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from app.pipeline import Pipeline
    from app.ui import serve

    auth = args.auth
    if auth is None and settings.auth:
        try:
            auth = _auth(settings.auth)
        except argparse.ArgumentTypeError:
            raise HousechatError("HOUSECHAT_AUTH is not USER:PASS — set it as USER:PASS, or unset it") from None
    if not _loopback(args.host) and auth is None:
        print(
            f"warning: --host {args.host} lets other machines reach the UI (and your notes) without a login — "
            "set HOUSECHAT_AUTH=USER:PASS",
            file=sys.stderr,
        )
    check_port_free(args.host, args.port)
    if args.ingest_if_empty:
        ingest_if_empty(settings)
    pipeline = Pipeline.load(settings, warm=True)
    if pipeline.answerer.name != "ollama":
        print(
            f"note: answering with {pipeline.answerer.label}: {pipeline.answerer.note or 'asked for'}", file=sys.stderr
        )
    if args.share:
        print("warning: --share makes the UI (and your notes) reachable from the internet", file=sys.stderr)
    serve(pipeline, args.host, args.port, auth, args.share)
    return 0


def ingest_if_empty(settings: Settings) -> None:
    """Fill an empty or missing store from `settings.notes_dir` by running `python -m ingest`."""
    from core.settings import PROJECT_ROOT
    from core.store import StoreMissing, open_store

    try:
        notes = open_store(settings, create=False).counts()[0]
    except StoreMissing:
        notes = 0
    if notes:
        return
    command = [sys.executable, "-m", "ingest", str(settings.notes_dir.resolve())]
    command += ["--collection", settings.collection]
    if settings.chroma_url:
        command += ["--chroma-url", settings.chroma_url]
    else:
        command += ["--store", str(settings.store.resolve())]
    print(f"the store is empty — ingesting {settings.notes_dir} (once; later runs reuse it)", file=sys.stderr)
    done = subprocess.run(command, cwd=PROJECT_ROOT, check=False)
    if done.returncode not in (0, 1):  # 1: some notes had problems (reported above), the rest went in
        raise HousechatError(
            f"the ingest failed (exit {done.returncode}) — run `python {' '.join(command[1:])}` to see why"
        )
