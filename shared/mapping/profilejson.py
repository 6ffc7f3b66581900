"""The profiles' JSON, written by the engine byte for byte as orjson writes it, and a
block's profiles put together in input order.

The JSON of the rows the engine decided is one ``concat_str`` of ``,"key":value`` pieces
(same keys in the same order as ``ProfileMapper``'s dict, empty values left out).
Escaping (``\\``, ``"`` and control characters, as orjson does) is a pass over every
string column, so it is done only for the rows whose record has such a byte
(``RowBlock.plain``; all rows when the reader cannot say): their JSON is written again
with escapes and replaces the plain one. The rows ``ProfileMapper`` answered come with
orjson's own bytes; both are merged by row, and profiles over Klaviyo's 100 KB rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
import orjson

from shared.blocks import RowBlock
from shared.engine import pl
from shared.mapping.phone_columns import PHONE_TEXT, PhoneAnswers
from shared.mapping.rejects import RejectCode
from shared.profileblock import ProfileBlock, email_keys, part_hashes

__all__ = ["MAX_PROFILE_BYTES", "Field", "ProfileJson", "SlowRows", "json_string", "present"]

MAX_PROFILE_BYTES = 100_000  # Klaviyo's limit per profile (decimal, a margin on "KB")
# orjson's escapes: the two that must be, and every control character.
_ESCAPED = ["\\", '"', *map(chr, range(32))]
_ESCAPES = [orjson.dumps(c).decode()[1:-1] for c in _ESCAPED]
_ESCAPE_ALL = 4  # escape the whole block when 1 row in this many needs it
_col = pl.col


def json_string(value: pl.Expr) -> pl.Expr:
    """``value`` as a JSON string literal, escaped as orjson escapes it."""
    return pl.concat_str(pl.lit('"'), value.str.replace_many(_ESCAPED, _ESCAPES), pl.lit('"'))


def present(value: pl.Expr) -> pl.Expr:
    """Whether a stripped value is there (not empty, not null). Empty values are not
    made null: that copy of every column cost 0.3 µs a row of the stage query's 2.1
    (measured), and a length test on the stripped value is nearly free."""
    return (value.str.len_bytes() > 0).fill_null(False)


@dataclass(frozen=True, slots=True)
class Field:
    key: str  # the JSON key, as orjson writes it (quoted)
    column: str  # in the block's frame
    kind: str  # "string", "number", "boolean", "date", "latitude", "longitude"


@dataclass(slots=True)
class SlowRows:
    """Rows ``ProfileMapper`` turned into profiles: row, e-mail, orjson's bytes, dropped."""

    rows: list[int] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    dropped: list[bool] = field(default_factory=list)


