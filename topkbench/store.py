"""Tidy Parquet results (docs/design.md section 7).

A sweep run lives at ``<out>/<gpu_slug>/<config>-<confighash8>-<run_id>``: while it runs, each
finished point is one part file in ``<stem>.parts/``, written to a temporary name, synced and
renamed, so a SIGKILL loses at most the point in flight and never leaves half a row. ``finalize``
compacts the parts into ``<stem>.parquet``. A resumed sweep finds the newest run of the same
config hash and skips every (point, implementation) it already holds.

Any number of processes may write into one run at once (slices, resumes in another shell, the
workers of a multi-GPU sweep, shards on a shared file system). Each writer names its parts with
its own writer id, so no two ever collide. Writers hold ``<stem>.parts/.lock`` shared while they
write a part or read the run; compaction holds it exclusively, merges the parts it listed into the
final file, and deletes exactly those parts: a part written after the listing stays for the next
compaction, so no measurement is lost or counted twice. The lock lives with the results (shards on
several hosts may share the folder) and goes with the parts folder once the run has no parts left.

``read_results`` reads files and folders (recursively, parts included) as one DataFrame, and
rejects files that are not topkbench Parquet with one clear line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import secrets
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from topkbench.errors import StoreError
from topkbench.schema import ADDED_SINCE, COLUMNS, KEY_COLUMNS, SCHEMA, SCHEMA_VERSION

PARTS_SUFFIX = ".parts"


def new_run_id() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)


def row_key(row: dict[str, Any] | pd.Series) -> tuple:
    """The KEY_COLUMNS tuple of one result row (the identity :meth:`RunStore.done_keys` holds)."""
    return tuple(row[c] for c in KEY_COLUMNS)


def io_error(exc: OSError, what: str) -> StoreError:
    """A StoreError for a file-system failure, with a hint for the common causes."""
    reason = exc.strerror or str(exc)
    hints = {errno.EACCES: "check the folder's permissions, or give another --out",
             errno.EROFS: "the file system is read-only: give another --out",
             errno.ENOSPC: "free some space; the parts written so far are kept and a re-run resumes",
             errno.EEXIST: "a file is in the way of a folder: give another --out",
             errno.ENOTDIR: "a file is in the way of a folder: give another --out"}
    return StoreError(f"{what}: {reason} ({exc.filename or ''})".replace(" ()", ""),
                      hint=hints.get(exc.errno or 0, "check the path and the disk"))


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers see the old file or the new one, never half,
    and no temporary file is left behind, whatever fails."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(2)}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def writer_id() -> str:
    """This process's name in part files: host, pid and a random suffix (pids repeat across hosts)."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:32]
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with every schema column) as a table of the result schema."""
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"result rows lack columns: {', '.join(missing)}")
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


class RunStore:
    """The files of one sweep run."""

    def __init__(self, directory: Path, stem: str, run_id: str) -> None:
        self.directory = directory
        self.stem = stem
        self.run_id = run_id
        self.final_path = directory / f"{stem}.parquet"
        self.parts_dir = directory / f"{stem}{PARTS_SUFFIX}"
        self.lock_path = self.parts_dir / ".lock"
        self._writer = writer_id()
        self._next_part = 0

    @contextlib.contextmanager
    def _locked(self, exclusive: bool, create: bool = False):
        """Hold the run's lock (shared, or exclusive for compaction). It lives in the parts
        folder: a run without parts has nothing to guard (its final file is replaced
        atomically), so a reader then takes no lock and leaves no file behind. ``create`` makes
        the parts folder first (writers)."""
        while True:
            if create:
                self.parts_dir.mkdir(parents=True, exist_ok=True)
            elif not self.parts_dir.is_dir():
                yield
                return
            try:
                handle = open(self.lock_path, "a")
            except FileNotFoundError:  # the folder was compacted away just now: start over
                continue
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                current = os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                current = None
            # the final compaction removes the lock file: whoever opened it just before must
            # notice that the path now names another file (or none) and lock that instead
            if current == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    @classmethod
    def open(cls, out_dir: Path, gpu_slug: str, config_name: str, config_hash: str, resume: bool,
             run_id: str | None = None) -> "RunStore":
        """The run ``run_id`` of this config; without one, the newest run under ``out_dir/gpu_slug``
        when resuming, else a new one."""
        directory = Path(out_dir) / gpu_slug
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise io_error(exc, f"cannot write results under {directory}") from None
        prefix = f"{config_name}-{config_hash[:8]}-"
        if run_id is not None:
            return cls(directory, prefix + run_id, run_id)
        if resume:
            # the newest run is the one written last (run ids given by --run-id or a scheduler
            # do not sort by time)
            written: dict[str, float] = {}
            for p in directory.glob(prefix + "*"):
                if p.name.endswith(PARTS_SUFFIX) or p.suffix == ".parquet":
                    stem = p.name[: -len(PARTS_SUFFIX)] if p.name.endswith(PARTS_SUFFIX) else p.stem
                    written[stem] = max(written.get(stem, 0.0), p.stat().st_mtime)
            if written:
                stem = max(written, key=lambda s: (written[s], s))
                return cls(directory, stem, stem[len(prefix):])
        run_id = new_run_id()
        return cls(directory, prefix + run_id, run_id)

    @property
    def exists(self) -> bool:
        return self.final_path.exists() or self.parts_dir.exists()

    def _files(self) -> list[Path]:
        files = [self.final_path] if self.final_path.exists() else []
        if self.parts_dir.exists():
            files += sorted(self.parts_dir.glob("part-*.parquet"))
        return files

    def read(self) -> pd.DataFrame:
        with self._locked(exclusive=False):
            files = self._files()
            return read_results(files) if files else empty_frame()

    def done_keys(self) -> set[tuple]:
        """The KEY_COLUMNS tuple of every row this run holds."""
        return set(self.read()[list(KEY_COLUMNS)].itertuples(index=False, name=None))

    def append(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        """Write the rows of one point as a new part file (atomically)."""
        if not rows:
            return None
        table = to_table(rows)
        path = self.parts_dir / f"part-{self._writer}-{self._next_part:06d}.parquet"
        try:
            with self._locked(exclusive=False, create=True):
                write_atomic(table, path)
        except OSError as exc:
            raise io_error(exc, "cannot write a result part") from None
        self._next_part += 1
        return path

    def finalize(self) -> Path | None:
        """Compact the final file and the parts into the final file; remove the parts."""
        try:
            with self._locked(exclusive=True):
                files = self._files()
                if not files:
                    return None
                if files == [self.final_path]:
                    return self.final_path
                frame = read_results(files)
                frame = frame.drop_duplicates(subset=list(KEY_COLUMNS), keep="first")
                frame = frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
                table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
                write_atomic(table, self.final_path)
                # Only the parts merged above: a writer may add more after the listing.
                for part in files:
                    if part != self.final_path:
                        part.unlink(missing_ok=True)
                if not any(self.parts_dir.glob("part-*.parquet")):
                    # the run has no parts left: remove the lock, then the folder (a writer that
                    # opened the lock meanwhile notices and starts over)
                    with contextlib.suppress(OSError):
                        self.lock_path.unlink()
                        self.parts_dir.rmdir()
        except OSError as exc:
            raise io_error(exc, "cannot compact the run's parts (they are kept; a re-run retries)") from None
        return self.final_path


def empty_frame() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise StoreError(f"no such result file or folder: {path}")
    return files


class _VanishedPart(Exception):
    """A part file was compacted away between listing and reading it (its rows are in the final
    file by then): list again."""


def read_table(path: Path) -> pa.Table:
    """One result file as an Arrow table of exactly the schema's columns (older schema versions
    get their added columns' defaults) plus ``source_file``; StoreError when it is not one."""
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        if path.parent.name.endswith(PARTS_SUFFIX):
            raise _VanishedPart(str(path)) from None
        raise StoreError(f"no such result file: {path}") from None
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(f"{path}: not a readable Parquet file ({(str(exc).splitlines() or [''])[0]})",
                         hint="the file may be truncated or not a topkbench result; move it aside and re-run") from None
    present = set(table.column_names)
    if "schema_version" not in present:
        raise StoreError(f"{path}: not a topkbench result file (no schema_version column)")
    versions = set(table.column("schema_version").unique().to_pylist())
    if len(versions) > 1 or not versions <= set(range(1, SCHEMA_VERSION + 1)):
        raise StoreError(f"{path}: schema version {sorted(versions)} is not supported (this topkbench reads "
                         f"1 to {SCHEMA_VERSION})", hint="read it with the topkbench version that wrote it")
    version = versions.pop() if versions else SCHEMA_VERSION
    # columns added after the file's version are read with their documented defaults
    defaults = {c: v for since, added in ADDED_SINCE.items() if since > version for c, v in added.items()}
    missing = [c for c in COLUMNS if c not in present and c not in defaults]
    if missing:
        raise StoreError(f"{path}: not a topkbench result file (missing columns: {', '.join(missing[:5])})")
    columns = []
    for field in SCHEMA:
        if field.name in present:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        else:
            columns.append(pa.array([defaults[field.name]] * table.num_rows, type=field.type))
    columns.append(pa.array([str(path)] * table.num_rows, type=pa.string()))
    return pa.Table.from_arrays(columns, names=[*COLUMNS, "source_file"])


def read_file(path: Path) -> pd.DataFrame:
    """One result file as a frame of the schema's columns plus ``source_file``."""
    return read_table(path).to_pandas()


def read_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every result row under ``paths`` (files or folders, several GPUs and runs) as one frame.

    A row measured twice in one run (a crash between compaction and clean-up) is kept once. Files
    are read in parallel and joined as Arrow tables, converted to pandas once: a run of a thousand
    part files (a sweep in progress, a resume) reads in a fraction of the time file by file takes.
    """
    paths = list(paths)
    for attempt in range(5):
        files = _expand(paths)
        if not files:
            raise StoreError("no result files found", hint="give Parquet files or folders written by 'topkbench sweep'")
        try:
            with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
                tables = list(pool.map(read_table, files))
            break
        except _VanishedPart:
            if attempt == 4:
                raise StoreError("the results changed under every read (a sweep is compacting them)",
                                 hint="read again once the sweep has finished") from None
    frame = pa.concat_tables(tables).to_pandas()
    return frame.drop_duplicates(subset=["run_id", *KEY_COLUMNS], keep="first").reset_index(drop=True)
