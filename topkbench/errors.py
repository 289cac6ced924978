"""The project's exception types.

Every error a user can cause (bad config, bad argument, no GPU, unreadable results) is a
``TopkbenchError`` carrying a one-line message and an optional hint; the CLI prints those two
lines on stderr and exits non-zero, with a traceback only in debug mode.
"""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message``, at most ``limit`` characters: how an exception an
    implementation raised is recorded (a result row's reason, a verify case's detail)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


class TopkbenchError(Exception):
    """Base class: a failure with a one-line message and an optional hint for the user."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(TopkbenchError):
    """A sweep or verify config that is missing, unreadable or invalid."""


class UsageError(TopkbenchError):
    """Bad arguments to the API or the CLI (unknown implementation, bad k, wrong dtype...)."""


class UnsupportedError(TopkbenchError):
    """An implementation cannot run this point (k too large, too wide, wrong device)."""


class DeviceError(TopkbenchError):
    """No usable GPU, or no CuPy, where a GPU implementation was asked for."""


class StickyCudaError(TopkbenchError):
    """The CUDA context is broken (illegal address, launch failure): nothing more can run."""


class StoreError(TopkbenchError):
    """A result file that cannot be read or is not topkbench Parquet."""


class FitError(TopkbenchError):
    """Measurements that cannot be fitted (no usable points, one implementation, mixed GPUs)."""


class ReportError(TopkbenchError):
    """A report that cannot be built from the given inputs."""


class VerificationFailed(TopkbenchError):
    """At least one implementation returned a wrong answer in ``topkbench verify``."""

    exit_code = 1


class SignalInterrupt(BaseException):
    """SIGTERM (or another termination signal) turned into an exception, as SIGINT becomes
    KeyboardInterrupt: long work catches both, keeps what it has written and stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


#: What long-running work catches to stop cleanly.
INTERRUPTS = (KeyboardInterrupt, SignalInterrupt)


def interrupt_exit_code(exc: BaseException) -> int:
    """The shell convention: 128 + the signal number (SIGINT 130, SIGTERM 143)."""
    return 128 + (exc.signum if isinstance(exc, SignalInterrupt) else 2)


class Interrupted(TopkbenchError):
    """Work stopped by Ctrl-C or SIGTERM; the message says what was kept and how to go on."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 130) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
