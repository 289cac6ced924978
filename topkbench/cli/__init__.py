"""The ``topkbench`` command line: one small module per command, wired here.

Errors of the project's own types print one line and a hint on stderr and exit non-zero; the
traceback appears only with ``--debug`` (or TOPKBENCH_DEBUG=1).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from typing import Annotated, Iterator

import torch
import typer

from topkbench import __version__
from topkbench.errors import INTERRUPTS, SignalInterrupt, TopkbenchError, interrupt_exit_code

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


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises SignalInterrupt in the main thread, as SIGINT raises KeyboardInterrupt, so
    long work stops the same way for both and keeps what it wrote."""

    def handler(signum: int, frame: object) -> None:
        raise SignalInterrupt(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedding): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment_error(exc: BaseException) -> TopkbenchError:
    """A TopkbenchError (rc 2) for failures of the machine rather than of topkbench."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return TopkbenchError(f"{exc.strerror or exc}{where}",
                              hint="check the path, its permissions and the free disk space")
    return TopkbenchError(f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          hint="reduce the config's rows or seq_len, or free memory on the device")


#: Running out of host or device memory is the machine's limit, not a topkbench bug.
OUT_OF_MEMORY = (MemoryError, torch.cuda.OutOfMemoryError)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        with _terminate_as_interrupt():
            code = app(args=argv, standalone_mode=False)
        # typer reports some interrupts as a return value (130) instead of raising
        if isinstance(code, int) and code != 0:
            if code == 130:
                typer.echo("interrupted: nothing was lost; re-run the same command to continue", err=True)
            sys.exit(code)
    except TopkbenchError as exc:
        if debug_enabled():
            raise
        report_error(exc)
        sys.exit(exc.exit_code)
    except INTERRUPTS as exc:
        # work that keeps partial results raises Interrupted (a TopkbenchError) itself; this is
        # an interrupt anywhere else (start-up, a command that writes nothing until it ends)
        typer.echo("interrupted: nothing half-written is kept; run the same command again", err=True)
        sys.exit(interrupt_exit_code(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        # click turns a KeyboardInterrupt that no command handled into Abort
        typer.echo("interrupted: nothing half-written is kept; run the same command again", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        # click's usage errors; recent typer releases vendor click (typer._click) instead of
        # depending on it, so find the class through typer rather than importing click.
        click_exception = next((c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"), None)
        if click_exception is not None and isinstance(exc, click_exception):
            exc.show()
            sys.exit(exc.exit_code)
        if debug_enabled():
            raise
        if isinstance(exc, (OSError, *OUT_OF_MEMORY)):
            error = _environment_error(exc)
            report_error(error)
            sys.exit(error.exit_code)
        typer.secho(f"error: unexpected {type(exc).__name__}: {exc}", err=True, fg=typer.colors.RED)
        typer.echo("hint: re-run with --debug for the traceback, and please report it", err=True)
        sys.exit(3)
