"""Command line: ``python -m shared run|validate ...`` with the settings the functions read.

Exit codes (the README's promise): 0 done, 1 the run's counts do not add up, 2 an error the
message names (a setting, container, blob, file, line or field), 130 interrupted. Every
error reaches the user through ``shared.failures.describe_failure``, as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from shared.definitions import MAX_DEFINITION_BYTES, ExportDefinition, parse_definition
from shared.errors import DefinitionError, ExportError, InvalidNameError, SnapshotChangedError
from shared.failures import describe_failure
from shared.names import EXPORT_NAME_RULE, check_run_id, is_export_name
from shared.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_NOT_ACCOUNTED, EXIT_ERROR, EXIT_HELD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


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
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="read, validate and plan (joiners, changed, leavers, the guard's verdict); "
        "call no Klaviyo endpoint that writes",
    )
    run.add_argument(
        "--full",
        action="store_true",
        help="send every profile once, changed or not (leavers are still removed)",
    )
    run.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="let this run remove more people than sync.max_removal_percent allows",
    )
    run.add_argument("--json", action="store_true", help="print the run report as JSON")
    run.add_argument("--no-progress", action="store_true", help="no progress line")
    run.add_argument("--run-id", help="resume this run id (uses its checkpoint)")
    run.add_argument(
        "--max-in-flight", type=_positive(int), default=10, help="import jobs in flight"
    )
    run.add_argument(
        "--job-deadline",
        type=_positive(float),
        default=3600.0,
        metavar="SECONDS",
        help="stop the run when a Klaviyo import job is not done this long after it was "
        "submitted (default 3600); resume it later with --run-id",
    )

    validate = commands.add_parser(
        "validate", help="check definitions, and that each snapshot can be found and mapped"
    )
    validate.add_argument("exports", nargs="*", help="names or .json files (default: all)")
    return parser


def _is_file(ref: str) -> bool:
    return ref.endswith(".json") or Path(ref).is_file()


def _check_ref(ref: str) -> None:
    """A definition reference is a file or an export name: refuse anything else before a
    storage call could turn it into a blob path ("../../x")."""
    if not _is_file(ref) and not is_export_name(ref):
        raise InvalidNameError(
            "export", f"{ref!r} is neither a .json file nor an export name ({EXPORT_NAME_RULE})"
        )


def _read_file(ref: str) -> ExportDefinition:
    path = Path(ref)
    if path.is_file() and path.stat().st_size > MAX_DEFINITION_BYTES:
        raise DefinitionError("", f"over {MAX_DEFINITION_BYTES // 1024} KB", source=ref)
    return parse_definition(path.read_bytes(), source=ref)


def load_definition(ref: str, settings: Settings) -> ExportDefinition:
    """One definition: from a file, or by name from the app's state container."""
    _check_ref(ref)
    if _is_file(ref):
        return _read_file(ref)
    from shared.state import DefinitionStore, open_state

    return DefinitionStore(open_state(settings)).get(ref)[0]


def load_definitions(
    refs: list[str], settings: Settings
) -> list[tuple[str, ExportDefinition | BaseException]]:
    """(reference, definition or the error that makes it unusable) for each reference, or
    for every stored definition when ``refs`` is empty: a broken one is listed, not fatal."""
    if refs:
        for ref in refs:
            _check_ref(ref)  # all of them, before any storage call
        found: list[tuple[str, ExportDefinition | BaseException]] = []
        for ref in refs:
            try:
                found.append((ref, load_definition(ref, settings)))
            except (ExportError, OSError) as exc:
                found.append((ref, exc))
        return found
    from shared.state import DefinitionStore, open_state

    good, broken = DefinitionStore(open_state(settings)).scan()
    listed: list[tuple[str, ExportDefinition | BaseException]] = [(d.name, d) for d in good]
    listed += [(b.name, b.error) for b in broken]
    return sorted(listed, key=lambda item: item[0])


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
    print(f"export {report['export']} run {report['run_id']}: {report['status']}", file=out)
    print(f"  snapshot   {report['snapshot']['path']}", file=out)
    print(
        f"  rows       {rows['read']:,} read = {rows['sent']:,} sent + "
        f"{rows['unchanged']:,} unchanged + {rows['rejected']:,} rejected + "
        f"{rows['duplicates']:,} duplicates"
        f"{'' if report['accounted'] else '  (DOES NOT ADD UP)'}",
        file=out,
    )
    for code, count in report["rejected_by_reason"].items():
        print(f"    {code:<28} {count:,}", file=out)
    print(f"  phones dropped {rows['phones_dropped']:,}", file=out)
    members = report.get("members")
    if members:
        verb = "would be " if report["dry_run"] else ""
        print(
            f"  members    {verb}{members['added']:,} added, {members['updated']:,} updated, "
            f"{members['unchanged']:,} unchanged, {members['removed']:,} removed, "
            f"{members['kept_not_owned']:,} kept (not added by this export), "
            f"{members['held']:,} held, {members['retried']:,} retried",
            file=out,
        )
    sync = report.get("sync") or {}
    if sync.get("full"):
        print(f"  full run   every profile sent ({sync['full_reason']})", file=out)
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
    for warning in report.get("warnings") or ():
        print(f"  warning: {warning}", file=out)
    if report.get("error") or report.get("message"):
        print(f"  {report['status']}: {report.get('error') or report['message']}", file=out)


