"""Phone numbers to E.164 a column at a time, with phonenumbers' exact answers.

With a different number on every row, phonenumbers costs ~40 µs a number and even the
row-wise replay (``phones.py``) 3-12 µs: far over a row's budget. This replays
``parse(raw, region)`` + ``is_valid_number`` + ``format_number(E164)`` for a whole block in
a few engine queries, for numbers that are ASCII digits once ``" -()."`` are gone, written

- ``+<cc><number>``, also with a trunk prefix after the code (``+31 (0)6 ...``);
- ``<the region's international prefix><cc><number>`` (``0031 6 ...``, ``011 44 ...``);
- ``<the region's own calling code><number>`` (``1-415-555-0123``);
- as a national number, with or without the trunk prefix (``06 ...``, ``(415) 555-0123``).

The steps, in ``parse()``'s order: the international prefix (not taken when a 0 follows
it), the calling code (the shortest known one), the national prefix (stripped unless that
turns a viable number into one that is not, and kept if what is left has a length
``_test_number_length`` refuses), the length limits, then ``region_code_for_number`` (the
first of the code's regions whose leading digits, or else patterns, match) and that
region's type patterns. Each row's patterns come from lookup tables, so one regex call
serves every region in the block. Whatever is outside this (letters, extensions, a
national-prefix transform rule, an unknown calling code...) is left undecided for
``to_e164`` to answer row by row. tests/test_phone_columns.py checks every decided answer
against phonenumbers itself.
"""

from __future__ import annotations

import re
import re._parser as sre_parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import numpy as np
import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import ValidationResult, _test_number_length

from shared.engine import pl
from shared.mapping.phones import CC_PREFIXES, country_rules

__all__ = ["PhoneAnswers", "PhoneColumns"]

_MIN_NSN, _MAX_NSN, _MAX_INPUT = 2, 17, 250  # phonenumbers' length limits
_LENGTHS = 32  # lengths looked up; every longer number is TOO_LONG everywhere (checked)
_FEW = 24  # rows left for a calling code's later regions: cheaper row by row
_NOT_STRIPPED: Final = (
    ValidationResult.TOO_SHORT,
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    ValidationResult.INVALID_LENGTH,
)
_CC_SIZE: Final = {start: size for start, (size, _) in CC_PREFIXES.items()}
_CC_CODE: Final = {start: code for start, (_, code) in CC_PREFIXES.items()}
_col = pl.col


@dataclass(frozen=True, slots=True)
class PhoneAnswers:
    """Per row: the E.164 number (null: invalid or undecided) and whether it was decided."""

    e164: pl.Series
    decided: np.ndarray


def _anchored(pattern: str | None, *, whole: bool) -> str | None:
    if not pattern:
        return None
    # Numbers here are ASCII digits: [0-9] matches what \d does on them, and compiles
    # nine times faster in the engine (whose \d is Unicode's).
    pattern = pattern.replace("\\d", "[0-9]")
    return f"^(?:{pattern})$" if whole else f"^(?:{pattern})"


_DIGITS = frozenset("0123456789")


def first_digits(pattern: str | None) -> frozenset[str]:
    """The digits a match of ``pattern`` can start with (all ten when unsure)."""
    if not pattern:
        return frozenset()
    try:
        return _first(list(sre_parse.parse(pattern).data)) & _DIGITS
    except (TypeError, ValueError, KeyError):
        return _DIGITS


def _first(items: list[Any]) -> frozenset[str]:
    """First characters of a parsed sequence; ``_DIGITS`` stands for "anything"."""
    for at, (op, arg) in enumerate(items):
        name = str(op)
        if name == "LITERAL":
            return frozenset(chr(arg))
        if name == "IN":
            chars: set[str] = set()
            for kind, value in arg:
                if str(kind) == "LITERAL":
                    chars.add(chr(value))
                elif str(kind) == "RANGE":
                    chars.update(map(chr, range(value[0], value[1] + 1)))
                else:
                    return _DIGITS
            return frozenset(chars)
        if name == "SUBPATTERN":
            return _first(list(arg[3]))
        if name == "BRANCH":
            return frozenset().union(*(_first(list(b)) for b in arg[1]))
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            inner = _first(list(arg[2]))
            if arg[0] > 0:
                return inner
            return inner | _first(items[at + 1 :])
        return _DIGITS
    return _DIGITS  # an empty match: anything may follow


