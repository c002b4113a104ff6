"""What every `penguinmails` command shares: where its files live, which client it uses, how
it prints, and the usage error (exit code 2)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._client import PenguinMails
from ._core import DEFAULT_BASE_URL

# Exit codes (docs/cli.md): 0 done, 1 the API (or the network) failed, 2 bad usage,
# 3 done with failures (an import's failed rows), 130 interrupted while waiting.
EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """A command that cannot run as asked (missing key, unreadable file...): exit code 2."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "penguinmails"


def write_private(path: Path, data: Any) -> None:
    """JSON in a file created 0600 from the start (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(path, 0o600)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def base_url(args: argparse.Namespace) -> str:
    url = args.base_url or os.environ.get("PENGUINMAILS_BASE_URL") or DEFAULT_BASE_URL
    return str(url).rstrip("/")


def api_client(args: argparse.Namespace) -> PenguinMails:
    """A client with the API key of `--api-key` or PENGUINMAILS_API_KEY (API commands)."""
    api_key = getattr(args, "api_key", None) or os.environ.get("PENGUINMAILS_API_KEY")
    if not api_key:
        raise UsageError("An API key is needed: --api-key or PENGUINMAILS_API_KEY.")
    return PenguinMails(api_key=api_key, base_url=base_url(args), max_retries=args.max_retries)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """A command's result: the API's data as JSON with --json, else the human text."""
    print(json.dumps(data, indent=2, default=str) if args.json else text, flush=True)


def json_line(data: Any) -> None:
    """One JSON document per line (streams: `events tail`, `listen`)."""
    print(json.dumps(data, separators=(",", ":"), default=str), flush=True)


def say(message: str) -> None:
    """Progress and status for the human: stderr, so stdout stays the command's output."""
    print(message, file=sys.stderr, flush=True)
