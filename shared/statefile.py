"""A next state written to Parquet while its e-mails are made a row group at a time.

A mirror run of N people ends with N e-mails to write: ~41 bytes each as a polars
column, ~41 MB at 1M and ~410 MB at 10M. A first run's are sorted into a temporary file
while the last jobs run (``ChunkedStrings.drain_to``); a later run's are the state's
stayers merged with its joiners (``keyindex.MergedStrings``). Here they stream into the
Parquet file a row group at a time, beside slices of the numeric columns, through
polars' streaming sink.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy.typing as npt

from shared.chunked import StringSlices
from shared.engine import pl

__all__ = ["write_streamed"]


def write_streamed(
    out: IO[bytes],
    columns: Mapping[str, npt.NDArray[Any] | StringSlices],
    *,
    row_group_size: int,
    **options: Any,
) -> None:
    """Write ``columns`` (numpy arrays and one StringSlices, all as long) to ``out`` as
    one Parquet file of ``row_group_size``-row groups; ``options`` as for polars'
    ``write_parquet`` (compression, statistics, metadata)."""
    (text,) = (name for name, column in columns.items() if isinstance(column, StringSlices))
    strings: StringSlices = columns[text]  # type: ignore[assignment]
    arrays = {name: c for name, c in columns.items() if name != text}
    schema = {  # in the columns' order, as the frames have them
        name: pl.String if name == text else pl.Series(arrays[name][:0]).dtype for name in columns
    }

    def frames(
        with_columns: list[str] | None, predicate: Any, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        # A plain sink asks for every column, with no filter and no row limit.
        names = with_columns or list(columns)
        at = 0
        for piece in strings.slices(row_group_size):
            stop = at + len(piece)
            yield pl.DataFrame({n: piece if n == text else arrays[n][at:stop] for n in names})
            at = stop

    pl.io.plugins.register_io_source(frames, schema=schema).sink_parquet(
        out, row_group_size=row_group_size, **options
    )
