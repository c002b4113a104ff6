"""`penguinmails events tail|types`, `listen --forward-to URL` and `trigger EVENT_TYPE`.

`events tail` and `listen` read the live stream (`GET /api/v1/events/stream`) through the
SDK's `EventStream`, which reconnects with `Last-Event-ID`: a dropped connection or the
server's stream time limit costs no event and repeats none. On exit both print the id to
resume from (`--last-event-id`), so a restarted CLI picks up where the last one stopped.

`listen` forwards each event, one at a time in stream order, as a POST of the payload exactly
as the stream carried it, signed as PenguinMails signs webhook deliveries (Standard Webhooks
headers plus `X-PenguinMails-Signature`) with a local `whsec_` secret it prints: a receiver
verifies it with the code that verifies real deliveries. A failed forward (connection error,
timeout, any status but 2xx and 410) is retried with backoff, honouring `Retry-After`, before
the next event goes; every attempt's outcome is printed.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from . import __version__
from ._cli_support import (
    EXIT_OK,
    UsageError,
    api_client,
    config_dir,
    emit,
    json_line,
    read_json,
    say,
    write_private,
)
from ._core import backoff, parse_retry_after
from ._errors import ConflictError
from ._stream import EventStream, StreamEvent
from ._webhooks import secret_key, webhook_headers

USER_AGENT = f"PenguinMails-CLI/{__version__}"
MAX_FORWARD_RETRY_AFTER = 30.0


# ---------------------------------------------------------------- shared by tail and listen


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or () for v in raw.split(",") if v.strip()]


def _open_stream(args: argparse.Namespace, last_event_id: str | None) -> EventStream:
    client = api_client(args)
    stream: EventStream

    def connected() -> None:
        if stream.connections == 1:
            say("Connected to the event stream; waiting for events (Ctrl-C to stop).")
        else:
            after = f" after {stream.last_event_id}" if stream.last_event_id else ""
            say(f"Connected to the event stream again, resuming{after}.")

    def reconnecting(reason: str, wait: float) -> None:
        if wait:
            say(f"Reconnecting in {wait:.1f} s: {reason}")

    stream = client.events.stream(
        types=_split(args.types),
        campaign_ids=_split(args.campaign_id),
        contact_tags=_split(args.contact_tag),
        last_event_id=last_event_id,
        on_connect=connected,
        on_reconnect=reconnecting,
    )
    return stream


class _Stopper:
    """Ctrl-C / SIGTERM while an event is being handled waits for it to finish, so the resume
    id names exactly the events handled (a second signal stops at once); while waiting for
    events they stop at once."""

    def __init__(self) -> None:
        self.busy = False
        self.requested = False

    def __call__(self, _signum: int, _frame: Any) -> None:
        if self.busy and not self.requested:
            self.requested = True
            say("Stopping after this event (again to stop now).")
            return
        raise KeyboardInterrupt

    def __enter__(self) -> _Stopper:
        self.busy = True
        return self

    def __exit__(self, *_: object) -> None:
        self.busy = False
        if self.requested:
            raise KeyboardInterrupt


def _follow(args: argparse.Namespace, handle: Callable[[StreamEvent], object]) -> int:
    """Hand each event to `handle` until --limit events, Ctrl-C or SIGTERM; then name the id
    to resume from. An expired cursor is said loudly, then the stream goes on from now."""
    limit = args.limit
    handled = 0
    resume: str | None = args.last_event_id
    stream = _open_stream(args, resume)
    stopper = _Stopper()
    signal.signal(signal.SIGINT, stopper)
    signal.signal(signal.SIGTERM, stopper)
    try:
        while limit is None or handled < limit:
            try:
                for event in stream:
                    with stopper:
                        handle(event)
                        handled += 1
                        resume = event.id
                    if limit is not None and handled >= limit:
                        break
                else:
                    break
            except ConflictError as exc:
                if exc.code != "event_stream_cursor_expired":
                    raise
                say(
                    f"warning: cannot resume after {stream.last_event_id}: the stream no longer"
                    " keeps it (24 h at least). Events since then are in each webhook"
                    " endpoint's delivery log. Going on from now."
                )
                stream = _open_stream(args, None)
    except KeyboardInterrupt:
        pass
    cursor = resume if handled else (stream.last_event_id or resume)
    if cursor:
        say(f"Stopped. To resume from here: --last-event-id {cursor}")
    return EXIT_OK


def _stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--types",
        action="append",
        metavar="TYPES",
        help="event types or patterns, comma-separated or repeated (email.opened,contact.*)",
    )
    parser.add_argument("--campaign-id", action="append", help="only these campaigns' events")
    parser.add_argument("--contact-tag", action="append", help="only contacts with these tags")
    parser.add_argument("--last-event-id", help="resume after this event (the last 24 h)")
    parser.add_argument("--limit", type=int, help="stop after this many events")


# ---------------------------------------------------------------- events tail


def _summary(payload: Any) -> str:
    """A few words on the event: the nested entity's address or name and id."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return ""
    entity = next((v for v in data.values() if isinstance(v, dict)), data)
    words = [
        str(entity[k])
        for k in ("to", "email", "name", "subject", "status")
        if isinstance(entity.get(k), (str, int)) and entity.get(k) != ""
    ][:2]
    if entity.get("id") is not None:
        words.append(f"({entity['id']})")
    return " ".join(words)


