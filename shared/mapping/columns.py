"""A block of rows -> the profiles and the rejected rows, mapped and serialised in the engine.

For each row the engine decides every mapped field on its own fast path, each built to
give the row-by-row answer (``rows.py``) exactly:

- e-mail: stripped (Python's whitespace set, which Rust's lacks parts of), lower-cased
  when ASCII, and accepted when the plain-address pattern (``emails.py``) holds;
- phone: ``phone_columns.py``; strings: stripped, empty ones left out;
- numbers, coordinates, booleans and dates in the forms whose JSON is their own text
  (``values.py``: a restricted decimal form, the boolean words, canonical ISO dates).

A row any part of which is not decided that way (an address emval must judge, a phone
number phonenumbers must parse, ``1e3``, a US date, an error to word...) goes through
``ProfileMapper`` and orjson as a whole, so its profile or reason is exactly the
row-by-row one. The JSON of the other rows is assembled by the engine, byte for byte as
orjson writes it (same keys in the same order, same escapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson

from shared.blocks import RowBlock, column_name
from shared.definitions import PROFILE_FIELDS, MappingSpec
from shared.engine import pl
from shared.mapping import values as typed
from shared.mapping.emails import normalised_email, plain_email
from shared.mapping.phone_columns import (
    PHONE_PADDED,
    PHONE_SIZE,
    PhoneAnswers,
    PhoneColumns,
    phone_stages,
)
from shared.mapping.phones import REGIONS
from shared.mapping.profilejson import Field, ProfileJson, SlowRows, json_string, present
from shared.mapping.rejects import RejectCode, RowRejected
from shared.mapping.rows import ProfileMapper, mapped_positions
from shared.profileblock import ProfileBlock

__all__ = ["PY_WHITESPACE", "BlockMapper", "MappedBlock", "Reject", "json_string"]

# str.strip()'s set: Rust's char::is_whitespace lacks \x1c-\x1f (tests/test_mapping.py).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ESCAPED_SHARE = 8  # rows that need escapes go row by row when at most 1 in this many
_col = pl.col


class Reject(NamedTuple):
    """A row that is not sent: where it is, why (code + detail), the raw e-mail value."""

    file_index: int
    line: int
    code: str
    detail: str
    email: str


class _Prepared(NamedTuple):
    """The block's frame with the stages' columns, and the phone answers (None without a
    phone mapping)."""

    frame: pl.DataFrame
    phones: PhoneAnswers | None


@dataclass(frozen=True, slots=True)
class MappedBlock:
    """One block mapped: its profiles, its rejected rows (in line order) and how many
    records it held."""

    profiles: ProfileBlock
    rejects: list[Reject]
    records: int


def _strip(
    column: str, *, controls: bool = False, whitespace: str | None = PY_WHITESPACE
) -> pl.Expr:
    """A string value as ``clean_text`` makes it (empty values stay empty: see
    :func:`present`); ``controls``: the block may hold control characters, to be removed;
    ``whitespace``: the characters to strip (None: Rust's whitespace, which is Python's but
    for \\x1c-\\x1f, and faster)."""
    value = _col(column).str.strip_chars(whitespace)
    if controls:
        value = value.str.replace_all(typed.CONTROLS, "").str.strip_chars(PY_WHITESPACE)
    return value


class BlockMapper:
    """Turns RowBlocks with the given ``columns`` into profiles and rejected rows.

    Same arguments and errors as :class:`ProfileMapper` (a mapped column missing from
    ``columns`` raises InputError naming the definition field). :attr:`positions` are
    the columns the reader must parse.
    """

    def __init__(
        self,
        mapping: MappingSpec,
        columns: Sequence[str],
        *,
        default_region: str | None = None,
        region_column: str | None = None,
        source: str | None = None,
        show_columns: bool = False,
    ) -> None:
        index = mapped_positions(
            mapping, columns, region_column=region_column, source=source, show_columns=show_columns
        )
        self.positions = tuple(sorted(set(index.values())))
        names = [columns[p] for p in self.positions]
        self._rows = ProfileMapper(
            mapping,
            names,
            default_region=default_region,
            region_column=region_column,
            source=source,
        )
        self._default_region = default_region
        self._phones = PhoneColumns()
        at = {field: column_name(p) for field, p in index.items()}
        self._email = at["mapping.email"]
        self._phone = at.get("mapping.phone_number")
        self._region = at.get("options.phone_region_column")
        self._top = [
            Field(_key(f), at[f"mapping.{f}"], "string")
            for f in PROFILE_FIELDS
            if f != "phone_number" and f"mapping.{f}" in at
        ]
        coordinates = {"latitude", "longitude"}
        location = [(f, at[f"mapping.location.{f}"]) for f, _ in mapping.location]
        self._location = [Field(_key(f), c, "string") for f, c in location if f not in coordinates]
        self._location += [Field(_key(f), c, f) for f, c in location if f in coordinates]
        props = [(p, at[f"mapping.properties.{p.name}.column"]) for p in mapping.properties]
        self._properties = [
            Field(_key(p.name), c, "string") for p, c in props if p.type == "string"
        ]
        self._properties += [Field(_key(p.name), c, p.type) for p, c in props if p.type != "string"]
        self._stage_cache: dict[bool, list[list[pl.Expr]]] = {}
        self._json = ProfileJson(
            self._top, self._location, self._properties, phone=self._phone is not None
        )
        # What map() and the JSON read of the stage query: the rest are intermediates.
        self._kept = ["ok", "missing", *self._json.inputs]
        if self._phone is not None:
            self._kept += [PHONE_SIZE, PHONE_PADDED]

    def map(self, block: RowBlock) -> MappedBlock:
        """The block's profiles (in input order) and rejected rows (in line order)."""
        frame, phones = self._prepare(block)
        missing = frame["missing"].to_numpy()
        fast = frame["ok"].to_numpy() & ~missing
        if phones is not None:
            fast &= ~frame["has_phone"].to_numpy() | phones.decided
        if block.plain is not None:
            # A few rows whose JSON needs escapes cost less row by row than the engine's
            # escaping pass costs a block; many are escaped by the engine.
            escaped = fast & ~block.plain
            if escaped.sum() * _ESCAPED_SHARE <= fast.sum():
                fast &= ~escaped
        rejects = [Reject(block.file_index, r.line, r.code, r.detail, "") for r in block.rejects]
        at = np.flatnonzero(missing)
        if at.size:
            raw = block.frame[self._email].gather(at).to_list()
            lines = block.lines[at].tolist()
            code = str(RejectCode.MISSING_EMAIL)
            rejects += [
                Reject(block.file_index, line, code, "no e-mail address", value)
                for line, value in zip(lines, raw, strict=True)
            ]
        slow = self._slow_rows(block, np.flatnonzero(~missing & ~fast), rejects)
        # Fast and slow rows back in input order; profiles over 100 KB rejected.
        profiles, big = self._json.profiles(block, frame, fast, phones, slow)
        rejects += [Reject(block.file_index, *r) for r in big]
        rejects.sort(key=lambda r: r.line)
        return MappedBlock(profiles, rejects, block.records)

    # -- the engine's part ----------------------------------------------------------

    def _prepare(self, block: RowBlock) -> _Prepared:
        """The engine's stage query over the block, and the phone numbers."""
        # One lazy query for the stages: the engine plans them together (a quarter less
        # work than stage by stage, measured).
        query = block.frame.lazy()
        for stage in self._stages(block.controls):
            query = query.with_columns(stage)
        # Only the columns map() reads: the intermediates (19 for the benchmark's mapping)
        # are freed as the query ends, not held through the JSON's writing.
        frame = query.select(self._kept).collect(engine="in-memory")
        return _Prepared(frame, self._phone_answers(block, frame))

    def _stages(self, controls: bool) -> list[list[pl.Expr]]:
        """The engine's work, in stages: each uses only columns of the stages before (the
        engine evaluates a repeated sub-expression again each time). ``controls``: the
        block may hold control characters. Built once for each (3 ms a block, measured)."""
        if controls not in self._stage_cache:
            self._stage_cache[controls] = self._build_stages(controls)
        return self._stage_cache[controls]

    def _build_stages(self, controls: bool) -> list[list[pl.Expr]]:
        # \x1c-\x1f are C0 controls: a block without controls has none to strip.
        space = PY_WHITESPACE if controls else None
        first = [_strip(self._email, whitespace=space).alias("email")]
        for f in (*self._top, *self._location, *self._properties):
            strip = controls and f.kind == "string"
            first.append(_strip(f.column, controls=strip, whitespace=space).alias(f"v_{f.column}"))
        stages = [_unique(first)]
        if self._phone is not None:
            stages[0].append(_strip(self._phone, whitespace=space).alias("phone_raw"))
            for i, step in enumerate(phone_stages("phone_raw"), start=1):
                if i == len(stages):
                    stages.append([])
                stages[i] += step
        email = _col("email")
        ascii_ = email.str.len_bytes() == email.str.len_chars()
        email_steps = [
            [pl.when(ascii_).then(email.str.to_lowercase()).alias("email_norm")],
            *plain_email("email_norm", "email_ok"),
        ]
        checks = [_col("email_ok")]
        for f in {f.column: f for f in (*self._location, *self._properties)}.values():
            if f.kind != "string":
                email_steps += [[] for _ in range(4)]
                for i, step in enumerate(typed.json_form(f"v_{f.column}", f.kind, f"j_{f.column}")):
                    email_steps[i] += step
                checks.append(~present(_col(f"v_{f.column}")) | _col(f"j_{f.column}_ok"))
        for i, step in enumerate(email_steps, start=1):
            if i == len(stages):
                stages.append([])
            stages[i] += step
        flags = [pl.all_horizontal(checks).alias("ok"), ~present(_col("email")).alias("missing")]
        if self._phone is not None:
            flags.append(present(_col("phone_raw")).alias("has_phone"))
        stages.append(flags)
        return [stage for stage in stages if stage]

    def _region_ids(self, block: RowBlock) -> np.ndarray:
        """Each row's phone region (its region column's ISO code, else the default), as
        the phone tables' region id (-1: none)."""
        default = self._default_region
        if self._region is None:
            return np.full(block.frame.height, self._phones.region_ids([default])[0], np.int64)
        # Few distinct values: Python's own strip().upper() on each, exactly as rows.py.
        seen = block.frame[self._region].unique().to_list()
        codes = [(c if (c := v.strip().upper()) in REGIONS else default) for v in seen]
        ids = self._phones.region_ids(codes)
        old = pl.Series(seen, dtype=pl.String)
        new = pl.Series(ids, dtype=pl.Int64)
        region = _col(self._region).replace_strict(old, new, return_dtype=pl.Int64)
        return block.frame.select(region).to_series().to_numpy()

    def _phone_answers(self, block: RowBlock, frame: pl.DataFrame) -> PhoneAnswers | None:
        if self._phone is None:
            return None
        region = self._region_ids(block)
        return self._phones.decide(frame.select(PHONE_SIZE, PHONE_PADDED), region)

    # -- rows the engine leaves to ProfileMapper, and the whole block ------------------

    def _slow_rows(self, block: RowBlock, rows: np.ndarray, rejects: list[Reject]) -> SlowRows:
        """The rows the engine did not decide, through ProfileMapper and orjson: those
        that become profiles; the others rejected."""
        out = SlowRows()
        rows = self._valid_emails(block, rows, rejects)
        if not rows.size:
            return out
        email_at = block.frame.columns.index(self._email)
        values = block.frame.select(pl.all().gather(rows)).rows()
        for row, vals in zip(rows.tolist(), values, strict=True):
            try:
                profile = self._rows.to_profile(vals)
            except RowRejected as exc:
                line = int(block.lines[row])
                code = str(exc.code)
                rejects.append(Reject(block.file_index, line, code, exc.detail, vals[email_at]))
                continue
            out.rows.append(row)
            out.emails.append(profile.email)
            out.parts.append(orjson.dumps({"type": "profile", "attributes": profile.attributes}))
            out.dropped.append(profile.phone_dropped)
        return out

    def _valid_emails(self, block: RowBlock, rows: np.ndarray, rejects: list[Reject]) -> np.ndarray:
        """The ``rows`` whose e-mail emval accepts; the others rejected here, as
        ProfileMapper would (the e-mail is the first thing it checks). Most rows the
        engine leaves undecided are invalid addresses (~60 %): judged on their one cell,
        they skip building the whole row (the slow rows' cost -13 %, measured)."""
        raw = block.frame[self._email].gather(rows).to_list()
        valid = np.ones(rows.size, dtype=bool)
        for i, value in enumerate(raw):
            try:
                normalised_email(value)
            except RowRejected as exc:
                line = int(block.lines[rows[i]])
                rejects.append(Reject(block.file_index, line, str(exc.code), exc.detail, value))
                valid[i] = False
        return rows[valid]


def _key(name: str) -> str:
    return orjson.dumps(name).decode()


def _unique(exprs: list[pl.Expr]) -> list[pl.Expr]:
    """Drop repeated outputs (two fields may read the same column)."""
    seen: set[str] = set()
    out = []
    for expr in exprs:
        name = expr.meta.output_name()
        if name not in seen:
            seen.add(name)
            out.append(expr)
    return out
