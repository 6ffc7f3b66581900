"""Benchmark of the removal stage: leavers of a large list, against the Klaviyo sandbox in a
process of its own with Klaviyo's real rate limits (lookups 75/s and 750/min, removals
10/s and 150/min). Prints wall time, calls, 429s and this process's peak RSS.

    python -m devtools.removal_benchmark                    # 50,000 leavers of 1,000,000
    python -m devtools.removal_benchmark --members 200000 --leavers 10000

The list is filled through the sandbox's control API (no rate limits), with a share of
the leavers on it from before the export ("sign-up form" members, kept) and a share no
longer on it (gone); the rest were added by the export and are removed. Figures, not a
pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import httpx
import numpy as np

from devtools.local import SANDBOX_API_KEY, SANDBOX_LIST_ID, SandboxProcess
from shared.klaviyo import KlaviyoClient
from shared.removals import Leavers, remove_leavers

_CHUNK = 100_000


def _fill(url: str, members: int, form_members: list[str], joined_at: float) -> None:
    """The list: ``members`` export-added people, then the form members, backdated."""
    base = f"{url}/__sandbox/lists/{SANDBOX_LIST_ID}/members"
    with httpx.Client(timeout=120) as http:
        for start in range(0, members, _CHUNK):
            emails = [f"member{i}@example.com" for i in range(start, min(start + _CHUNK, members))]
            http.post(base, json={"emails": emails, "joined_at": joined_at}).raise_for_status()
        if form_members:
            past = {"emails": form_members, "joined_at": joined_at - 30 * 86400}
            http.post(base, json=past).raise_for_status()


def _leavers(
    members: int, leavers: int, form_share: float, gone_share: float, first_added_ms: int
) -> Leavers:
    form = int(leavers * form_share)
    gone = int(leavers * gone_share)
    owned = leavers - form - gone
    step = max(1, members // max(owned, 1))
    emails = [f"member{i * step}@example.com" for i in range(owned)]
    emails += [f"form{i}@example.com" for i in range(form)]
    emails += [f"gone{i}@example.com" for i in range(gone)]
    return Leavers(
        emails=emails,
        keys=np.arange(1, len(emails) + 1, dtype=np.uint64),
        first_added_ms=np.full(len(emails), first_added_ms, dtype=np.int64),
    )


async def _measure(url: str, leavers: Leavers) -> dict[str, Any]:
    async with KlaviyoClient(SANDBOX_API_KEY, base_url=url) as client:
        started = time.perf_counter()
        result = await remove_leavers(client, SANDBOX_LIST_ID, leavers)
        wall = time.perf_counter() - started
        return {
            "wall": wall,
            **result.counts,
            "throttled": client.throttled,
            "retries": client.retries,
            "limiter_wait": client.rate_limit_wait,
        }


def run(members: int, leavers: int, form_share: float, gone_share: float) -> dict[str, Any]:
    with SandboxProcess(["--no-store-attributes", "--parse-workers", "0"]) as sandbox:
        added_at = time.time() - 3600  # the export's first add, an hour ago
        plan = _leavers(members, leavers, form_share, gone_share, int(added_at * 1000))
        form = [e for e in plan.emails if e.startswith("form")]
        started = time.perf_counter()
        _fill(sandbox.url, members, form, added_at)
        filled = time.perf_counter() - started
        figures = asyncio.run(_measure(sandbox.url, plan))
        figures["fill_seconds"] = filled
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.removal_benchmark", description=__doc__
    )
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--leavers", type=int, default=50_000)
    parser.add_argument("--form-share", type=float, default=0.05, help="leavers kept (not owned)")
    parser.add_argument("--gone-share", type=float, default=0.01, help="leavers already off")
    args = parser.parse_args(argv)
    f = run(args.members, args.leavers, args.form_share, args.gone_share)
    print(
        f"{args.leavers:,} leavers of a {args.members:,}-member list | wall {f['wall']:.1f}s | "
        f"removed {f['removed']:,}, kept {f['kept_not_owned']:,}, gone {f['gone']:,} | "
        f"{f['lookup_calls']} lookups, {f['removal_calls']} removal calls | "
        f"429s {f['throttled']}, retries {f['retries']}, limiter wait {f['limiter_wait']:.1f}s | "
        f"peak RSS {f['peak_rss_mb']:.0f} MB (list filled in {f['fill_seconds']:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