def _clock(payload: Any) -> str:
    created = payload.get("created") if isinstance(payload, dict) else None
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00")).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
    except ValueError:
        return str(created or "")


def cmd_events_tail(args: argparse.Namespace) -> int:
    def show(event: StreamEvent) -> None:
        if args.json:
            print(event.data, flush=True)  # the payload as the stream sent it: JSON lines
            return
        payload = event.json()
        print(f"{_clock(payload)}  {event.type:<24} {event.id}  {_summary(payload)}", flush=True)

    return _follow(args, show)


def cmd_events_types(args: argparse.Namespace) -> int:
    types = api_client(args).events.list_types()
    lines = [f"{t['type']:<28} {t['scope']:<18} {t['description']}" for t in types]
    emit(args, types, "\n".join(lines))
    return EXIT_OK


def cmd_trigger(args: argparse.Namespace) -> int:
    event = api_client(args).events.trigger(type=args.event_type)
    emit(
        args,
        event,
        f"Triggered {event['type']}: event {event['id']} (test mode). It reaches your test-mode"
        " webhook endpoints and event streams.",
    )
    return EXIT_OK


# ---------------------------------------------------------------- listen --forward-to


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def listen_secret(base: str) -> str:
    """This machine's forwarding secret for one API base URL, made once and kept (0600), so a
    receiver configured with it keeps working across `listen` runs."""
    path = config_dir() / "listen.json"
    stored = read_json(path)
    secret = stored.get(base, {}).get("secret")
    if isinstance(secret, str) and secret:
        return secret
    secret = generate_secret()
    stored[base] = {"secret": secret}
    write_private(path, stored)
    return secret


def forward_url(raw: str) -> str:
    """`localhost:3000/hooks` or `:3000/hooks` as a URL (http unless a scheme is given)."""
    url = raw if "://" in raw else "http://" + (f"localhost{raw}" if raw.startswith(":") else raw)
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"--forward-to must be an http(s) URL, got {raw!r}.")
    return url


