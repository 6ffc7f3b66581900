"""A snapshot's files as streams of UTF-8 bytes: ranged downloads, gzip, transcoding, BOM.

    ranged download_blob() GETs on a small thread pool, a bounded number ahead (Prefetcher)
      -> gunzip (.csv.gz, several members allowed)
      -> transcode to UTF-8 (only when the model declares another encoding)
      -> drop a byte-order mark at the start of the file
      -> utf8_chunks(): bytes for the block reader (shared/blocks.py)

Memory stays at about ``depth * chunk_size`` of downloaded bytes plus one decompressed
piece (``_GUNZIP_PIECE``), whatever the file's size.
"""

from __future__ import annotations

import codecs
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.cdm import CsvFormat
from shared.errors import InputError

__all__ = ["BOM", "Prefetcher", "text_codec", "utf8_chunks"]

BOM = b"\xef\xbb\xbf"
_GUNZIP_PIECE = 1 << 20  # decompressed bytes handed on at a time


@dataclass(frozen=True, slots=True)
class _Range:
    index: int  # of the file in the snapshot
    name: str
    offset: int
    length: int
    etag: str | None


class Prefetcher:
    """Downloads the files as ranged GETs on a small thread pool, a bounded number ahead.

    Why not ``download_blob().chunks()``: in azure-storage-blob 12.31 it fetches the first
    32 MiB in one GET and slices it with copies (+64 MiB peak), and downloads the rest one
    chunk at a time whatever ``max_concurrency`` says. Ranges of ``chunk_size`` bytes,
    ``max_concurrency`` at once and at most ``depth`` held, keep memory at about
    ``depth * chunk_size`` and overlap the download with parsing. Each GET carries the
    listed ETag (If-Match), so a file replaced after the listing fails instead of mixing.
    """

    def __init__(
        self,
        client: ContainerClient,
        files: tuple[str, ...],
        sizes: tuple[int, ...],
        etags: tuple[str, ...],
        *,
        chunk_size: int,
        depth: int,
        max_concurrency: int,
    ) -> None:
        self._client = client
        self._plan = self._ranges(files, sizes, etags, chunk_size)
        self._depth = max(depth, max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="segment-download")
        self._pending: deque[tuple[_Range, Future[bytes]]] = deque()

    def file_chunks(self, index: int) -> Iterator[bytes]:
        """The chunks of file ``index``; files must be taken in order."""
        self._fill()
        while self._pending and self._pending[0][0].index == index:
            part, future = self._pending.popleft()
            self._fill()
            yield self._result(part, future)

    def close(self) -> None:
        """Cancel what has not started; running GETs finish on their own."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fill(self) -> None:
        while len(self._pending) < self._depth:
            part = next(self._plan, None)
            if part is None:
                return
            self._pending.append((part, self._pool.submit(self._download, part)))

    def _ranges(
        self, files: tuple[str, ...], sizes: tuple[int, ...], etags: tuple[str, ...], chunk: int
    ) -> Iterator[_Range]:
        listed = len(sizes) == len(files) and len(etags) == len(files)
        for index, name in enumerate(files):
            size, etag = (sizes[index], etags[index]) if listed else self._properties(name)
            for offset in range(0, size, chunk):
                yield _Range(index, name, offset, min(chunk, size - offset), etag)

    def _properties(self, name: str) -> tuple[int, str | None]:
        # A snapshot built by hand: ask for what the listing would have said.
        try:
            properties = self._client.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError as exc:
            raise InputError("data file not found", file=name) from exc
        return properties.size, properties.etag

    def _download(self, part: _Range) -> bytes:
        conditions: dict[str, Any] = {}
        if part.etag:
            conditions = {"etag": part.etag, "match_condition": MatchConditions.IfNotModified}
        stream = self._client.download_blob(
            part.name, offset=part.offset, length=part.length, **conditions
        )
        # readinto(), not readall(): readall() copies the response through a BytesIO;
        # this takes the response's own bytes (one object for a range of one GET).
        parts = _Parts()
        stream.readinto(parts)
        return parts.content()

    @staticmethod
    def _result(part: _Range, future: Future[bytes]) -> bytes:
        try:
            return future.result()
        except ResourceNotFoundError as exc:
            raise InputError("data file disappeared while being read", file=part.name) from exc
        except ResourceModifiedError as exc:
            raise InputError(
                "data file changed after the snapshot was listed", file=part.name
            ) from exc


class _Parts:
    """A write-only stream that keeps the bytes written to it, uncopied."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(data)
        return len(data)

    def content(self) -> bytes:
        return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)


def text_codec(fmt: CsvFormat, name: str) -> str:
    """The Python codec of a partition's declared encoding (InputError if unknown)."""
    try:
        return codecs.lookup(fmt.encoding).name
    except LookupError:
        raise InputError(f"unknown encoding {fmt.encoding!r}", file=name) from None


def utf8_chunks(
    chunks: Iterator[bytes], name: str, codec: str, *, errors: str = "strict"
) -> Iterator[bytes]:
    """The file's content as UTF-8 byte chunks, without a leading byte-order mark.

    UTF-8 passes through untouched (the block reader checks it); another declared encoding,
    or another ``errors`` handler than "strict", is transcoded here. With "strict", bytes
    the codec cannot decode stay as they are (not UTF-8: the reader rejects their records);
    only a codec that cannot even carry them (UTF-16 cut mid-character) raises InputError.
    """
    if name.lower().endswith(".gz"):
        chunks = _gunzip(chunks, name)
    if codec in ("utf-8", "utf-8-sig") and errors == "strict":
        yield from _without_bom(chunks)
    else:
        yield from _transcoded(chunks, name, codec, errors)


def _without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(BOM):
            break
    else:
        if head and head != BOM[: len(head)]:
            yield head
        return
    yield head[len(BOM) :] if head.startswith(BOM) else head
    yield from chunks


def _gunzip(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Decompress a gzip stream (several members allowed, as gzip.GzipFile reads them)."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    started = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                started = True
                piece = inflater.decompress(data, _GUNZIP_PIECE)
                if piece:
                    yield piece
                data = inflater.unconsumed_tail
                if inflater.eof:
                    data = inflater.unused_data + data
                    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                    started = False
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise InputError(f"not a valid gzip file: {exc}", file=name) from exc
    if started and not inflater.eof:
        raise InputError("not a valid gzip file: the stream ends early", file=name)


def _transcoded(chunks: Iterator[bytes], name: str, codec: str, errors: str) -> Iterator[bytes]:
    # "strict": a byte the codec cannot decode is carried through as itself (surrogate
    # escape), which is not UTF-8, so the block reader rejects its record as undecodable
    # like any other.
    escape = errors == "strict"
    decoder = codecs.getincrementaldecoder(codec)("surrogateescape" if escape else errors)
    lines = 0
    first = True
    for chunk, final in _with_last(chunks):
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            before = exc.object[: exc.start].decode(codec, "replace")
            raise InputError(
                f"cannot decode as {codec}: {exc.reason} "
                f"(byte {exc.object[exc.start : exc.start + 1]!r})",
                file=name,
                line=lines + before.count("\n") + 1,
            ) from exc
        if first and text.startswith("\ufeff"):
            text = text[1:]
        first = first and not text
        lines += text.count("\n")
        if text:
            yield text.encode("utf-8", "surrogateescape" if escape else "strict")


def _with_last(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    previous: bytes | None = None
    for chunk in chunks:
        if previous is not None:
            yield previous, False
        previous = chunk
    yield previous or b"", True
