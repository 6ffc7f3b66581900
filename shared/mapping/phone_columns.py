"""Phone numbers to E.164 a block at a time, with phonenumbers' exact answers.

With a different number on every row, phonenumbers costs ~40 µs a number and even the
row-wise replay (``phones.py``) 3-12 µs: far over a row's budget. This replays
``parse(raw, region)`` + ``is_valid_number`` + ``format_number(E164)`` for a whole block
with numpy, on the block's numbers as a matrix of digits, for numbers that are ASCII
digits once ``" -()."`` are gone, written

- ``+<cc><number>``, also with a trunk prefix after the code (``+31 (0)6 ...``);
- ``<the region's international prefix><cc><number>`` (``0031 6 ...``, ``011 44 ...``);
- ``<the region's own calling code><number>`` (``1-415-555-0123``);
- as a national number, with or without the trunk prefix (``06 ...``, ``(415) 555-0123``).

The steps, in ``parse()``'s order: the international prefix (not taken when a 0 follows
it), the calling code (the shortest known one), the national prefix (stripped unless that
turns a viable number into one that is not, and kept if what is left has a length
``_test_number_length`` refuses), the length limits, then ``region_code_for_number`` (the
first of the code's regions whose leading digits, or else patterns, match) and that
region's type patterns. Prefixes are matched by Python's regex engine once per distinct
prefix; whole-number patterns by DFAs (``phone_dfa.py``), one table lookup per digit for
every row at once. Whatever is outside this (letters, extensions, a national-prefix
transform rule, an unknown calling code, more than ``WIDTH`` digits...) is left undecided
for ``to_e164`` to answer row by row. tests/test_phone_columns.py checks every decided
answer against phonenumbers itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.engine import pl
from shared.mapping.phone_dfa import PAD
from shared.mapping.phone_patterns import MAX_INPUT, MAX_NSN, PhoneTables, Prefixes, bit
from shared.mapping.phones import CC_PREFIXES

__all__ = [
    "PHONE_PADDED",
    "PHONE_SIZE",
    "PHONE_TEXT",
    "WIDTH",
    "PhoneAnswers",
    "PhoneColumns",
    "Resolved",
    "e164_number",
    "phone_stages",
]

WIDTH = 24  # digits of a number decided here; a longer one goes to phonenumbers
PHONE_TEXT, PHONE_SIZE, PHONE_PADDED = "ph_text", "ph_size", "ph_padded"
_MIN_NSN = 2  # phonenumbers' shortest national significant number
_CC_SIZE = np.zeros(1000, dtype=np.int64)
_CC_CODE = np.zeros(1000, dtype=np.int64)
for _start, (_size, _code) in CC_PREFIXES.items():
    _CC_SIZE[int(_start)], _CC_CODE[int(_start)] = _size, _code
_col = pl.col


@dataclass(frozen=True, slots=True)
class PhoneAnswers:
    """Per row: whether it was decided here, and if so whether the number is valid; its
    E.164 form is ``+<code>`` and the last ``tail`` characters of its text (``e164``)."""

    decided: np.ndarray
    valid: np.ndarray
    code: np.ndarray
    tail: np.ndarray


def e164_number(text: pl.Expr, code: pl.Expr, tail: pl.Expr) -> pl.Expr:
    """The E.164 number from PHONE_TEXT and a row's PhoneAnswers ``code`` and ``tail``
    (null where ``tail`` is 0: invalid or undecided)."""
    number = pl.concat_str(pl.lit("+"), code.cast(pl.String), text.str.tail(tail))
    return pl.when(tail > 0).then(number)


@dataclass(frozen=True, slots=True)
class Resolved:
    """:meth:`PhoneColumns.resolve`: the E.164 numbers (null: invalid or undecided)."""

    e164: pl.Series
    decided: np.ndarray


@dataclass(slots=True)
class _Tasks:
    """Numbers with their calling code: row, code, where the national number starts in
    the row's digits, and the metadata parse() strips its national prefix with."""

    rows: np.ndarray
    code: np.ndarray
    start: np.ndarray
    meta: np.ndarray


