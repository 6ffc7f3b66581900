"""The demo behind ``make demo``: an export run on a local embedded default, then again.

Starts Azurite and the Klaviyo sandbox on 127.0.0.1, writes a generated Customer Insights
export (model.json + headerless partitions in the real folder layout, with the dirt real
exports carry), saves the example definition where the functions keep definitions, and
runs the export with the same code path and settings the functions use. Then it runs it a
second time: the list is already in step with the segment, so mirror sync sends nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys

import httpx
from azure.storage.blob import BlobServiceClient

from devtools.local import ROOT, SANDBOX_LIST_ID, local_settings, stack
from devtools.sample_export import write_sample_export
from shared.definitions import parse_definition
from shared.profiles import mask_email

EXAMPLE = ROOT / "examples" / "vip-customers.json"


def _seed_export(connection_string: str, rows: int, partitions: int) -> None:
    definition = parse_definition(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    service = BlobServiceClient.from_connection_string(connection_string)
    container = service.get_container_client(definition.source.container)
    container.create_container()
    summary = write_sample_export(
        container,
        folder=definition.source.folder,
        segment=definition.source.segment,
        rows=rows,
        partitions=partitions,
    )
    print(
        f"sample export: {summary.rows:,} rows in {len(summary.files)} headerless partitions "
        f"under {summary.container}/{summary.prefix}\n"
        f"  the generator planted {summary.invalid_emails:,} invalid and "
        f"{summary.missing_emails:,} missing e-mails, {summary.duplicate_emails:,} duplicates "
        f"and {summary.invalid_phones:,} invalid phones; "
        f"{summary.unique_valid_emails:,} profiles should reach the list\n"
    )


def _save_definition() -> str:
    from shared.settings import Settings
    from shared.state import DefinitionStore, open_state

    definition = parse_definition(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    DefinitionStore(open_state(Settings.from_env())).put(definition)
    return definition.name


def _show_outcome(sandbox_url: str, connection_string: str) -> None:
    members = httpx.get(f"{sandbox_url}/__sandbox/lists/{SANDBOX_LIST_ID}/emails").json()
    count = len(members["emails"]) if isinstance(members, dict) else len(members)
    print(f"\nKlaviyo sandbox: list {SANDBOX_LIST_ID} now has {count:,} members")
    service = BlobServiceClient.from_connection_string(connection_string)
    state = service.get_container_client("klaviyo-export")
    rejected = next(
        (b.name for b in state.list_blobs(name_starts_with="runs/") if b.name.endswith(".csv")),
        None,
    )
    if not rejected:
        return
    text = state.download_blob(rejected).readall().decode()
    print(f"first rejected rows from {rejected} (e-mails masked here):")
    for row in list(csv.DictReader(io.StringIO(text)))[:5]:
        file = row["file"].rsplit("/", 1)[-1]
        email = mask_email(row["email"]) if row["email"] else "(empty)"
        print(f"  {file}:{row['line']:<6} {row['reason_code']:<18} {email:<26} {row['reason']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--once", action="store_true", help="run the export once only")
    args = parser.parse_args(argv)
    from shared.cli import main as cli

    with stack() as (azurite, sandbox):
        print(f"Azurite on 127.0.0.1:{azurite.blob_port}, Klaviyo sandbox on {sandbox.url}")
        os.environ.update(local_settings(azurite.connection_string, sandbox.url))
        _seed_export(azurite.connection_string, args.rows, args.partitions)
        name = _save_definition()
        print(f"$ python -m shared run {name}")
        status = cli(["run", name])
        _show_outcome(sandbox.url, azurite.connection_string)
        if status == 0 and not args.once:
            print(f"\n$ python -m shared run {name}    # again: nobody changed, nothing is sent")
            status = cli(["run", name])
    return status


if __name__ == "__main__":
    sys.exit(main())
