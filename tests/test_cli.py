"""Every CLI has one shape (`core.cli.run`): 0 success, 1 a HousechatError, 2 usage — returned, never raised."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from core.errors import HousechatError

CLIS = ["ingest", "router", "finetune", "eval", "app"]

# Per CLI: arguments that reach a HousechatError cheaply when the categories file (or store) is missing.
FAILING = {
    "ingest": lambda tmp: ["--check", str(tmp)],
    "router": lambda tmp: ["pool pump", "--backend", "off"],
    "finetune": lambda tmp: ["data"],
    "eval": lambda tmp: ["routing", "--backends", "off", "--report", str(tmp / "r")],
    "app": lambda tmp: ["ask", "pool pump", "--store", str(tmp / "no-store")],
}


@pytest.mark.parametrize("package", CLIS)
def test_every_cli_exits_2_on_usage_1_on_a_housechat_error_0_on_help(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(f"{package}.cli").main
    assert main(["--no-such-flag"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert f"python -m {package}" in capsys.readouterr().out
    monkeypatch.setenv("HOUSECHAT_CATEGORIES_FILE", str(tmp_path / "missing.yaml"))
    assert main(FAILING[package](tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_run_turns_errors_into_exit_codes_and_lets_bugs_raise() -> None:
    import argparse

    from core.cli import run

    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int)

    def command(args: argparse.Namespace) -> int:
        if args.n == 1:
            raise HousechatError("one — say two")
        if args.n == 2:
            parser.error("two is not allowed")
        if args.n == 3:
            raise KeyError("a bug")
        return 0

    assert run(parser, command, ["0"]) == 0
    assert run(parser, command, ["1"]) == 1
    assert run(parser, command, ["2"]) == 2
    assert run(parser, command, ["x"]) == 2
    with pytest.raises(KeyError):
        run(parser, command, ["3"])
