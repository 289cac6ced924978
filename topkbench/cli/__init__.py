"""The ``topkbench`` command line: one small module per command, wired here.

Errors of the project's own types print one line and a hint on stderr and exit non-zero; the
traceback appears only with ``--debug`` (or TOPKBENCH_DEBUG=1).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer

from topkbench import __version__
from topkbench.errors import TopkbenchError

#: Modules under topkbench.cli that each define ``register(app)``.
COMMAND_MODULES = ("sweep_cmd", "list_cmd", "verify_cmd", "compare_cmd", "fit_cmd", "report_cmd")

app = typer.Typer(
    name="topkbench",
    help="Exact top-k kernels for sparse-attention decode: sweep, verify, fit dispatch rules, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("TOPKBENCH_DEBUG", "") not in ("", "0")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"topkbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug


for _name in COMMAND_MODULES:
    importlib.import_module(f"topkbench.cli.{_name}").register(app)


def report_error(exc: TopkbenchError) -> None:
    typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, standalone_mode=False)
    except TopkbenchError as exc:
        if debug_enabled():
            raise
        report_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: results written so far are kept; run the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors and the like
        # click's usage errors; recent typer releases vendor click (typer._click) instead of
        # depending on it, so find the class through typer rather than importing click.
        click_exception = next((c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"), None)
        if click_exception is not None and isinstance(exc, click_exception):
            exc.show()
            sys.exit(exc.exit_code)
        if debug_enabled():
            raise
        typer.secho(f"error: unexpected {type(exc).__name__}: {exc}", err=True, fg=typer.colors.RED)
        typer.echo("hint: re-run with --debug for the traceback, and please report it", err=True)
        sys.exit(3)
