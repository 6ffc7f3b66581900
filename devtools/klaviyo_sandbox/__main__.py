"""Command line: serve a sandbox until SIGTERM or SIGINT.

    python -m devtools.klaviyo_sandbox --port 8787 --api-key KEY --list Y6nRLr:Newsletter

The first line written to stdout is ``LISTENING http://127.0.0.1:PORT`` (flushed), so a
parent process that passed ``--port 0`` learns the port by reading one line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .config import (
    DEFAULT_API_KEY,
    DEFAULT_LIST_ID,
    DEFAULT_LIST_NAME,
    FAMILIES,
    AccountSpec,
    ListSpec,
    SandboxConfig,
)
from .server import serve

__all__ = ["config_from_args", "main"]

_D = SandboxConfig()  # the CLI's defaults are the library's


def _list_spec(text: str) -> ListSpec:
    list_id, _, name = text.partition(":")
    if not list_id:
        raise argparse.ArgumentTypeError(f"expected ID[:NAME], got {text!r}")
    return ListSpec(id=list_id, name=name or DEFAULT_LIST_NAME)


def _families(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = names - set(FAMILIES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown families {sorted(unknown)}; known: {FAMILIES}")
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m devtools.klaviyo_sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"a private key of the account (repeatable; default {DEFAULT_API_KEY})",
    )
    p.add_argument(
        "--list",
        action="append",
        dest="lists",
        type=_list_spec,
        metavar="ID[:NAME]",
        help=f"a list of the account (repeatable; default {DEFAULT_LIST_ID})",
    )
    p.add_argument("--no-rate-limits", dest="rate_limits", action="store_false")
    p.add_argument(
        "--rate-limit-scale",
        type=float,
        default=_D.rate_limit_scale,
        help="multiply Klaviyo's limits (e.g. 0.1 to hit them sooner)",
    )
    p.add_argument(
        "--job-delay", type=float, default=_D.job_delay, help="seconds before a job starts"
    )
    p.add_argument(
        "--job-seconds-per-1000",
        dest="job_seconds_per_1000_profiles",
        type=float,
        default=_D.job_seconds_per_1000_profiles,
        help="processing time per 1,000 profiles",
    )
    p.add_argument("--cancel-jobs", action="store_true")
    p.add_argument(
        "--no-store-attributes",
        dest="store_attributes",
        action="store_false",
        help="keep identifiers and memberships only (large benchmarks)",
    )
    p.add_argument(
        "--parse-workers",
        type=int,
        default=2,
        metavar="N",
        help="processes that parse and check bulk import bodies (0: none; default 2)",
    )
    p.add_argument("--record-requests", action="store_true")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--error-rate", type=float, default=_D.error_rate)
    p.add_argument("--drop-rate", type=float, default=_D.drop_rate)
    p.add_argument("--slow-rate", type=float, default=_D.slow_rate)
    p.add_argument("--slow-seconds", type=float, default=_D.slow_seconds)
    p.add_argument("--throttle-storm", type=int, default=_D.throttle_storm, metavar="N")
    p.add_argument(
        "--throttle-storm-retry-after",
        type=int,
        default=_D.throttle_storm_retry_after,
        metavar="SECONDS",
    )
    p.add_argument(
        "--fault-families",
        type=_families,
        default=None,
        metavar="A,B",
        help=f"limit faults to these families: {', '.join(FAMILIES)}",
    )
    return p


def config_from_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    """The SandboxConfig the command line describes (one account)."""
    args = vars(_parser().parse_args(argv))
    account = AccountSpec(
        api_keys=tuple(args.pop("api_keys") or (DEFAULT_API_KEY,)),
        lists=tuple(args.pop("lists") or (ListSpec(id=DEFAULT_LIST_ID),)),
    )
    return SandboxConfig(accounts=(account,), **args)


async def _serve_until_signalled(config: SandboxConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(config) as (_, url):
        print(f"LISTENING {url}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = config_from_args(argv)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve_until_signalled(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
