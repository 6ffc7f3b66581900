"""E-mail addresses: normalised and checked exactly as emval does, a row or a column at a time.

emval costs 2-3 µs an address. Plain ASCII addresses are recognised by one pattern that
accepts only what emval accepts unchanged (tested against emval); the rest goes to emval.
For a column, the same pattern is split into Rust-regex parts (no look-arounds there) and
length checks, so that a block's addresses are decided in the engine.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final

import emval

from shared.mapping.rejects import RejectCode, RowRejected

__all__ = ["checked_email", "is_plain_email", "mask_email", "normalised_email", "plain_email"]


def mask_email(email: str) -> str:
    """``john.doe@example.com`` -> ``j***@example.com``: enough to recognise, not to use."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***{at}{domain}"


# --- e-mail -----------------------------------------------------------------------------

_EMAIL_VALIDATOR: Final = emval.EmailValidator(
    allow_smtputf8=True,
    allow_empty_local=False,
    allow_quoted_local=False,
    allow_domain_literal=False,
    deliverable_address=False,
)
# emval's Python wrapper copies every result field into a new Python object, which costs
# more than the validation itself (8 µs vs 3 µs a call). Its Rust validator takes the same
# input and returns the same fields, so call it directly when it is there.
_validate_email: Final[Callable[[str], Any]] = getattr(
    _EMAIL_VALIDATOR, "_emval", _EMAIL_VALIDATOR
).validate_email


# Addresses this simple are valid for emval too, and its normalised form is the address
# itself (tested against emval on generated addresses). Checking them here costs 0.5 µs
# instead of emval's 2-3 µs; anything else (Unicode, quoting, "--" in the domain, a
# one-letter or numeric TLD, special-use names) is left to emval.
_PLAIN_EMAIL: Final = re.compile(
    r"(?=.{1,254}\Z)(?=[^@]{1,64}@)"  # whole address, local part: emval's length limits
    r"[a-z0-9_+'-]+(?:\.[a-z0-9_+'-]+)*@"
    r"(?=.{1,253}\Z)(?!.*--)"  # domain length; "--" has IDNA rules, leave it to emval
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?!(?:arpa|invalid|local|localhost|onion|test)\Z)[a-z]{2,63}"  # special-use names
)
is_plain_email: Final = _PLAIN_EMAIL.fullmatch


def normalised_email(raw: str) -> str:
    """A row's e-mail cell as it is sent: stripped, lower-cased, checked (RowRejected)."""
    email = raw.strip().lower()
    return email if is_plain_email(email) else checked_email(email)


def checked_email(email: str) -> str:
    """emval's verdict on a stripped, lower-cased address that is not plain; raises
    RowRejected without ever quoting the address."""
    if not email:
        raise RowRejected(RejectCode.MISSING_EMAIL, "no e-mail address", field="mapping.email")
    try:
        result = _validate_email(email)
    except (SyntaxError, ValueError) as exc:
        reason = str(exc).replace(email, mask_email(email))
        raise RowRejected(
            RejectCode.INVALID_EMAIL, f"{mask_email(email)}: {reason}", field="mapping.email"
        ) from None
    if "." not in result.domain_name:
        # Valid by RFC 5321 but refused by Klaviyo (and undeliverable in practice).
        detail = f"{mask_email(email)}: the domain has no dot"
        raise RowRejected(RejectCode.INVALID_EMAIL, detail, field="mapping.email")
    if result.local_part != unicodedata.normalize("NFC", email.rpartition("@")[0]):
        # emval folds the local part with NFKC: the ligature U+FB01 in "\ufb01le" or the
        # full-width U+FF41 in "\uff41b" would make it "file" or "ab": another mailbox.
        # Canonical equivalents (NFC: composed and decomposed accents, the Kelvin sign)
        # are the same address; compatibility forms are not: refused, not merged.
        detail = (
            f"{mask_email(email)}: Unicode normalisation would turn it into another address "
            "(compatibility characters such as full-width letters or ligatures)"
        )
        raise RowRejected(RejectCode.INVALID_EMAIL, detail, field="mapping.email")
    return result.normalized  # type: ignore[no-any-return]


# The plain-address pattern for the engine: Rust's regex has no look-arounds, so the
# length limits, the "--" rule and the special-use names are separate conditions.
_PLAIN_BODY: Final = (
    r"^[a-z0-9_+'-]+(?:\.[a-z0-9_+'-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)
# Refused by _PLAIN_EMAIL's look-aheads: "--" in the domain, or a special-use name.
_REFUSED: Final = r"@[^@]*--|\.(?:arpa|invalid|local|localhost|onion|test)$"


def plain_email(address: str, out: str) -> list[list[Any]]:
    """polars: stages adding ``out``, whether each stripped, lower-cased ASCII address in
    column ``address`` is plain (as :data:`is_plain_email` says; tested against it)."""
    import polars as pl  # the engine is configured by shared.engine, imported before this

    a = pl.col(address)
    length, at = pl.col(f"{out}_n"), pl.col(f"{out}_at")
    return [
        [a.str.len_bytes().alias(f"{out}_n"), a.str.find("@", literal=True).alias(f"{out}_at")],
        [
            (
                a.str.contains(_PLAIN_BODY)
                & (length <= 254)
                & (at <= 64)
                & (length - at - 1 <= 253)
                & ~a.str.contains(_REFUSED)
            )
            .fill_null(False)
            .alias(out)
        ],
    ]