class ProfileJson:
    """Writes the JSON of a mapping's profiles from the mapper's columns (``email_norm``,
    ``v_<column>`` for strings, ``j_<column>`` for typed values, the phone's).

    A profile leaves out its empty values, so rows differ in which pieces they have:
    the rows are grouped by that (and by whether they need escapes), and each group is
    one ``pl.format`` of a template with the pieces it has, a single pass that writes
    each profile's bytes once (nested ``concat_str`` per piece wrote every piece twice
    and cost five times as much, measured).
    """

    def __init__(
        self, top: list[Field], location: list[Field], properties: list[Field], *, phone: bool
    ) -> None:
        self._top, self._location, self._properties = top, location, properties
        self._phone = phone
        # The pieces that may be absent, in JSON order: a bit each in a row's shape.
        self._pieces: list[Field | None] = [None] if phone else []
        self._pieces += [*top, *location, *properties]
        self._templates: dict[int, pl.Expr] = {}
        self._shape: pl.Expr | None = None
        self._columns = ["email_norm"] + (["ph_code", "ph_tail", PHONE_TEXT] if phone else [])
        self._columns += list(
            dict.fromkeys(
                f"v_{f.column}" if f.kind == "string" else f"j_{f.column}"
                for f in (*top, *location, *properties)
            )
        )
        # The mapper's columns that profiles() reads (the shape tests every piece's value).
        fields = (*top, *location, *properties)
        self.inputs = list(
            dict.fromkeys(
                ["email_norm", *(["has_phone", PHONE_TEXT] if phone else [])]
                + [f"v_{f.column}" for f in fields]
                + [f"j_{f.column}" for f in fields if f.kind != "string"]
            )
        )

    def shape(self) -> pl.Expr:
        """Which pieces each row has, as bits (bit 0 the first piece)."""
        if self._shape is None:
            self._shape = self._build_shape()
        return self._shape

    def _build_shape(self) -> pl.Expr:
        bits = []
        for i, f in enumerate(self._pieces):
            there = _col("ph_tail") > 0 if f is None else present(_col(f"v_{f.column}"))
            bits.append(there.cast(pl.Int64) * (1 << i))
        return pl.sum_horizontal(bits) if bits else pl.lit(0, pl.Int64)

    def profiles(
        self,
        block: RowBlock,
        frame: pl.DataFrame,
        fast: np.ndarray,
        phones: PhoneAnswers | None,
        slow: SlowRows,
    ) -> tuple[ProfileBlock, list[tuple[int, str, str, str]]]:
        """The profiles of the ``fast`` rows (written here) and the slow ones, in row
        order; and rejects ``(line, code, detail, email)`` of those over 100 KB."""
        rows = np.flatnonzero(fast)
        dropped = np.zeros(rows.size, dtype=bool)
        if phones is not None:
            frame = frame.with_columns(ph_code=phones.code, ph_tail=phones.tail)
            dropped = frame["has_phone"].to_numpy()[rows] & ~phones.valid[rows]
        parts, sizes = self._write(block, frame, rows)
        emails = frame["email_norm"].gather(rows)
        if slow.rows:
            order = np.argsort(np.concatenate([rows, slow.rows]), kind="stable")
            rows = np.concatenate([rows, slow.rows])[order]
            parts = _in_order([*parts, *slow.parts], order)
            emails = pl.concat([emails, pl.Series(slow.emails, dtype=pl.String)]).gather(order)
            sizes = np.concatenate([sizes, np.fromiter(map(len, slow.parts), np.int64)])[order]
            dropped = np.concatenate([dropped, np.array(slow.dropped, dtype=bool)])[order]
        big = []
        over = sizes > MAX_PROFILE_BYTES
        if over.any():
            code = str(RejectCode.PROFILE_TOO_LARGE)
            for i in np.flatnonzero(over).tolist():
                reason = f"profile is {int(sizes[i]):,} bytes; Klaviyo accepts at most 100 KB"
                big.append((int(block.lines[rows[i]]), code, reason, emails[i]))
        result = ProfileBlock(
            emails=emails,
            keys=email_keys(emails),
            attr_hashes=part_hashes(parts),
            files=np.full(rows.size, block.file_index, dtype=np.uint32),
            lines=block.lines[rows],
            phone_dropped=dropped,
            parts=parts,
            part_sizes=sizes,
        )
        return (result.select(~over) if over.any() else result), big

    def _write(
        self, block: RowBlock, frame: pl.DataFrame, rows: np.ndarray
    ) -> tuple[list[bytes], np.ndarray]:
        """The JSON and its byte size of each of ``rows``, in that order."""
        if not rows.size:
            return [], np.zeros(0, dtype=np.int64)
        plain = block.plain[rows] if block.plain is not None else np.zeros(rows.size, bool)
        key = frame.select(self.shape()).to_series().to_numpy()[rows] * 2 + ~plain
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        bounds = np.append(starts, key.size)
        # Only the columns the JSON reads, gathered once in group order (each group is
        # then a slice of it, which costs nothing).
        grouped = frame.select(pl.col(self._columns).gather(rows[order])).lazy()
        # One query for every group (and the sizes): one call into the engine, not one
        # per group (~17 a block). In memory: the default (streaming) engine took ~0.1 µs
        # a row more CPU for the same wall (measured).
        pieces = [
            grouped.slice(a, b - a).select(self._template(int(key[a])))
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]
        json = _col("json")
        written = (
            pl.concat(pieces).select(json.cast(pl.Binary), json.str.len_bytes().alias("size"))
        ).collect(engine="in-memory")
        # Back to row order as Python objects: the engine's gather of the strings cost
        # 0.47 µs a row (a third of the JSON's cost, measured), reordering the list ~0.01.
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        parts = _in_order(written["json"].to_list(), back)
        return parts, written["size"].to_numpy().astype(np.int64)[back]

    def _template(self, key: int) -> pl.Expr:
        """The ``pl.format`` expression (named ``json``) for rows of this shape (bit 0:
        they need escapes; the others: which pieces they have)."""
        if key not in self._templates:
            escape, shape = bool(key & 1), key >> 1
            have = {id(f) for i, f in enumerate(self._pieces) if f is not None and shape >> i & 1}
            text = '{{"type":"profile","attributes":{{"email":"{}"'
            args = [_col("email_norm")]
            if self._phone and shape & 1:
                text += ',"phone_number":"+{}{}"'
                args += [
                    _col("ph_code").cast(pl.String),
                    _col(PHONE_TEXT).str.tail(_col("ph_tail")),
                ]
            group_text, group_args = _pieces([f for f in self._top if id(f) in have], escape)
            text, args = text + group_text, args + group_args
            for group, name in ((self._location, "location"), (self._properties, "properties")):
                present = [f for f in group if id(f) in have]
                if present:
                    inner, inner_args = _pieces(present, escape)
                    text += f',"{name}":{{{{' + inner[1:] + "}}"
                    args += inner_args
            self._templates[key] = pl.format(text + "}}}}", *args).alias("json")
        return self._templates[key]


def _in_order(items: list[bytes], order: np.ndarray) -> list[bytes]:
    """``items[order[0]], items[order[1]], ...`` as a list."""
    if order.size <= 1:
        return [items[int(i)] for i in order]
    return list(itemgetter(*order.tolist())(items))


def _pieces(fields: list[Field], escape: bool) -> tuple[str, list[pl.Expr]]:
    """``,"key":value`` for each field, as template text (braces doubled) and arguments."""
    text, args = "", []
    for f in fields:
        key = f.key.replace("{", "{{").replace("}", "}}")
        if f.kind == "string":
            value = _col(f"v_{f.column}")
            text += f',{key}:"{{}}"'
            args.append(value.str.replace_many(_ESCAPED, _ESCAPES) if escape else value)
        else:
            text += f",{key}:{{}}"
            args.append(_col(f"j_{f.column}"))
    return text, args
