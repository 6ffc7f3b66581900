"""The deterministic dirty fixture behind the data plane's golden hashes.

200,000 generated rows (the benchmark generator's dirt: invalid, missing, padded,
mixed-case and duplicate e-mails, nearly every person a phone number of their own in the
formats people type, quoted commas and newlines, a BOM) in three headerless partitions,
the second gzipped, plus a fourth partition of CSV and value traps written by hand:
lone carriage returns, blank lines, stray and doubled quotes, short and long records,
Unicode whitespace, compatibility forms, IDN and quoted e-mail addresses, phone numbers in
every shape, typed values at their edges, control characters and profiles over 100 KB.

Everything here is input the reader and the mapper must survive without failing the run,
so the golden hashes pin what a user sees for all of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from azure.storage.blob import ContainerClient

from devtools.sample_export import COLUMNS, SampleSummary, write_sample_export
from tests.exports import ROOT

FOLDER = "CustomerInsights_golden/KlaviyoExport"
SEGMENT = "Golden"
TAKEN_AT = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
ROWS = 200_000

_BASE = {
    "CustomerId": "T-1",
    "Email": "trap@example.com",
    "FirstName": "Trap",
    "LastName": "Row",
    "Phone": "",
    "City": "Utrecht",
    "Country": "NL",
    "LoyaltyTier": "Gold",
    "LifetimeValue": "10.50",
    "IsVip": "false",
    "SignupDate": "2024-01-02T03:04:05Z",
}
_NAMES = [name for name, _ in COLUMNS]


def _line(n: int, **values: str) -> str:
    """One unquoted record; values must hold no delimiter, quote or line break."""
    row = {**_BASE, "CustomerId": f"T-{n}", "Email": f"trap{n}@example.com", **values}
    return ",".join(row[name] for name in _NAMES)


def _quoted(n: int, **values: str) -> str:
    """One record with every field quoted (quotes doubled), as csv.QUOTE_ALL writes it."""
    row = {**_BASE, "CustomerId": f"T-{n}", "Email": f"trap{n}@example.com", **values}
    return ",".join('"' + row[name].replace('"', '""') + '"' for name in _NAMES)


_EMAILS = [
    "\u00a0padded.nbsp@example.com\u2003",
    "\x1cinfo.sep@example.com\x1f",
    "\u212aelvin@example.com",  # KELVIN SIGN lower-cases to an ASCII k
    "kelvin@example.com",
    "\uff41\uff42@example.com",  # full-width
    "\ufb01le@example.com",  # ligature fi
    "jöhn@exämple.com",
    "JÖHN@EXÄMPLE.COM",
    "user@xn--bcher-kva.example",
    "user@bücher.example",
    '"quoted local"@example.com',
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "b" * 60 + "@" + ".".join(["c" * 60] * 3) + ".com",
    "b@" + ".".join(["d" * 63] * 4) + ".com",
    "dots..twice@example.com",
    ".leading@example.com",
    "trailing.@example.com",
    "one@x.c",
    "digits@example.123",
    "host@localhost",
    "special@example.test",
    "dash--local@example.com",
    "dash@double--dash.com",
    "idna@xn--c.com",
    "caps@EXAMPLE.COM",
    "CAPS@example.com",
    "\u01c5ungla@example.com",  # titlecase digraph
    "stra\u00dfe@example.de",
    "\u0130stanbul@example.com",  # dotted capital I
    "\u039f\u0394\u039f\u03a3@example.gr",  # final sigma
    "tab\there@example.com",
    "semi;colon@example.com",
    "plus+tag@example.com",
    "o'brien@example.ie",
    "under_score@example.com",
    "@example.com",
    "nobody@",
    "two@@example.com",
    "sp ace@example.com",
    "dup.trap@example.com",
    "  DUP.TRAP@Example.com ",
    "x@[192.0.2.1]",
    "émile@example.fr",
    "ʇsǝʇ@example.com",
    "user@example.com.",
    "user@-example.com",
    "user@example-.com",
    "user@ex_ample.com",
    "\u200bzero.width@example.com",
]

_PHONES = [
    ("+44 (0)20 7946 0958", "GB"),
    ("0044 20 7946 0958", "GB"),
    ("011 44 20 7946 0958", "US"),
    ("1-415-555-0123", "US"),
    ("1 (415) 555-0123", "US"),
    ("14155550123", "US"),
    ("(415) 555-0123 x12", "US"),
    ("tel:+1-415-555-0123", "US"),
    ("+1 604 555 1234", "CA"),
    ("604-555-1234", "CA"),
    ("+31 6 12", "NL"),
    ("٠٦١٢٣٤٥٦٧٨", "NL"),
    ("".join(chr(0xFF10 + int(c)) for c in "0612345678"), "NL"),  # full-width digits
    ("+800 1234 5678", "NL"),
    ("+7 912 345 67 89", "RU"),
    ("+7 701 234 5678", "KZ"),
    ("+262 262 12 34 56", "FR"),
    ("+44 1624 456789", "GB"),
    ("01624 456789", "IM"),
    ("+39 06 1234 5678", "IT"),
    ("06 1234 5678", "IT"),
    ("+54 9 11 1234 5678", "AR"),
    ("011 15 1234 5678", "AR"),
    ("(11) 91234-5678", "BR"),
    ("0 xx 11 91234 5678", "BR"),
    ("+49 (0)30 1234567", "DE"),
    ("31612345678", "NL"),
    ("0031612345678", "NL"),
    ("+0031612345678", "NL"),
    ("++31612345678", "NL"),
    ("+31-6-1234-5678", "NL"),
    ("06 12345678", "United Kingdom"),
    ("06 12345678", " nl "),
    ("06 12345678", "nl"),
    ("06 12345678", ""),
    ("06 12345678", "XX"),
    ("06 12345678", "001"),
    ("+1 800 FLOWERS", "US"),
    ("1-800-FLOWERS", "US"),
    ("   ", "NL"),
    ("+", "NL"),
    ("0", "NL"),
    ("+999 123", "NL"),
    ("+882 3456 7890", "NL"),
    ("+1 242 357 1234", "BS"),
    ("+1 (0)415 555 0123", "US"),
    ("+44 07911 123456", "GB"),
    ("+61 4 1234 5678", "AU"),
    ("+61 8 9162 1234", "CC"),
    ("+47 79 12 34 56", "SJ"),
]

_NUMBERS = [
    "1,5", "1e3", ".5", "+7", "-0", "-0.0", "007", "1.10", "12345678901234567890",
    "NaN", "inf", "1_000", "١٢", "0.00001", "1e-7", "123456789012345.67", " 42 ",
    "\u00a042", "9007199254740993", "1.0", "5.", "-12.340", "0.1", "99999999999999.9",
    "1234567.891", "-0.000123", "3.14159265358979", "2.5e-3", "1E+2", "0x10",
]  # fmt: skip
_BOOLEANS = ["TRUE", "Yes", "y", "N", "1", "0", "maybe", "\uff54rue", "tRuE", "no", "2"]
_DATES = [
    "2023-04-01", "2023-02-29", "2024-02-29", "4/1/2023 12:00:00 AM", "4/1/2023 1:30:05 PM",
    "2023-04-01T10:30:00+02:00", "2023-04-01T00:00:00.0000000Z", "2023-04-01 10:30:00",
    "13/1/2023", "yesterday", "0000-01-01", "٢٠٢٣-04-01", "2023-04-01T24:00:00",
    "2023-04-31", "2023-12-31T23:59:59Z", "2023-04-01t10:30:00z", "20230401",
]  # fmt: skip
_STRINGS = [
    "tab\tinside", "nul\x00inside", "unit\x1fsep", "del\x7fete", "nel\x85line", "emoji 🎉",
    "עברית", "e\u0301", "line\u2028sep", "vt\x0bff\x0c", "   ", "\u3000", "back\\slash",
    "sl/ash", "\ud7ff", "\ufeffbom",
]  # fmt: skip


def traps_text() -> str:
    """The fourth partition: one trap per record (a few records span lines)."""
    lines: list[str] = ["\ufeff" + _line(1)]
    n = 2
    for email in _EMAILS:
        lines.append(_quoted(n, Email=email))
        n += 1
    for phone, country in _PHONES:
        lines.append(_quoted(n, Phone=phone, Country=country))
        n += 1
    for value in _NUMBERS:
        lines.append(_quoted(n, LifetimeValue=value))
        n += 1
    for value in _BOOLEANS:
        lines.append(_quoted(n, IsVip=value))
        n += 1
    for value in _DATES:
        lines.append(_quoted(n, SignupDate=value))
        n += 1
    for value in _STRINGS:
        lines.append(_quoted(n, FirstName=value, City=value, LoyaltyTier=value))
        n += 1
    # Record structure: line ends, blank lines, quoting.
    records = [
        _line(n) + "\r" + _line(n + 1),  # a lone CR ends a record
        "",  # blank line
        "\r",  # blank line written as a lone CR
        _quoted(n + 2, City="Den Haag\n(Zuid-Holland)"),
        _quoted(n + 3, City="Austin, TX\r\nUSA"),
        _quoted(n + 4, City="old\rmac"),
        _quoted(n + 5, FirstName='say ""hi""', LastName="a,b"),
        _line(n + 6, FirstName='Ann"e'),  # a stray quote inside a field is text
        _line(n + 7).replace(",Trap,", ',"Ann"e,'),  # text after a closing quote
        _line(n + 8).replace(",Trap,", ',"",'),  # an empty quoted field
        _line(n + 9).rsplit(",", 1)[0],  # one field short
        _line(n + 10) + ",extra",  # one field too many
        ",,,,,,,,,,",  # every field empty
        _line(n + 11, City="vt\x0bff\x0cfs\x1cgs\x1drs\x1eus\x1fnel\x85ls\u2028ps\u2029"),
        _line(n + 12, FirstName="x" * 110_000),  # profile over 100 KB
        _line(n + 13, FirstName="y" * 50_000, LastName="z" * 50_000),
        _line(n + 14, FirstName="w" * 99_000),  # just under the profile limit
        _line(n + 15, CustomerId="u" * 130_000),  # a big cell in a mapped column
        _quoted(n + 16, City="q" * 120_000),  # a big quoted cell
        _line(n + 17, Email=""),
        _line(n + 18, Email=" ", Phone="+31612345678"),
        _line(n + 19, Email="dup.trap@example.com", FirstName="Second"),
        '"' + _line(n + 20).replace(",", '","') + '"',  # QUOTE_ALL by hand
        _line(n + 21) + "\r\n\r\n\r\n",  # trailing blank lines (CRLF)
        _line(n + 22, Country=" gb ", Phone="020 7946 0958"),
    ]
    lines.extend(records)
    return "\r\n".join(lines) + "\r\n"


def definition_doc(container: str) -> dict[str, Any]:
    """The example definition (every column mapped), pointed at the fixture."""
    doc = json.loads((ROOT / "examples" / "vip-customers.json").read_text())
    doc["name"] = "golden"
    doc["source"] = {"container": container, "folder": FOLDER, "segment": SEGMENT}
    return doc


def write_golden_fixture(container: ContainerClient) -> SampleSummary:
    """Write the fixture (model.json + four partitions) into ``container``."""
    summary = write_sample_export(
        container,
        folder=FOLDER,
        segment=SEGMENT,
        rows=ROWS,
        partitions=3,
        seed=2026,
        taken_at=TAKEN_AT,
        phone_share=0.9,
        gzip_files={1},
    )
    traps = f"{summary.prefix}{SEGMENT}_4.csv"
    container.upload_blob(traps, traps_text().encode("utf-8"), overwrite=True)
    model_path = f"{FOLDER}/model.json"
    model = json.loads(container.download_blob(model_path).readall())
    (entity,) = [e for e in model["entities"] if e["name"] == SEGMENT]
    first = entity["partitions"][0]
    entity["partitions"].append(
        {**first, "name": f"{SEGMENT}_4", "location": first["location"].rsplit("/", 1)[0]
         + f"/{SEGMENT}_4.csv"}
    )  # fmt: skip
    container.upload_blob(model_path, json.dumps(model).encode(), overwrite=True)
    return summary