@cache
def _width(pattern: str | None) -> int | None:
    """The length of every match of ``pattern``, or None when matches differ in length."""
    if not pattern:
        return None
    low, high = sre_parse.parse(pattern).getwidth()
    return low if low == high else None


def _length_bits(meta: Any, accept: Any) -> int:
    """Bit n set when ``accept(_test_number_length('0' * n))`` (it looks at the length only)."""
    verdicts = [_test_number_length("0" * n, meta) for n in range(_MAX_INPUT + 1)]
    assert all(v == ValidationResult.TOO_LONG for v in verdicts[_LENGTHS - 1 :])
    return sum(1 << n for n, v in enumerate(verdicts[:_LENGTHS]) if accept(v))


@dataclass(slots=True)
class _Table:
    """One lookup table: key -> value, as the Series pair ``replace_strict`` takes."""

    dtype: Any
    values: dict[str, Any] = field(default_factory=dict)
    _series: tuple[pl.Series, pl.Series] | None = None

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value
        self._series = None

    def expr(self, key: pl.Expr) -> pl.Expr:
        if self._series is None:
            old = pl.Series(list(self.values), dtype=pl.String)
            self._series = (old, pl.Series(list(self.values.values()), dtype=self.dtype))
        return key.replace_strict(*self._series, default=None, return_dtype=self.dtype)


class _Prefixes:
    """Patterns matched at the start of a number (``re.match``), per key (a region or a
    metadata key): the length of the prefix each number starts with.

    A literal prefix (``00``, ``011``, ``0``: most of them) is tested with ``starts_with``
    and one whose matches all have the same length with ``contains``, each one call for
    every key at once (a column of prefixes or patterns); only the few others are
    extracted group by group.
    """

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self.first: dict[str, frozenset[str]] = {}
        self.literal = _Table(pl.String)
        self.fixed = _Table(pl.String)  # anchored patterns whose matches have one length
        self.width = _Table(pl.Int64)

    def put(self, key: str, pattern: str | None) -> None:
        self.first[key] = first_digits(pattern)
        if not pattern:
            return
        if pattern.isascii() and pattern.isdigit():
            self.literal.put(key, pattern)
        elif (width := _width(pattern)) is not None:
            self.fixed.put(key, _anchored(pattern, whole=False))
            self.width.put(key, width)
        else:
            self.raw[key] = pattern

    def lengths(self, frame: pl.DataFrame, value: str, key: str) -> np.ndarray:
        """Per row of ``frame``: the length of the prefix ``frame[value]`` starts with,
        by the pattern of ``frame[key]``; -1 where it does not match (or no pattern)."""
        if not frame.height:
            return np.full(0, -1, dtype=np.int64)
        v, k = _col(value), _col(key)
        literal = self.literal.expr(k) if self.literal.values else pl.lit(None, pl.String)
        fixed = self.fixed.expr(k) if self.fixed.values else pl.lit(None, pl.String)
        width = self.width.expr(k) if self.width.values else pl.lit(None, pl.Int64)
        found = frame.select(
            pl.when(v.str.starts_with(literal).fill_null(False))
            .then(literal.str.len_bytes().cast(pl.Int64))
            .when(v.str.contains(fixed).fill_null(False))
            .then(width)
            .otherwise(pl.lit(-1, pl.Int64))
        ).to_series()
        out = found.to_numpy().astype(np.int64)
        if self.raw:
            varying = frame.with_row_index("_i").filter(k.is_in(list(self.raw)))
            for (name,), part in varying.partition_by(key, as_dict=True).items():
                ascii_ = self.raw[name].replace("\\d", "[0-9]")
                extracted = part[value].str.extract(f"^({ascii_})", 1)
                out[part["_i"].to_numpy()] = extracted.str.len_bytes().fill_null(-1).to_numpy()
        return out