def phone_stages(raw: str) -> list[list[pl.Expr]]:
    """polars: stages adding PHONE_TEXT (the stripped number in column ``raw`` without
    ``" -()."``, when it is short ASCII), PHONE_SIZE (its length, else 0) and
    PHONE_PADDED (it padded to WIDTH + 1 characters, for :meth:`PhoneColumns.decide`)."""
    text, size = _col("ph_t"), _col("ph_b")
    fits = (_col("ph_c") <= MAX_INPUT) & (size <= WIDTH + 1) & (size == _col("ph_tc"))
    return [
        [
            _col(raw).str.replace_many([" ", "-", "(", ")", "."], [""] * 5).alias("ph_t"),
            _col(raw).str.len_chars().alias("ph_c"),
        ],
        [text.str.len_bytes().alias("ph_b"), text.str.len_chars().alias("ph_tc")],
        [
            pl.when(fits).then(text).alias(PHONE_TEXT),
            pl.when(fits).then(size).otherwise(0).cast(pl.Int64).alias(PHONE_SIZE),
            pl.when(fits)
            .then(text)
            .otherwise(pl.lit(""))
            .str.pad_end(WIDTH + 1, ":")
            .fill_null(":" * (WIDTH + 1))
            .alias(PHONE_PADDED),
        ],
    ]


class PhoneColumns:
    """Resolves blocks of phone numbers; keeps its lookup tables from block to block."""

    def __init__(self) -> None:
        self._tables = PhoneTables()

    def region_ids(self, regions: list[str | None]) -> list[int]:
        """The id of each region (ISO code) for :meth:`decide`; -1 for None."""
        self._tables.add_regions([r for r in regions if r is not None])
        ids = self._tables.region.ids
        return [-1 if r is None else ids[r] for r in regions]

    def decide(self, frame: pl.DataFrame, region: np.ndarray) -> PhoneAnswers:
        """The answers for a frame with the columns of :func:`phone_stages`, and each
        row's region id (-1: none). Rows not ``decided`` must be answered by
        ``to_e164``."""
        if not frame.height:
            empty = np.zeros(0, dtype=np.int64)
            return PhoneAnswers(empty.astype(bool), empty.astype(bool), empty, empty)
        padded = frame.select(_col(PHONE_PADDED).str.join("")).item()
        size = frame[PHONE_SIZE].to_numpy()
        return _Block(self._tables, padded, size, region).answers()

    def resolve(self, raw: pl.Series, regions: pl.Series) -> Resolved:
        """E.164 for each stripped, non-empty ``raw`` number, with each row's region (or
        null)."""
        query = pl.DataFrame({"raw": raw}).lazy()
        for stage in phone_stages("raw"):
            query = query.with_columns(stage)
        frame = query.collect()
        region = np.array(self.region_ids(regions.to_list()), dtype=np.int64)
        answers = self.decide(frame, region)
        e164 = frame.with_columns(code=answers.code, tail=answers.tail).select(
            e164_number(_col(PHONE_TEXT), _col("code"), _col("tail")).alias("e164")
        )
        return Resolved(e164.to_series(), answers.decided)


