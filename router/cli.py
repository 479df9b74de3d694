"""`python -m router "question"`: route one question and show the filter it implies."""

from __future__ import annotations

import argparse
import json

from core.cli import run
from core.settings import Settings, from_env
from router.registry import BACKENDS


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router",
        description="Route a household question to its category (with confidence and the retrieval filter).",
    )
    parser.add_argument("question", nargs="?", help="the question to route")
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        metavar="NAME",
        help=f"{' | '.join(BACKENDS)} (default: settings, embedding)",
    )
    parser.add_argument(
        "--no-fallback", action="store_true", help="fail instead of falling back llm/ensemble/ollama → embedding → off"
    )
    parser.add_argument("--json", action="store_true", help="print the route as JSON on stdout")
    parser.add_argument(
        "--store", metavar="DIR", help="the store the router votes with and adapts to (env HOUSECHAT_STORE)"
    )
    parser.add_argument("--chroma-url", metavar="URL", help="use a Chroma server's store (env HOUSECHAT_CHROMA_URL)")
    parser.add_argument(
        "--status",
        action="store_true",
        help="say whether the embedding router is current for the store (adapting it now if it is not)",
    )
    parser.add_argument("--list", action="store_true", help="list the backends and whether each can run here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    return run(parser, lambda args: _route(parser, args), argv)


def _route(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not args.list and not args.status and not args.question:
        parser.error("give a question, or --list, or --status")
    settings = from_env(router_backend=args.backend, store=args.store, chroma_url=args.chroma_url)
    if args.list:
        return list_backends(settings, args.json)
    if args.status:
        return show_status(settings, args.json)
    from router.registry import load_router

    loaded = load_router(settings.router_backend, settings, fallback=not args.no_fallback)
    route = loaded.router.route(args.question)
    where = loaded.policy.where(route)
    if args.json:
        print(json.dumps({**route.to_json(), "filter": where}, ensure_ascii=False))
        return 0
    print(f"category:   {route.category}  ({route.code})")
    print(f"confidence: {route.confidence:.3f}")
    print("top-3:      " + ", ".join(f"{c} {p:.3f}" for c, p in route.top(3)))
    print(f"backend:    {route.backend}  ({route.latency_ms:.1f} ms)")
    if route.fallback_reason:
        print(f"fallback:   {route.fallback_reason}")
    print(f"filter:     {json.dumps(where)}")
    return 0


def list_backends(settings: Settings, as_json: bool) -> int:
    """Each backend and whether it can run here (cheap checks, no model loading)."""
    from router.registry import availability

    status = availability(settings)
    if as_json:
        print(json.dumps({name: {"available": why is None, "reason": why} for name, why in status.items()}))
        return 0
    for name, why in status.items():
        print(f"{name:<13} {'ok' if why is None else 'unavailable: ' + why}")
    return 0


def show_status(settings: Settings, as_json: bool) -> int:
    """Which head the embedding router uses for this store, and whether it is current."""
    from router.adapt import status

    report = status(settings)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    for key, value in report.items():
        print(f"{key + ':':<12} {value}")
    return 0