async def _run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from shared.export import RunOptions
    from shared.runner import run_definition

    definition = load_definition(args.export, settings)
    args.export_name = definition.name  # for the resume hint, should the run stop
    progress = None if args.no_progress or args.json else ProgressLine()
    options = RunOptions(
        dry_run=args.dry_run,
        full=args.full,
        allow_mass_removal=args.allow_mass_removal,
        max_in_flight=args.max_in_flight,
        job_deadline=args.job_deadline,
    )
    try:
        async with _leases(definition, settings, args.run_id, dry_run=args.dry_run):
            return await run_definition(
                definition, settings, run_id=args.run_id, options=options, on_progress=progress
            )
    finally:
        if progress:
            progress.close()


@contextlib.asynccontextmanager
async def _leases(
    definition: ExportDefinition, settings: Settings, run_id: str, *, dry_run: bool
) -> AsyncIterator[None]:
    """The queue worker's leases: a run from the CLI never overlaps a run of the same
    export in Azure, nor (unless it is a dry run, which sends nothing) another run on the
    same Klaviyo connection. A lease that is taken ends the command with exit code 2,
    naming the run that holds it."""
    from shared.locks import ConnectionLock, RunLock
    from shared.state import open_state

    state = open_state(settings)
    async with contextlib.AsyncExitStack() as leases:
        await leases.enter_async_context(
            RunLock(state, definition.name).hold(run_id, definition.name)
        )
        if not dry_run:
            connection = ConnectionLock(state, definition.connection.api_key_secret)
            await leases.enter_async_context(connection.hold(run_id, definition.name))
        yield


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.runner import check_definition

    failures = 0
    for ref, loaded in load_definitions(args.exports, settings):
        try:
            if isinstance(loaded, BaseException):
                raise loaded
            summary = check_definition(loaded, settings)
        except Exception as exc:
            failures += 1
            name = loaded.name if isinstance(loaded, ExportDefinition) else ref
            print(f"FAIL {name}: {describe_failure(exc, settings)}")
            continue
        print(f"ok   {loaded.name}: {summary}")
    return EXIT_ERROR if failures else EXIT_OK


def _resume_hint(args: argparse.Namespace, settings: Settings | None) -> str:
    """How to resume a run that stopped after Klaviyo accepted jobs (it has a checkpoint):
    the same run id, so that those jobs are not sent again."""
    name = getattr(args, "export_name", None)
    if args.command != "run" or args.dry_run or name is None or settings is None:
        return ""
    from shared.runs import BlobRunStore
    from shared.state import open_state

    try:
        checkpoint = BlobRunStore(open_state(settings), name, args.run_id).load_checkpoint()
    except Exception:  # the hint is a courtesy; the error above is what matters
        return ""
    return f" (resume it with --run-id {args.run_id})" if checkpoint else ""


def _print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        if args.command == "validate":
            return _validate(args, settings)
        _check_ref(args.export)
        if args.run_id is not None:
            check_run_id(args.run_id, field="--run-id")
        else:
            from shared.export import new_run_id

            args.run_id = new_run_id()  # known here, so an interrupted run can be named
        report = asyncio.run(_run(args, settings))
    except SnapshotChangedError as exc:
        if exc.report is not None:
            _print_report(exc.report, args)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args, settings)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        message = describe_failure(exc, settings)
        print(f"error: {message}{_resume_hint(args, settings)}", file=sys.stderr)
        return EXIT_ERROR
    _print_report(report, args)
    return _exit_code(report)


def _exit_code(report: dict[str, Any]) -> int:
    """0 done, 1 counts do not add up, 2 failed (e.g. every job cancelled), 3 held."""
    if not report["accounted"]:
        return EXIT_NOT_ACCOUNTED
    if report["status"] == "held":
        return EXIT_HELD
    return EXIT_OK if report["status"] == "succeeded" else EXIT_ERROR