class _Tables:
    """What parse() needs of each region and calling code seen so far, as lookup tables."""

    def __init__(self) -> None:
        self.regions: set[str] = set()
        self.codes: set[int] = set()
        # region -> its calling code (text), international prefix, its metadata's key
        self.own = _Table(pl.String)
        self.idd = _Prefixes()
        self.too_long = _Table(pl.Int64)  # region -> length bits of TOO_LONG
        # metadata key ("R:NL" a region's, "C:31" a calling code's main region) ->
        self.prefix = _Prefixes()  # national_prefix_for_parsing
        self.general = _Table(pl.String)
        self.general_first: dict[str, frozenset[str]] = {}
        self.transform = _Table(pl.Boolean)
        self.strip = _Table(pl.Int64)  # length bits a stripped number may keep
        # calling code -> regions; "cc|k" -> k-th region's leading digits, general pattern;
        # "cc|k|n" -> its type patterns for numbers of length n
        self.count = _Table(pl.Int64)
        self.single = _Table(pl.Boolean)
        # A number no region of its code could take (wrong length, no general pattern
        # matches) is invalid without trying the regions one by one.
        self.any_general = _Table(pl.String)
        self.any_length = _Table(pl.Int64)
        self.leading = _Table(pl.String)
        self.valid_general = _Table(pl.String)
        self.types = _Table(pl.String)

    def _metadata(self, key: str, meta: Any) -> None:
        general = meta.general_desc.national_number_pattern if meta.general_desc else None
        self.prefix.put(key, meta.national_prefix_for_parsing)
        self.general.put(key, _anchored(general, whole=True))
        self.general_first[key] = first_digits(general)
        self.transform.put(key, bool(meta.national_prefix_transform_rule))
        self.strip.put(key, _length_bits(meta, lambda v: v not in _NOT_STRIPPED))

    def add_regions(self, regions: list[str]) -> None:
        for region in set(regions) - self.regions:
            meta = PhoneMetadata.metadata_for_region(region, None)
            self.regions.add(region)
            self.own.put(region, str(meta.country_code))
            self.idd.put(region, meta.international_prefix)
            self.too_long.put(region, _length_bits(meta, ValidationResult.TOO_LONG.__eq__))
            self._metadata(f"R:{region}", meta)

    def add_codes(self, codes: list[int]) -> None:
        for code in set(codes) - self.codes:
            self.codes.add(code)
            main = phonenumbers.region_code_for_country_code(code)
            meta = PhoneMetadata.metadata_for_region_or_calling_code(code, main)
            regions = country_rules(code).regions
            if meta is None or regions is None:
                continue  # no metadata: left to phonenumbers
            self._metadata(f"C:{code}", meta)
            self.count.put(str(code), len(regions))
            self.single.put(str(code), len(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]) == 1)
            generals = [f"(?:{r.general})" for r in regions if r.general and r.alternatives]
            self.any_general.put(str(code), _anchored("|".join(generals), whole=True))
            lengths = {n for r in regions for n in r.alternatives}
            self.any_length.put(str(code), sum(1 << n for n in lengths if n < _LENGTHS))
            for k, rules in enumerate(regions):
                self.leading.put(f"{code}|{k}", _anchored(rules.leading, whole=False))
                self.valid_general.put(f"{code}|{k}", _anchored(rules.general, whole=True))
                for length, alternatives in rules.alternatives.items():
                    self.types.put(f"{code}|{k}|{length}", _anchored(alternatives, whole=True))