class Forwarder:
    """POSTs events to one URL, signed, retried; reports every attempt through `report`."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        retries: int,
        timeout: float,
        report: Callable[[dict[str, Any]], None],
        verify_tls: bool = True,
    ) -> None:
        self.url = url
        self.secret = secret
        self.retries = retries
        self.report = report
        self.http = httpx.Client(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, verify=verify_tls
        )

    def close(self) -> None:
        self.http.close()

    def forward(self, event: StreamEvent) -> bool:
        """True once the receiver answered 2xx; False after the last attempt failed."""
        body = event.data.encode()
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            retry_after: float | None = None
            try:
                # Signed afresh per attempt (a new timestamp), as deliveries are; same id.
                headers = {
                    **webhook_headers(event.id, body, self.secret),
                    "Content-Type": "application/json",
                }
                response = self.http.post(self.url, content=body, headers=headers)
                status = response.status_code
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ok = status is not None and 200 <= status < 300
            final = ok or status == 410 or attempt == attempts
            wait = None
            if not final:
                wait = (
                    min(retry_after, MAX_FORWARD_RETRY_AFTER)
                    if retry_after is not None
                    else backoff(attempt - 1)
                )
            self.report(
                {
                    "event_id": event.id,
                    "type": event.type,
                    "attempt": attempt,
                    "status": status,
                    "error": error,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "delivered": ok,
                    "retry_in": round(wait, 2) if wait is not None else None,
                }
            )
            if final:
                return ok
            assert wait is not None
            time.sleep(wait)
        return False


def _print_attempt(url: str) -> Callable[[dict[str, Any]], None]:
    def show(r: dict[str, Any]) -> None:
        outcome = f"[{r['status']}]" if r["status"] is not None else f"[failed: {r['error']}]"
        line = (
            f"{datetime.now().strftime('%H:%M:%S')}  {r['type']:<24} {r['event_id']}"
            f"  --> POST {url} {outcome} {r['duration_ms']:.0f} ms"
        )
        if r["attempt"] > 1:
            line += f" (attempt {r['attempt']})"
        if r["retry_in"] is not None:
            line += f", retrying in {r['retry_in']:.1f} s"
        print(line, flush=True)

    return show


def cmd_listen(args: argparse.Namespace) -> int:
    url = forward_url(args.forward_to)
    client_base = api_client(args).base_url
    if args.secret:
        try:
            secret_key(args.secret)
        except Exception as exc:
            raise UsageError(f"--secret: {exc}") from exc
        secret = args.secret
    else:
        secret = listen_secret(client_base)
    if args.print_secret:
        print(secret)
        return EXIT_OK
    report = json_line if args.json else _print_attempt(url)
    forwarder = Forwarder(
        url,
        secret,
        retries=args.retries,
        timeout=args.timeout,
        report=report,
        verify_tls=not args.skip_verify,
    )
    if args.json:
        json_line({"ready": True, "forward_to": url, "secret": secret})
    else:
        print(
            f"Ready! Forwarding events to {url}\nYour webhook signing secret is {secret}"
            " (verify deliveries with it as with an endpoint's secret)",
            flush=True,
        )
    try:
        return _follow(args, forwarder.forward)
    finally:
        forwarder.close()


# ---------------------------------------------------------------- the parser


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser
) -> None:
    events = sub.add_parser("events", help="the event catalog and the live stream")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser(
        "tail", parents=[api], help="print live events (pretty, or JSON lines with --json)"
    )
    _stream_arguments(tail)
    tail.set_defaults(func=cmd_events_tail)
    types = events_sub.add_parser("types", parents=[api], help="list the event catalog")
    types.set_defaults(func=cmd_events_types)

    listen = sub.add_parser(
        "listen",
        parents=[api],
        help="forward live events to a local URL, signed like webhook deliveries",
    )
    listen.add_argument(
        "--forward-to", required=True, metavar="URL", help="e.g. localhost:3000/hooks"
    )
    listen.add_argument("--secret", help="sign with this secret (whsec_... or 16-128 characters)")
    listen.add_argument(
        "--print-secret", action="store_true", help="print the signing secret and exit"
    )
    listen.add_argument(
        "--retries", type=int, default=3, help="retries of a failed forward (default 3)"
    )
    listen.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the receiver (default 10)"
    )
    listen.add_argument(
        "--skip-verify",
        action="store_true",
        help="accept the receiver's self-signed TLS certificate (https URLs)",
    )
    _stream_arguments(listen)
    listen.set_defaults(func=cmd_listen)

    trigger = sub.add_parser(
        "trigger", parents=[api], help="emit a catalog sample event (test-mode keys only)"
    )
    trigger.add_argument("event_type", metavar="EVENT_TYPE", help="e.g. email.opened")
    trigger.set_defaults(func=cmd_trigger)
