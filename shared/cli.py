"""Command line: ``python -m shared run|validate ...`` with the settings the functions read."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from shared.definitions import ExportDefinition, parse_definition
from shared.errors import ExportError
from shared.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared",
        description="Export Customer Insights segments from Blob Storage into Klaviyo lists.",
        epilog="Settings come from the environment, as the function app reads them "
        "(AzureWebJobsStorage, SEGMENTS_STORAGE, KLAVIYO_BASE_URL, KEY_VAULT_URL or, "
        "locally only, KLAVIYO_API_KEY). See README.md.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one export now")
    run.add_argument("export", help="export name (definition in Blob Storage) or a .json file")
    run.add_argument("--dry-run", action="store_true", help="read, validate and pack only")
    run.add_argument("--json", action="store_true", help="print the run report as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress line")
    run.add_argument("--run-id", help="resume this run id (uses its checkpoint)")
    run.add_argument("--max-in-flight", type=int, default=10, help="import jobs in flight")

    validate = commands.add_parser(
        "validate", help="check definitions, and that each snapshot can be found and mapped"
    )
    validate.add_argument("exports", nargs="*", help="names or .json files (default: all)")
    return parser


def _is_file(ref: str) -> bool:
    return ref.endswith(".json") or Path(ref).is_file()


def load_definitions(refs: list[str], settings: Settings) -> list[ExportDefinition]:
    """Definitions from files, or by name from the app's state container."""
    from shared.state import DefinitionStore, open_state

    found: list[ExportDefinition] = []
    store: DefinitionStore | None = None
    for ref in refs:
        if _is_file(ref):
            found.append(parse_definition(Path(ref).read_bytes(), source=ref))
            continue
        store = store or DefinitionStore(open_state(settings))
        found.append(store.get(ref)[0])
    if not refs:
        store = DefinitionStore(open_state(settings))
        found = store.list()
    return found


class ProgressLine:
    """One status line on stderr: rows, jobs, profiles/s. Rewritten in place on a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, *, every: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        # Off a terminal (CI logs), the first line waits a period: short runs print none.
        self._last = 0.0 if self._tty else time.monotonic()

    def __call__(self, p: dict[str, Any]) -> None:
        now = time.monotonic()
        if not self._tty and now - self._last < self._every:
            return
        self._last = now
        jobs = p["jobs_submitted"] or p["jobs_planned"]
        text = (
            f"rows {p['rows']:>10,} | jobs {jobs:>4} sent, {p['jobs_done']:>4} done | "
            f"{p['profiles_per_second']:>9,.0f} profiles/s | {p['elapsed']:6.1f}s"
        )
        self._stream.write(("\r" + text) if self._tty else text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")


def _print_summary(report: dict[str, Any], out: TextIO) -> None:
    rows, jobs = report["rows"], report["jobs"]
    print(f"export {report['export']} run {report['run_id']}", file=out)
    print(f"  snapshot   {report['snapshot']['path']}", file=out)
    print(
        f"  rows       {rows['read']:,} read = {rows['sent']:,} sent + "
        f"{rows['rejected']:,} rejected + {rows['duplicates']:,} duplicates"
        f"{'' if report['accounted'] else '  (DOES NOT ADD UP)'}",
        file=out,
    )
    for code, count in report["rejected_by_reason"].items():
        print(f"    {code:<28} {count:,}", file=out)
    print(f"  phones dropped {rows['phones_dropped']:,}", file=out)
    verb = "planned" if report["dry_run"] else "submitted"
    print(
        f"  jobs       {jobs['planned' if report['dry_run'] else 'submitted']} {verb}, "
        f"{jobs['completed']} completed, {jobs['with_failures']} with failures",
        file=out,
    )
    t = report["timings"]
    print(f"  time       {t['seconds']:.1f}s, {t['profiles_per_second']:,.0f} profiles/s", file=out)
    if report.get("rejected_rows_blob"):
        print(f"  rejected rows: {report['rejected_rows_blob']}", file=out)


async def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shared.runner import run_definition

    (definition,) = load_definitions([args.export], settings)
    progress = None if args.no_progress or args.json else ProgressLine()
    try:
        return await run_definition(
            definition,
            settings,
            run_id=args.run_id,
            dry_run=args.dry_run,
            max_in_flight=args.max_in_flight,
            on_progress=progress,
        )
    finally:
        if progress:
            progress.close()


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.runner import check_definition

    failures = 0
    for definition in load_definitions(args.exports, settings):
        try:
            summary = check_definition(definition, settings)
        except ExportError as exc:
            failures += 1
            print(f"FAIL {definition.name}: {exc}")
            continue
        print(f"ok   {definition.name}: {summary}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_env()
        if args.command == "validate":
            return _validate(args, settings)
        report = asyncio.run(_run(args, settings))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report, sys.stdout)
    return 0 if report["accounted"] else 1
