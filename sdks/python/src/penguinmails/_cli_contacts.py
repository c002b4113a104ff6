"""`penguinmails contacts import FILE`: a CSV or JSON file through the import job API.

The file is uploaded as it is (`POST /api/v1/contacts/imports`, with an idempotency key, so a
retried upload starts one job), then the job is polled (`GET /api/v1/contacts/imports/{id}`)
with a progress bar on stderr until it completes; the report names every failed row. Exit
code 3 when some rows failed; Ctrl-C stops waiting, not the job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

from ._cli_support import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    UsageError,
    api_client,
    emit,
    say,
)

FORMATS: dict[str, Literal["csv", "json"]] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
BAR_WIDTH = 30


def _read(args: argparse.Namespace) -> tuple[bytes, Literal["csv", "json"]]:
    path = Path(args.file)
    fmt: Literal["csv", "json"] | None = args.format or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path.name}: say --format csv or --format json.")
    try:
        content = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    if fmt == "json" and path.suffix.lower() in (".jsonl", ".ndjson"):
        # One object per line: the API takes a JSON array.
        try:
            rows = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        except ValueError as exc:
            raise UsageError(f"{path.name}: not JSON lines ({exc})") from exc
        content = json.dumps(rows).encode()
    return content, fmt


def _bar(job: dict[str, Any]) -> str:
    total, done = int(job.get("total") or 0), int(job.get("processed") or 0)
    share = done / total if total else 1.0
    filled = int(share * BAR_WIDTH)
    return (
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done:,}/{total:,} rows ({share:.0%})"
        f"  created {job.get('created', 0):,}  updated {job.get('updated', 0):,}"
        f"  failed {job.get('failed', 0):,}"
    )


def _report(job: dict[str, Any], fmt: str) -> str:
    lines = [
        f"Import {job['id']} {job['status']}: {job['total']:,} rows, {job['created']:,} created,"
        f" {job['updated']:,} updated, {job['failed']:,} failed."
    ]
    errors = job.get("errors") or []
    if errors:
        lines.append("Failed rows:")
    for e in errors:
        where = f"row {e['row']}" + (f" (line {e['row'] + 1})" if fmt == "csv" else "")
        field = f" {e['field']}:" if e.get("field") else ""
        lines.append(f"  {where}  {e.get('email') or '-'} {field} {e['message']}")
    return "\n".join(lines)


def cmd_contacts_import(args: argparse.Namespace) -> int:
    content, fmt = _read(args)
    client = api_client(args)
    job = client.contacts.submit_import_file(content, format=fmt)
    if args.no_wait:
        emit(args, job, f"Import {job['id']} accepted ({job['total']:,} rows); it runs on.")
        return EXIT_OK
    tty = sys.stderr.isatty()
    shown = ""
    try:
        while True:
            line = _bar(job)  # type: ignore[arg-type]
            if line != shown:
                print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)
                sys.stderr.flush()
                shown = line
            if job["status"] == "completed":
                break
            time.sleep(args.interval)
            job = client.contacts.get_import(job["id"])
    except KeyboardInterrupt:
        say(f"\nStopped waiting; import {job['id']} goes on: GET /api/v1/contacts/imports/ID.")
        return EXIT_INTERRUPTED
    if tty:
        print(file=sys.stderr)
    emit(args, job, _report(job, fmt))  # type: ignore[arg-type]
    return EXIT_PARTIAL if job["failed"] else EXIT_OK


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    contacts = sub.add_parser("contacts", help="import contacts from a file")
    contacts_sub = contacts.add_subparsers(dest="contacts_command", required=True)
    imp = contacts_sub.add_parser(
        "import", parents=[api], help="import a CSV or JSON file as an import job, with progress"
    )
    imp.add_argument(
        "file", metavar="FILE", help="a .csv, .json (an array) or .jsonl file; - reads stdin"
    )
    imp.add_argument("--format", choices=["csv", "json"], help="default: from the file's suffix")
    imp.add_argument(
        "--no-wait", action="store_true", help="print the job and exit without waiting for it"
    )
    imp.add_argument(
        "--interval", type=float, default=1.0, help="seconds between progress polls (default 1)"
    )
    imp.set_defaults(func=cmd_contacts_import)
