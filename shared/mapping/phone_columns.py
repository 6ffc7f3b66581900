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

from dataclasses import dataclass
from typing import Final

import numpy as np

from shared.engine import pl
from shared.mapping.phone_patterns import (
    DIGITS,
    MAX_INPUT,
    MAX_NSN,
    PhoneTables,
    bit,
    match_by_key,
)
from shared.mapping.phones import CC_PREFIXES

__all__ = ["PhoneAnswers", "PhoneColumns"]

_MIN_NSN = 2  # phonenumbers' shortest national significant number
_FEW = 24  # rows left for a calling code's later regions: cheaper row by row
_CC_SIZE: Final = {start: size for start, (size, _) in CC_PREFIXES.items()}
_CC_CODE: Final = {start: code for start, (_, code) in CC_PREFIXES.items()}
_col = pl.col


@dataclass(frozen=True, slots=True)
class PhoneAnswers:
    """Per row: the E.164 number (null: invalid or undecided) and whether it was decided."""

    e164: pl.Series
    decided: np.ndarray


class PhoneColumns:
    """Resolves blocks of phone numbers; keeps its lookup tables from block to block."""

    def __init__(self) -> None:
        self._tables = PhoneTables()

    def resolve(self, raw: pl.Series, regions: pl.Series) -> PhoneAnswers:
        """E.164 for each stripped, non-empty ``raw`` number, with each row's region (or
        null). Rows not ``decided`` must be answered by ``to_e164``."""
        t = self._tables
        t.add_regions([r for r in regions.unique().to_list() if r is not None])
        e164 = pl.Series("e164", [None] * raw.len(), dtype=pl.String)
        decided = np.zeros(raw.len(), dtype=bool)
        frame = pl.DataFrame({"raw": raw, "region": regions}).with_row_index("row")
        frame = frame.with_columns(
            text=pl.when(_col("raw").str.len_chars() <= MAX_INPUT).then(
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
            if own[:1] in t.general_first.get(key, DIGITS):
                return t.general.values.get(key)
            return None

        frame = match_by_key(
            frame,
            "rmeta",
            {"g_text": ("text", text_general), "g_cand": ("cand", t.general.values.get)},
            t.general.values,
        )
        frame = frame.with_columns(
            undecided=_col("found") & t.transform.expr(_col("rmeta")),
            better=(~_col("g_text") & _col("g_cand"))
            | bit(t.too_long.expr(_col("region")), _col("text").str.len_bytes()),
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
                if t.general_first.get(key, DIGITS) & t.prefix.first.get(key, DIGITS):
                    return t.general.values.get(key)
                return None

            hit = match_by_key(
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
        keep = (_col("cand") != _col("nsn")) & bit(
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
        ).with_columns(bad=_col("short") | (_col("length") > MAX_NSN))
        decided[tasks.filter(~_col("undecided") & _col("bad"))["row"].to_numpy()] = True
        tasks = tasks.filter(
            ~_col("undecided") & ~_col("bad") & t.count.expr(_col("code")).is_not_null()
        ).with_columns(single=t.single.expr(_col("code")), count=t.count.expr(_col("code")))
        # A number no region of its code could take (a length none allows, no general
        # pattern matches): invalid without trying the regions one by one.
        single = tasks["single"].to_numpy()
        if not single.all():
            multi = match_by_key(
                tasks.filter(pl.Series(~single)),
                "code",
                {"any": ("nsn", t.any_general.values.get)},
                t.any_general.values,
            ).with_columns(
                hopeless=~(bit(t.any_length.expr(_col("code")), _col("length")) & _col("any"))
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

            shapes = [c * 100 + n for c in sorted(t.codes) for n in range(_MIN_NSN, MAX_NSN + 1)]
            checked = match_by_key(tasks, "shape", {"valid": ("twice", valid)}, shapes)
            checked = match_by_key(checked, "cc", {"led": ("nsn", lead)}, sorted(t.codes))
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
