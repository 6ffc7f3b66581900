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
from typing import Any, NamedTuple

import numpy as np
import orjson

from shared.blocks import RowBlock, column_name
from shared.definitions import PROFILE_FIELDS, MappingSpec
from shared.engine import pl
from shared.mapping import values as typed
from shared.mapping.emails import plain_email
from shared.mapping.phone_columns import PhoneColumns
from shared.mapping.phones import REGIONS
from shared.mapping.rejects import RejectCode, RowRejected
from shared.mapping.rows import ProfileMapper, mapped_positions
from shared.profileblock import ProfileBlock, email_keys, part_hashes

__all__ = ["PY_WHITESPACE", "BlockMapper", "MappedBlock", "Reject"]

# str.strip()'s set: Rust's char::is_whitespace lacks \x1c-\x1f (tests/test_mapping.py).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
MAX_PROFILE_BYTES = 100_000  # Klaviyo's limit per profile (decimal, a margin on "KB")
# orjson's escapes: the two that must be, and every control character.
_ESCAPED = ["\\", '"', *map(chr, range(32))]
_ESCAPES = [orjson.dumps(c).decode()[1:-1] for c in _ESCAPED]
_col = pl.col


class Reject(NamedTuple):
    """A row that is not sent: where it is, why (code + detail), the raw e-mail value."""

    file_index: int
    line: int
    code: str
    detail: str
    email: str


@dataclass(frozen=True, slots=True)
class MappedBlock:
    """One block mapped: its profiles, its rejected rows (in line order) and how many
    records it held."""

    profiles: ProfileBlock
    rejects: list[Reject]
    records: int


@dataclass(frozen=True, slots=True)
class _Field:
    key: str  # the JSON key, as orjson writes it (quoted)
    column: str  # in the block's frame
    kind: str  # "string", "number", "boolean", "date", "latitude", "longitude"


def _strip(column: str, *, controls: bool = False) -> pl.Expr:
    """A string value as ``clean_text`` makes it (null when empty); ``controls``: the
    block may hold control characters, to be removed."""
    value = _col(column).str.strip_chars(PY_WHITESPACE)
    if controls:
        value = value.str.replace_all(typed.CONTROLS, "").str.strip_chars(PY_WHITESPACE)
    return pl.when(value != "").then(value)