class _Block:
    """One block's numbers: the digit matrix and the steps of parse() over it."""

    def __init__(
        self, tables: PhoneTables, padded: str, size: np.ndarray, region: np.ndarray
    ) -> None:
        self.t = tables
        n = size.size
        chars = np.frombuffer(padded.encode("ascii"), dtype=np.uint8).reshape(n, WIDTH + 1)
        value = chars - 48  # digits 0-9, and the padding ":" is PAD
        # parse()'s shapes decided here: "+" and 3 or more digits, or 4 or more digits;
        # every character after the first a digit or the padding (and only the padding).
        rest = (value[:, 1:] <= PAD).all(axis=1) & ((value == PAD).sum(axis=1) == WIDTH + 1 - size)
        intl = (chars[:, 0] == 43) & rest & (size >= 4)
        national = (value[:, 0] < PAD) & rest & (size >= 4) & (size <= WIDTH)
        self.kind = np.where(intl, 1, np.where(national, 2, 0))
        self.length = np.where(intl, size - 1, np.where(national, size, 0))
        # The digits (without "+"), then PAD; room after each for a shifted view of it.
        self.d = np.full((n, 2 * WIDTH + 1), PAD, dtype=np.uint8)
        self.d[:, : WIDTH + 1] = value
        self.d[intl, :WIDTH] = value[intl, 1:]
        self.d[intl, WIDTH] = PAD
        self._windows = np.lib.stride_tricks.sliding_window_view(self.d, WIDTH + 1, axis=1)
        self.region = region
        self.decided = np.zeros(n, dtype=bool)
        self.valid = np.zeros(n, dtype=bool)
        self.code = np.zeros(n, dtype=np.int64)
        self.nsn = np.zeros(n, dtype=np.int64)

    def answers(self) -> PhoneAnswers:
        tasks = [self._international(), *self._national()]
        if any(task.rows.size for task in tasks):
            self._validate(self._strip(_join(tasks)))
        # The national number is the end of the text: its last ``length - nsn`` bytes.
        tail = np.where(self.valid, self.length - self.nsn, 0)
        return PhoneAnswers(self.decided, self.valid, self.code, tail)

    # -- the matrix --------------------------------------------------------------------

    def _number(self, rows: np.ndarray, start: np.ndarray, width: int | None = None) -> np.ndarray:
        """The digits of each row from ``start`` on, then PAD: ``width`` columns, or one
        more than the longest of them."""
        if width is None:
            width = int((self.length[rows] - start).max(initial=0)) + 1
        return self._windows[rows, start][:, :width]

    def _matches(self, starts: np.ndarray, rows: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Whether each row's number from ``start`` on is accepted by its DFA."""
        if not rows.size:
            return np.zeros(0, dtype=bool)
        return self.t.dfa.run(starts, self._number(rows, start))

    def _prefix(
        self, matchers: Prefixes, ids: np.ndarray, rows: np.ndarray, start: np.ndarray
    ) -> np.ndarray:
        """The length of each row's match of its id's prefix pattern at ``start`` (-1: none)."""
        number = self._number(rows, start, WIDTH + 1)
        return matchers.lengths(number, self.length[rows] - start, ids)

    def _calling_code(self, rows: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The calling code the digits at ``start`` begin with (0: none), and its length."""
        d = self.d
        first3 = (
            d[rows, start].astype(np.int64) * 100
            + d[rows, start + 1].astype(np.int64) * 10
            + d[rows, start + 2]
        )
        short = (d[rows, start] == PAD) | (d[rows, start + 1] == PAD) | (d[rows, start + 2] == PAD)
        first3 = np.where(short, 0, first3)  # fewer than three digits: callers rule it out
        return _CC_CODE[first3], _CC_SIZE[first3]

    # -- parse() -------------------------------------------------------------------------

    def _international(self) -> _Tasks:
        # An unknown calling code makes parse() try again without the "+": left undecided.
        rows = np.flatnonzero(self.kind == 1)
        code, size = self._calling_code(rows, np.zeros(rows.size, dtype=np.int64))
        known = code > 0
        return self._coded(rows[known], code[known], size[known])

    def _coded(self, rows: np.ndarray, code: np.ndarray, start: np.ndarray) -> _Tasks:
        self.t.add_codes(np.unique(code).tolist())
        return _Tasks(rows, code, start, self.t.code_meta[code])

    def _national(self) -> list[_Tasks]:
        """Digits written for the row's region: an IDD, its own calling code, or national."""
        t = self.t
        rows = np.flatnonzero(self.kind == 2)
        region = self.region[rows]
        self.decided[rows[region < 0]] = True  # parse() refuses them without a region
        rows, region = rows[region >= 0], region[region >= 0]
        usable = t.region["ok"][region]
        rows, region = rows[usable], region[usable]
        zero = np.zeros(rows.size, dtype=np.int64)
        idd = self._prefix(t.idd, region, rows, zero)
        after = self.d[rows, np.maximum(idd, 0)]
        # A calling code never starts with 0: then the international prefix is not one.
        via = (idd >= 0) & (after != 0)
        v, at = rows[via], idd[via]
        long_enough = self.length[v] - at > _MIN_NSN
        code, size = self._calling_code(v, np.where(long_enough, at, 0))
        code = np.where(long_enough, code, 0)
        coded = code > 0
        # Too short after the IDD, or no calling code after it: parse() refuses them.
        self.decided[v[~coded]] = True
        tasks = [self._coded(v[coded], code[coded], at[coded] + size[coded])]
        rest, region = rows[~via], region[~via]
        own = t.region["own"][region]
        starts = self._starts_with_code(rest, own)
        taken, settled = self._own_code(rest[starts], region[starts], own[starts])
        tasks.append(taken)
        national = np.ones(rest.size, dtype=bool)
        national[np.flatnonzero(starts)[settled]] = False
        rows = rest[national]
        meta = t.region["meta"][region[national]]
        tasks.append(_Tasks(rows, own[national], np.zeros(rows.size, np.int64), meta))
        return tasks

    def _starts_with_code(self, rows: np.ndarray, code: np.ndarray) -> np.ndarray:
        size = 1 + (code >= 10) + (code >= 100)
        ok = np.ones(rows.size, dtype=bool)
        for j in range(3):
            digit = code // 10 ** np.maximum(size - 1 - j, 0) % 10
            ok &= (j >= size) | (self.d[rows, j] == digit)
        return ok & (self.length[rows] >= size)

    def _own_code(
        self, rows: np.ndarray, region: np.ndarray, own: np.ndarray
    ) -> tuple[_Tasks, np.ndarray]:
        """``_maybe_extract_country_code`` for digits starting with the region's own code:
        the tasks where parse() takes the code off, and which rows that or being left
        undecided settles (the others are read as national numbers)."""
        t = self.t
        size = 1 + (own >= 10) + (own >= 100)
        meta = t.region["meta"][region]
        cand, found = self._candidate(rows, size, meta)
        general = t.meta["general"][meta]
        whole = self._matches(general, rows, np.zeros(rows.size, dtype=np.int64))
        stripped = self._matches(general, rows, cand)
        undecided = found & t.meta["transform"][meta]
        better = (~whole & stripped) | bit(t.region["too_long"][region], self.length[rows])
        take = ~undecided & better
        t.add_codes(np.unique(own[take]).tolist())
        taken = _Tasks(rows[take], own[take], cand[take], t.code_meta[own[take]])
        return taken, take | undecided

    def _candidate(
        self, rows: np.ndarray, start: np.ndarray, meta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``_maybe_strip_national_prefix_carrier_code``: where the number it gives starts,
        and whether a prefix matched. A transform rule is not replayed: the caller leaves
        those undecided."""
        t = self.t
        size = self._prefix(t.prefixes, meta, rows, start)
        found = size >= 0
        cand = start.copy()
        if found.any():
            f = np.flatnonzero(found)
            general = t.meta["general"][meta[f]]
            viable = self._matches(general, rows[f], start[f])
            kept = self._matches(general, rows[f], start[f] + size[f])
            cand[f] = np.where(viable & ~kept, start[f], start[f] + size[f])
        return cand, found

    def _strip(self, tasks: _Tasks) -> tuple[_Tasks, np.ndarray, np.ndarray]:
        """parse()'s national-prefix step with each task's metadata, then its length test:
        the tasks at their national significant numbers, which are undecided, too short."""
        t = self.t
        known = tasks.meta >= 0  # a code without (compiled) metadata: left undecided
        tasks = _Tasks(*(a[known] for a in (tasks.rows, tasks.code, tasks.start, tasks.meta)))
        cand, found = self._candidate(tasks.rows, tasks.start, tasks.meta)
        length = self.length[tasks.rows]
        keep = (cand != tasks.start) & bit(t.meta["strip"][tasks.meta], length - cand)
        undecided = found & t.meta["transform"][tasks.meta]
        short = length - tasks.start < _MIN_NSN
        tasks.start = np.where(keep, cand, tasks.start)
        return tasks, undecided, short

    def _validate(self, stripped: tuple[_Tasks, np.ndarray, np.ndarray]) -> None:
        """``is_valid_number``: ``region_code_for_number`` region by region, then that
        region's patterns; every number still here is decided."""
        t = self.t
        tasks, undecided, short = stripped
        rows, code, nsn = tasks.rows, tasks.code, tasks.start
        length = self.length[rows] - nsn
        bad = short | (length > MAX_NSN)
        self.decided[rows[~undecided & bad]] = True
        go = ~undecided & ~bad & (t.code_meta[code] >= 0)  # a code without tables: undecided
        rows, code, nsn, length = rows[go], code[go], nsn[go], length[go]
        single = t.single[code]
        # A number no region of its code could take (a length none allows, no general
        # pattern matches): invalid without trying the regions one by one.
        multi = np.flatnonzero(~single)
        if multi.size:
            matches = self._matches(t.any_general[code[multi]], rows[multi], nsn[multi])
            hopeless = ~(bit(t.any_length[code[multi]], length[multi]) & matches)
            self.decided[rows[multi[hopeless]]] = True
            keep = np.ones(rows.size, dtype=bool)
            keep[multi[hopeless]] = False
            rows, code, nsn, length, single = (a[keep] for a in (rows, code, nsn, length, single))
        k = 0
        while rows.size:
            usable = t.reach(code, k)  # rows of a region it cannot compile: undecided
            if not usable.all():
                rows, code, nsn, length, single = (
                    a[usable] for a in (rows, code, nsn, length, single)
                )
            number = self._number(rows, nsn)
            valid = t.dfa.run(t.general.get(code, k), number)
            valid &= t.dfa.run(t.types.get(code, k, length), number)
            leading = t.leading.get(code, k)
            has = leading >= 0
            led = np.zeros(rows.size, dtype=bool)
            if has.any():
                led[has] = t.dfa.run(leading[has], number[has])
            found = single | led | (~has & valid)
            done = found | (k + 1 >= t.count[code])
            self.decided[rows[done]] = True
            ok = done & found & valid
            self.valid[rows[ok]] = True
            self.code[rows[ok]] = code[ok]
            self.nsn[rows[ok]] = nsn[ok]
            rows, code, nsn, length, single = (a[~done] for a in (rows, code, nsn, length, single))
            k += 1


def _join(tasks: list[_Tasks]) -> _Tasks:
    return _Tasks(
        *(np.concatenate([getattr(x, f) for x in tasks]) for f in ("rows", "code", "start", "meta"))
    )
