"""Read: the source's rows, checked against the config, a numbered slice at a time.

The first stage of a run (`sync.pipeline`): the source is opened (`sync.sources`), its columns
checked against the mapping before any row is read, and its rows come as slices numbered from
1 (ROW), each kept in the run's spool as it goes by, for the rejects file at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sync.coerce import constant_problems
from sync.columns import ROW
from sync.config import Config
from sync.model import ReadProgress
from sync.source_columns import check_columns
from sync.sources import open_source
from sync.state import spool_write

__all__ = ["Rows", "read_source"]


@dataclass
class Rows:
    """The source's rows as mapping takes them: numbered slices (ROW, from 1), each kept as it
    goes by, on disk in a run's spool (else in memory), for the rejects file at the end."""

    schema: pl.Schema
    source: Iterator[pl.DataFrame]
    keep_in: Path | None  # None: nothing will ask for the rows again (the rejects file does)
    notes: tuple[str, ...] = ()  # how the source was read (which sheet), for the report
    on_read: Callable[[ReadProgress], None] | None = None

    @property
    def slices(self) -> Iterator[pl.DataFrame]:
        offset = 1
        for index, piece in enumerate(self.source):
            rows = piece.with_row_index(ROW, offset=offset)
            offset += piece.height
            if self.keep_in is not None:
                spool_write(rows, self.keep_in / f"source-{index:06d}.arrow")
            self._read_so_far(offset - 1)
            yield rows
        self._read_so_far(offset - 1, finished=True)

    def _read_so_far(self, rows: int, *, finished: bool = False) -> None:
        if self.on_read is not None:
            self.on_read(ReadProgress(rows, finished))

    def kept(self) -> pl.LazyFrame:
        """Every row read so far, with ROW."""
        files = sorted(self.keep_in.glob("source-*.arrow")) if self.keep_in else []
        if files:
            return pl.scan_ipc(files)
        return pl.LazyFrame(schema=self.schema)


def read_source(
    config: Config,
    *,
    keep_in: Path | None = None,
    on_read: Callable[[ReadProgress], None] | None = None,
) -> Rows:
    """The source's columns are checked against the config before any row is read; the rows
    then come a slice at a time."""
    stream = open_source(config)
    check_columns(config, stream.schema, extra=constant_problems(config.spec))
    schema = pl.Schema([(ROW, pl.UInt32()), *stream.schema.items()])
    return Rows(schema, stream.slices, keep_in, stream.notes, on_read)
