"""Tidy Parquet results (DESIGN.md section 7).

A sweep run lives at ``<out>/<gpu_slug>/<config>-<confighash8>-<run_id>``: while it runs, each
finished point is one part file in ``<stem>.parts/``, written to a temporary name, synced and
renamed, so a SIGKILL loses at most the point in flight and never leaves half a row. ``finalize``
compacts the parts into ``<stem>.parquet``. A resumed sweep finds the newest run of the same
config hash and skips every (point, implementation) it already holds.

``read_results`` reads files and folders (recursively, parts included) as one DataFrame, and
rejects files that are not topkbench Parquet with one clear line.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import shutil
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


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
        #: Index of the next part file, counted from the folder once (not per point).
        self._next_part: int | None = None

    @classmethod
    def open(cls, out_dir: Path, gpu_slug: str, config_name: str, config_hash: str, resume: bool) -> "RunStore":
        """The newest run of this config under ``out_dir/gpu_slug`` when resuming, else a new one."""
        directory = Path(out_dir) / gpu_slug
        directory.mkdir(parents=True, exist_ok=True)
        prefix = f"{config_name}-{config_hash[:8]}-"
        if resume:
            stems = {p.name[: -len(PARTS_SUFFIX)] if p.name.endswith(PARTS_SUFFIX) else p.stem
                     for p in directory.glob(prefix + "*")
                     if p.name.endswith(PARTS_SUFFIX) or p.suffix == ".parquet"}
            if stems:
                stem = max(stems)
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
        files = self._files()
        return read_results(files) if files else empty_frame()

    def done_keys(self) -> set[tuple]:
        """The KEY_COLUMNS tuple of every row this run holds."""
        return set(self.read()[list(KEY_COLUMNS)].itertuples(index=False, name=None))

    def append(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        """Write the rows of one point as a new part file (atomically)."""
        if not rows:
            return None
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        if self._next_part is None:
            self._next_part = len(list(self.parts_dir.glob("part-*.parquet")))
        # The index orders the parts; the random suffix keeps two writers from ever colliding.
        path = self.parts_dir / f"part-{self._next_part:06d}-{secrets.token_hex(3)}.parquet"
        _write_atomic(to_table(rows), path)
        self._next_part += 1
        return path

    def finalize(self) -> Path | None:
        """Compact the final file and the parts into the final file; remove the parts."""
        files = self._files()
        if not files:
            return None
        if files == [self.final_path]:
            return self.final_path
        frame = read_results(files)
        frame = frame.drop_duplicates(subset=list(KEY_COLUMNS), keep="first")
        frame = frame.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)
        _write_atomic(pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False), self.final_path)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self._next_part = None
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


def read_file(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(f"{path}: not a readable Parquet file ({(str(exc).splitlines() or [''])[0]})",
                         hint="the file may be truncated or not a topkbench result; move it aside and re-run") from None
    if "schema_version" not in table.column_names:
        raise StoreError(f"{path}: not a topkbench result file (no schema_version column)")
    versions = set(table.column("schema_version").to_pylist())
    if len(versions) > 1 or not versions <= set(range(1, SCHEMA_VERSION + 1)):
        raise StoreError(f"{path}: schema version {sorted(versions)} is not supported (this topkbench reads "
                         f"1 to {SCHEMA_VERSION})", hint="read it with the topkbench version that wrote it")
    version = versions.pop() if versions else SCHEMA_VERSION
    # columns added after the file's version are read with their documented defaults
    defaults = {c: v for since, added in ADDED_SINCE.items() if since > version for c, v in added.items()}
    missing = [c for c in COLUMNS if c not in table.column_names and c not in defaults]
    if missing:
        raise StoreError(f"{path}: not a topkbench result file (missing columns: {', '.join(missing[:5])})")
    frame = table.select([c for c in COLUMNS if c in table.column_names]).to_pandas()
    for column, value in defaults.items():
        if column not in frame:
            frame[column] = value
    frame = frame[list(COLUMNS)]
    frame["source_file"] = str(path)
    return frame


def read_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every result row under ``paths`` (files or folders, several GPUs and runs) as one frame.

    A row measured twice in one run (a crash between compaction and clean-up) is kept once.
    """
    files = _expand(paths)
    if not files:
        raise StoreError("no result files found", hint="give Parquet files or folders written by 'topkbench sweep'")
    frames = [read_file(p) for p in files]
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates(subset=["run_id", *KEY_COLUMNS], keep="first").reset_index(drop=True)
