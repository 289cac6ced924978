"""Writing a command's output files: all or none, one-line errors, no temporary file left behind.

``fit-heuristic --out``, ``report --out`` and ``compare --json`` name a file. A folder, a path
under a file, or a place the user may not write is an error of the command line (one line, exit
code 2), found before anything is written; each file goes to a temporary name in its own folder
and is renamed into place, and on any failure the temporary files are removed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Mapping

from topkbench.errors import TopkbenchError, UsageError


def check_output_path(path: Path, flag: str, error: type[TopkbenchError] = UsageError) -> None:
    """Raise ``error`` with one line when ``path`` cannot be written as a file."""
    if path.is_dir():
        raise error(f"{flag} {path}: is a folder; give the file to write", hint=f"e.g. {flag} {path / 'out'}")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise error(f"{flag} {path}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"{flag} {path}: cannot write in {existing} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise error(f"{flag} {path}: the file exists and is read-only")


def write_texts(files: Mapping[Path, str], flag: str, error: type[TopkbenchError] = UsageError) -> None:
    """Write every (path, text) pair, or none of them; ``error`` with one line on failure."""
    for path in files:
        check_output_path(path, flag, error)
    temporary: dict[Path, Path] = {}
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(3)}")
            temporary[path] = tmp
            tmp.write_text(text, encoding="utf-8")
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    except OSError as exc:
        raise error(f"{flag} {exc.filename or next(iter(files))}: cannot write ({exc.strerror or exc})") from None
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