def _bit(bits: pl.Expr, length: pl.Expr) -> pl.Expr:
    """Whether bit ``length`` of ``bits`` is set (lengths from _LENGTHS on: the top bit)."""
    power = pl.lit(2, dtype=pl.Int64).pow(pl.min_horizontal(length, _LENGTHS - 1).cast(pl.Int64))
    return ((bits // power) % 2) == 1


def _matches(value: pl.Expr, pattern: pl.Expr) -> pl.Expr:
    return value.str.contains(pattern).fill_null(False)


Lookup = Callable[[Any], "str | None"]


def _match_by_key(
    frame: pl.DataFrame,
    key: str,
    tests: dict[str, tuple[str, Lookup]],
    universe: Iterable[Any],
) -> pl.DataFrame:
    """``frame`` with a boolean column per test ``name: (column, lookup)``: whether the
    row's ``column`` matches the anchored pattern ``lookup(row's key)`` (False without).

    One regex serves every key: ``"<key>#<value>"`` against ``^(?:k1#P1|k2#P2|...)``. It
    is built over the whole ``universe`` of keys, not only those in the block, so the
    same pattern text comes back block after block and the engine's regex cache (32
    patterns) keeps it compiled. (A column of per-row patterns would be hashed row by
    row, which costs more than the match for the long type patterns.)
    """
    keys = sorted({str(k): k for k in universe}.items())
    found = {}
    for name, (column, lookup) in tests.items():
        whole, alternatives = True, []
        for text, value in keys:
            pattern = lookup(value)
            if pattern:
                whole = pattern.endswith("$")
                inner = pattern[1:-1] if whole else pattern[1:]
                alternatives.append(f"{re.escape(text)}#{inner}")
        if not alternatives:
            found[name] = pl.lit(False)
            continue
        combined = "^(?:" + "|".join(alternatives) + (")$" if whole else ")")
        haystack = pl.concat_str(_col(key).cast(pl.String), pl.lit("#"), _col(column))
        found[name] = haystack.str.contains(combined).fill_null(False)
    return frame.with_columns(**found)


class PhoneColumns:
    """Resolves blocks of phone numbers; keeps its lookup tables from block to block."""

    def __init__(self) -> None:
        self._tables = _Tables()

    def resolve(self, raw: pl.Series, regions: pl.Series) -> PhoneAnswers:
        """E.164 for each stripped, non-empty ``raw`` number, with each row's region (or
        null). Rows not ``decided`` must be answered by ``to_e164``."""
        t = self._tables
        t.add_regions([r for r in regions.unique().to_list() if r is not None])
        e164 = pl.Series("e164", [None] * raw.len(), dtype=pl.String)
        decided = np.zeros(raw.len(), dtype=bool)
        frame = pl.DataFrame({"raw": raw, "region": regions}).with_row_index("row")
        frame = frame.with_columns(
            text=pl.when(_col("raw").str.len_chars() <= _MAX_INPUT).then(
                _col("raw").str.replace_many([" ", "-", "(", ")", "."], [""] * 5)
            )
        ).with_columns(
            intl=_col("text").str.contains(r"^\+[0-9]{3,}$").fill_null(False),
            digits=_col("text").str.contains(r"^[0-9]{4,}$").fill_null(False),
        )
        # Digits without "+" and without a region: parse() refuses them.
        decided[frame.filter(_col("digits") & _col("region").is_null())["row"].to_numpy()] = True
        tasks = [self._international(frame.filter(_col("intl")))]
        tasks += self._national(
            frame.filter(_col("digits") & _col("region").is_not_null()), decided
        )
        todo = (
            pl.concat([x for x in tasks if x.height], how="vertical")
            if any(x.height for x in tasks)
            else None
        )
        if todo is not None:
            t.add_codes(todo["cc"].unique().to_list())
            self._validate(self._strip(todo), e164, decided)
        return PhoneAnswers(e164, decided)

    @staticmethod
    def _coded(frame: pl.DataFrame, digits: str) -> pl.DataFrame:
        """Tasks of numbers that start with a calling code (after ``+`` or an IDD)."""
        start = _col(digits).str.slice(0, 3)
        frame = frame.with_columns(
            cc=start.replace_strict(_CC_CODE, default=0, return_dtype=pl.Int64),
            size=start.replace_strict(_CC_SIZE, default=0, return_dtype=pl.Int64),
        ).filter(_col("cc") > 0)
        return frame.select(
            "row",
            "cc",
            nsn=_col(digits).str.slice(_col("size")),
            meta=pl.concat_str(pl.lit("C:"), _col("cc").cast(pl.String)),
        )

    def _international(self, frame: pl.DataFrame) -> pl.DataFrame:
        # An unknown calling code makes parse() try again without the "+": left undecided.
        return self._coded(frame.with_columns(digits=_col("text").str.slice(1)), "digits")

    def _national(self, frame: pl.DataFrame, decided: np.ndarray) -> list[pl.DataFrame]:
        """Digits written for the row's region: an IDD, its own calling code, or national."""
        t = self._tables
        idd = t.idd.lengths(frame, "text", "region")
        frame = frame.with_columns(
            idd=pl.Series(idd), after=_col("text").str.slice(pl.Series(np.maximum(idd, 0)))
        ).with_columns(
            # A calling code never starts with 0: then the international prefix is not one.
            via_idd=(_col("idd") >= 0) & ~_col("after").str.starts_with("0")
        )
        via_idd = frame.filter(_col("via_idd"))
        coded = self._coded(via_idd.filter(_col("after").str.len_bytes() > _MIN_NSN), "after")
        # Too short after the IDD, or no calling code after it: parse() refuses them.
        refused = np.setdiff1d(via_idd["row"].to_numpy(), coded["row"].to_numpy())
        decided[refused] = True
        rest = frame.filter(~_col("via_idd")).with_columns(
            own=t.own.expr(_col("region")), rmeta=pl.concat_str(pl.lit("R:"), _col("region"))
        )
        rest = rest.with_columns(starts=_col("text").str.starts_with(_col("own")))
        own, undecided = self._own_code(rest.filter(_col("starts")))
        taken = np.concatenate([own["row"].to_numpy(), undecided])
        national = rest.filter(pl.Series(~np.isin(rest["row"].to_numpy(), taken)))
        plain = national.select(
            "row", cc=_col("own").cast(pl.Int64), nsn=_col("text"), meta=_col("rmeta")
        )
        return [coded, own, plain]

    def _own_code(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
        """``_maybe_extract_country_code`` for digits starting with the region's own code:
        the tasks where parse() takes the code off, and the rows left undecided."""
        if not frame.height:
            empty = frame.select(
                "row", cc=pl.lit(0, pl.Int64), nsn=_col("text"), meta=_col("rmeta")
            )
            return empty, np.empty(0, dtype=np.uint32)
        t = self._tables
        frame = frame.with_columns(pot=_col("text").str.slice(_col("own").str.len_bytes()))
        frame = frame.with_columns(self._candidate(frame, "pot", "rmeta"))

        def text_general(key: str) -> str | None:
            # The number starts with the region's own code's first digit.
            own = t.own.values.get(key[2:]) or ""
            if own[:1] in t.general_first.get(key, _DIGITS):
                return t.general.values.get(key)
            return None

        frame = _match_by_key(
            frame,
            "rmeta",
            {"g_text": ("text", text_general), "g_cand": ("cand", t.general.values.get)},
            t.general.values,
        )
        frame = frame.with_columns(
            undecided=_col("found") & t.transform.expr(_col("rmeta")),
            better=(~_col("g_text") & _col("g_cand"))
            | _bit(t.too_long.expr(_col("region")), _col("text").str.len_bytes()),
        )
        undecided = frame.filter(_col("undecided"))["row"].to_numpy()
        taken = frame.filter(~_col("undecided") & _col("better")).select(
            "row",
            cc=_col("own").cast(pl.Int64),
            nsn=_col("cand"),
            meta=pl.concat_str(pl.lit("C:"), _col("own")),
        )
        return taken, undecided

    def _candidate(self, frame: pl.DataFrame, number: str, meta: str) -> pl.DataFrame:
        """``_maybe_strip_national_prefix_carrier_code``: ``cand``, the number it gives,
        and ``found``, whether a prefix matched. A transform rule is not replayed: the
        caller leaves those undecided."""
        t = self._tables
        lengths = t.prefix.lengths(frame, number, meta)
        found = lengths >= 0
        cand = frame[number]
        if found.any():
            hit = frame.filter(pl.Series(found))
            hit = hit.with_columns(stripped=_col(number).str.slice(pl.Series(lengths[found])))

            # A number that starts with a national prefix the general pattern cannot start
            # with is not viable: no need to ask the engine (most trunk prefixes are 0).
            def general(key: str) -> str | None:
                if t.general_first.get(key, _DIGITS) & t.prefix.first.get(key, _DIGITS):
                    return t.general.values.get(key)
                return None

            hit = _match_by_key(
                hit,
                meta,
                {"viable": (number, general), "kept": ("stripped", general)},
                t.general.values,
            )
            kept = hit.select(
                pl.when(_col("viable") & ~_col("kept"))
                .then(_col(number))
                .otherwise(_col("stripped"))
            ).to_series()
            cand = cand.clone().scatter(np.flatnonzero(found), kept)
        return pl.DataFrame({"cand": cand, "found": found})

    def _strip(self, tasks: pl.DataFrame) -> pl.DataFrame:
        """parse()'s national-prefix step with each task's metadata, then its length test."""
        t = self._tables
        tasks = tasks.with_columns(self._candidate(tasks, "nsn", "meta"))
        keep = (_col("cand") != _col("nsn")) & _bit(
            t.strip.expr(_col("meta")), _col("cand").str.len_bytes()
        )
        return tasks.select(
            "row",
            "cc",
            undecided=_col("found") & t.transform.expr(_col("meta")),
            short=_col("nsn").str.len_bytes() < _MIN_NSN,
            nsn=pl.when(keep).then(_col("cand")).otherwise(_col("nsn")),
        )

    def _validate(self, tasks: pl.DataFrame, e164: pl.Series, decided: np.ndarray) -> None:
        """``is_valid_number``: region by region (``region_code_for_number``), vectorised
        while enough numbers are left."""
        t = self._tables
        tasks = tasks.with_columns(
            length=_col("nsn").str.len_bytes(), code=_col("cc").cast(pl.String)
        ).with_columns(bad=_col("short") | (_col("length") > _MAX_NSN))
        decided[tasks.filter(~_col("undecided") & _col("bad"))["row"].to_numpy()] = True
        tasks = tasks.filter(
            ~_col("undecided") & ~_col("bad") & t.count.expr(_col("code")).is_not_null()
        ).with_columns(single=t.single.expr(_col("code")), count=t.count.expr(_col("code")))
        # A number no region of its code could take (a length none allows, no general
        # pattern matches): invalid without trying the regions one by one.
        single = tasks["single"].to_numpy()
        if not single.all():
            multi = _match_by_key(
                tasks.filter(pl.Series(~single)),
                "code",
                {"any": ("nsn", t.any_general.values.get)},
                t.any_general.values,
            ).with_columns(
                hopeless=~(_bit(t.any_length.expr(_col("code")), _col("length")) & _col("any"))
            )
            hopeless = multi.filter(_col("hopeless"))["row"].to_numpy()
            decided[hopeless] = True
            tasks = tasks.filter(pl.Series(~np.isin(tasks["row"].to_numpy(), hopeless)))
        tasks = tasks.with_columns(
            # general and type pattern in one regex: "<nsn>#<nsn>" against "^G#T$".
            twice=pl.concat_str(_col("nsn"), pl.lit("#"), _col("nsn")),
            shape=_col("cc") * 100 + _col("length").cast(pl.Int64),
        )
        k = 0
        while tasks.height and (k == 0 or tasks.height > _FEW):

            def valid(shape: int, k: int = k) -> str | None:
                key = f"{shape // 100}|{k}"
                general = t.valid_general.values.get(key)
                types = t.types.values.get(f"{key}|{shape % 100}")
                return f"{general[:-1]}#{types[1:]}" if general and types else None

            def lead(code: int, k: int = k) -> str | None:
                return t.leading.values.get(f"{code}|{k}")

            shapes = [c * 100 + n for c in sorted(t.codes) for n in range(_MIN_NSN, _MAX_NSN + 1)]
            checked = _match_by_key(tasks, "shape", {"valid": ("twice", valid)}, shapes)
            checked = _match_by_key(checked, "cc", {"led": ("nsn", lead)}, sorted(t.codes))
            checked = checked.with_columns(
                found=_col("single")
                | _col("led")
                | (
                    t.leading.expr(pl.concat_str(_col("code"), pl.lit(f"|{k}"))).is_null()
                    & _col("valid")
                ),
                past=pl.lit(k + 1) >= _col("count"),
            )
            found, valid_ = checked["found"].to_numpy(), checked["valid"].to_numpy()
            done = found | checked["past"].to_numpy()
            rows = checked["row"].to_numpy()
            decided[rows[done]] = True
            ok = done & found & valid_
            if ok.any():
                numbers = checked.filter(pl.Series(ok)).select(
                    pl.concat_str(pl.lit("+"), _col("code"), _col("nsn"))
                )
                e164.scatter(rows[ok], numbers.to_series())
            tasks = checked.filter(pl.Series(~done)).select(tasks.columns)
            k += 1