def json_string(value: pl.Expr) -> pl.Expr:
    """``value`` as a JSON string literal, escaped as orjson escapes it."""
    return pl.concat_str(pl.lit('"'), value.str.replace_many(_ESCAPED, _ESCAPES), pl.lit('"'))


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
            _Field(_key(f), at[f"mapping.{f}"], "string")
            for f in PROFILE_FIELDS
            if f != "phone_number" and f"mapping.{f}" in at
        ]
        coordinates = {"latitude", "longitude"}
        location = [(f, at[f"mapping.location.{f}"]) for f, _ in mapping.location]
        self._location = [_Field(_key(f), c, "string") for f, c in location if f not in coordinates]
        self._location += [_Field(_key(f), c, f) for f, c in location if f in coordinates]
        props = [(p, at[f"mapping.properties.{p.name}.column"]) for p in mapping.properties]
        self._properties = [
            _Field(_key(p.name), c, "string") for p, c in props if p.type == "string"
        ]
        self._properties += [
            _Field(_key(p.name), c, p.type) for p, c in props if p.type != "string"
        ]

    def map(self, block: RowBlock) -> MappedBlock:
        """The block's profiles (in input order) and rejected rows (in line order)."""
        # One lazy query for the stages: the engine plans them together (a quarter less
        # work than stage by stage, measured).
        query = block.frame.lazy().with_row_index("row")
        for stage in self._stages(block):
            query = query.with_columns(stage)
        frame = query.collect()
        phone_e164, phone_ok = self._phone_answers(frame)
        frame = frame.with_columns(phone=phone_e164, phone_ok=pl.Series(phone_ok)).with_columns(
            missing=_col("email").is_null(),
            slow=_col("email").is_not_null()
            & ~(_col("email_ok") & _col("phone_ok") & _col("values_ok")),
        )
        rejects = [Reject(block.file_index, r.line, r.code, r.detail, "") for r in block.rejects]
        missing = frame.select("row", self._email, "missing").filter(_col("missing"))
        rejects += [
            Reject(
                block.file_index,
                int(block.lines[row]),
                str(RejectCode.MISSING_EMAIL),
                "no e-mail address",
                raw,
            )
            for row, raw in zip(
                missing["row"].to_list(), missing[self._email].to_list(), strict=True
            )
        ]
        slow_rows = frame.select(_col("row").filter(_col("slow"))).to_series().to_numpy()
        slow = self._slow_rows(block, slow_rows, rejects)
        profiles = self._assemble(block, frame, slow, rejects)
        rejects.sort(key=lambda r: r.line)
        return MappedBlock(profiles, rejects, block.records)

    # -- the engine's part ----------------------------------------------------------

    def _stages(self, block: RowBlock) -> list[list[pl.Expr]]:
        """The engine's work, in stages: each uses only columns of the stages before (the
        engine evaluates a repeated sub-expression again each time)."""
        raw = _col(self._email).str.strip_chars(PY_WHITESPACE)
        first = [pl.when(raw != "").then(raw).alias("email")]
        for f in (*self._top, *self._location, *self._properties):
            controls = block.controls and f.kind == "string"
            first.append(_strip(f.column, controls=controls).alias(f"v_{f.column}"))
        if self._phone is not None:
            first.append(_strip(self._phone).alias("phone_raw"))
            first.append(self._regions(block).alias("region"))
        email = _col("email")
        ascii_ = email.str.len_bytes() == email.str.len_chars()
        stages = [
            _unique(first),
            [pl.when(ascii_).then(email.str.to_lowercase()).alias("email_norm")],
            *plain_email("email_norm", "email_ok"),
        ]
        checks = []
        for f in {f.column: f for f in (*self._location, *self._properties)}.values():
            if f.kind != "string":
                steps = typed.json_form(f"v_{f.column}", f.kind, f"j_{f.column}")
                for i, step in enumerate(steps, start=1):
                    if i == len(stages):
                        stages.append([])
                    stages[i] += step
                checks.append(_col(f"v_{f.column}").is_null() | _col(f"j_{f.column}_ok"))
        stages.append([pl.all_horizontal(checks or [pl.lit(True)]).alias("values_ok")])
        return stages

    def _regions(self, block: RowBlock) -> pl.Expr:
        """Each row's phone region: its region column's ISO code, else the default."""
        default = self._default_region
        if self._region is None:
            return pl.lit(default, dtype=pl.String)
        # Few distinct values: Python's own strip().upper() on each, exactly as rows.py.
        seen = block.frame[self._region].unique().to_list()
        codes = {v: (c if (c := v.strip().upper()) in REGIONS else default) for v in seen}
        old = pl.Series(list(codes), dtype=pl.String)
        new = pl.Series(list(codes.values()), dtype=pl.String)
        return _col(self._region).replace_strict(old, new, return_dtype=pl.String)

    def _phone_answers(self, frame: pl.DataFrame) -> tuple[pl.Series, np.ndarray]:
        n = frame.height
        if self._phone is None:
            return pl.Series([None] * n, dtype=pl.String), np.ones(n, dtype=bool)
        # Only the three columns: filtering the whole frame copies every column.
        rows = frame.select("row", "phone_raw", "region").filter(_col("phone_raw").is_not_null())
        answers = self._phones.resolve(rows["phone_raw"], rows["region"])
        e164 = pl.Series([None] * n, dtype=pl.String)
        e164.scatter(rows["row"].to_numpy(), answers.e164)
        ok = np.ones(n, dtype=bool)
        ok[rows["row"].to_numpy()] = answers.decided
        return e164, ok

    def _objects(self) -> list[pl.Expr]:
        """The inside of ``location`` and ``properties``: ``,"k":v`` pieces, nulls left out."""
        objects = []
        for group, name in ((self._location, "o_location"), (self._properties, "o_properties")):
            if group:
                pieces = [self._piece(f) for f in group]
                objects.append(pl.concat_str(pieces, ignore_nulls=True).alias(name))
        return objects

    def _json(self) -> pl.Expr:
        pieces: list[pl.Expr] = [
            pl.lit('{"type":"profile","attributes":{"email":"'),
            _col("email_norm"),
            pl.lit('"'),
        ]
        if self._phone is not None:
            pieces.append(pl.concat_str(pl.lit(',"phone_number":"'), _col("phone"), pl.lit('"')))
        pieces += [self._piece(f) for f in self._top]
        for group, key in ((self._location, '"location"'), (self._properties, '"properties"')):
            if group:
                inner = _col(f"o_{key.strip(chr(34))}")
                pieces.append(
                    pl.when(inner != "").then(
                        pl.concat_str(pl.lit(f",{key}:{{"), inner.str.slice(1), pl.lit("}"))
                    )
                )
        pieces.append(pl.lit("}}"))
        return pl.concat_str(pieces, ignore_nulls=True).alias("json")

    @staticmethod
    def _piece(f: _Field) -> pl.Expr:
        value = _col(f"v_{f.column}") if f.kind == "string" else _col(f"j_{f.column}")
        text = json_string(value) if f.kind == "string" else value
        return pl.concat_str(pl.lit(f",{f.key}:"), text)

    # -- rows the engine leaves to ProfileMapper, and the whole block ------------------

    def _slow_rows(self, block: RowBlock, rows: np.ndarray, rejects: list[Reject]) -> pl.DataFrame:
        """The rows the engine did not decide, through ProfileMapper and orjson: their
        (row, email, json, dropped) for those that become profiles; the others rejected."""
        out: dict[str, list[Any]] = {"row": [], "s_email": [], "s_json": [], "s_dropped": []}
        if rows.size:
            email_at = block.frame.columns.index(self._email)
            values = block.frame.select(pl.all().gather(rows)).rows()
            for row, vals in zip(rows.tolist(), values, strict=True):
                try:
                    profile = self._rows.to_profile(vals)
                except RowRejected as exc:
                    rejects.append(
                        Reject(
                            block.file_index,
                            int(block.lines[row]),
                            str(exc.code),
                            exc.detail,
                            vals[email_at],
                        )
                    )
                    continue
                part = orjson.dumps({"type": "profile", "attributes": profile.attributes})
                out["row"].append(row)
                out["s_email"].append(profile.email)
                out["s_json"].append(part.decode("utf-8"))
                out["s_dropped"].append(profile.phone_dropped)
        return pl.DataFrame(
            out,
            schema={
                "row": pl.UInt32,
                "s_email": pl.String,
                "s_json": pl.String,
                "s_dropped": pl.Boolean,
            },
        )

    def _assemble(
        self, block: RowBlock, frame: pl.DataFrame, slow: pl.DataFrame, rejects: list[Reject]
    ) -> ProfileBlock:
        """Fast and slow rows back in input order; profiles over 100 KB rejected."""
        dropped = (
            _col("phone_raw").is_not_null() & _col("phone").is_null()
            if self._phone is not None
            else pl.lit(False)
        )
        query = frame.lazy().filter(~_col("missing") & ~_col("slow"))
        objects = self._objects()
        if objects:
            query = query.with_columns(objects)
        query = query.select("row", email=_col("email_norm"), json=self._json(), dropped=dropped)
        fast = query.collect()
        done = (
            pl.concat(
                [fast, slow.rename({"s_email": "email", "s_json": "json", "s_dropped": "dropped"})]
            )
            .sort("row")
            .with_columns(size=_col("json").str.len_bytes())
        )
        big = done.filter(_col("size") > MAX_PROFILE_BYTES)
        for row, size, email in big.select("row", "size", "email").iter_rows():
            reason = f"profile is {size:,} bytes; Klaviyo accepts at most 100 KB"
            rejects.append(
                Reject(
                    block.file_index,
                    int(block.lines[row]),
                    str(RejectCode.PROFILE_TOO_LARGE),
                    reason,
                    email,
                )
            )
        if big.height:
            done = done.filter(_col("size") <= MAX_PROFILE_BYTES)
        rows = done["row"].to_numpy()
        parts = done["json"].cast(pl.Binary).to_list()
        return ProfileBlock(
            emails=done["email"],
            keys=email_keys(done["email"]),
            attr_hashes=part_hashes(parts),
            files=np.full(rows.size, block.file_index, dtype=np.uint32),
            lines=block.lines[rows],
            phone_dropped=done["dropped"].to_numpy(),
            parts=parts,
        )


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
