"""One measuring process per device at a time.

Two sweeps timing on one GPU at once each distort the other's timings, and nothing in the
numbers would show it. So a sweep holds an exclusive advisory lock on its device for as long as it
measures; a second sweep on the same device is refused with one line naming the holder. The lock
lives in the system's temporary folder (one host's processes share it) and is released by the
kernel when the holder exits, even after SIGKILL: there are no stale locks to clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from topkbench.errors import UsageError


def lock_dir() -> Path:
    return Path(os.environ.get("TOPKBENCH_LOCK_DIR") or Path(tempfile.gettempdir()) / "topkbench-locks")


def _lock_path(device_key: str) -> Path:
    return lock_dir() / (re.sub(r"[^A-Za-z0-9_.-]+", "-", device_key) + ".lock")


@contextlib.contextmanager
def hold_device(device_key: str, description: str, what: str) -> Iterator[None]:
    """Hold ``device_key`` exclusively while the block runs (UsageError if another process does).

    ``description`` names the device in the refusal; ``what`` says what this process does with it
    and is what a refused process is told.
    """
    path = _lock_path(device_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError:
        # An unwritable temporary folder must not stop a sweep: run without the guard.
        yield
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UsageError(f"{description} is already being measured by {holder}; two sweeps on one device "
                             "distort each other's timings",
                             hint="wait for it to finish, or measure on another device (--devices)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({what})")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
