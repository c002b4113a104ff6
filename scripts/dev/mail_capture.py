"""The dev stack's SMTP capture: where live-mode mail of `make up` goes instead of the internet.

    python -m scripts.dev.mail_capture serve --smtp-port 8725 --http-port 8701 --dir .dev/mail
    python -m scripts.dev.mail_capture list [--dir .dev/mail]      what `make mail` prints
    python -m scripts.dev.mail_capture show ID [--dir .dev/mail]   one message, headers + text

`serve` accepts every message on 127.0.0.1 (aiosmtpd, any recipient, no auth: the delivery
service's SMTP connector talks to it as to a custom provider's server) and keeps each one as
an `.eml` file in `--dir`, the envelope in `X-Mail-Capture-*` headers on top, so messages
survive a restart and `list`/`show` read them without the server. Its HTTP side serves a page
listing the messages (`/`), one message (`/messages/<id>`, its HTML part sandboxed),
`/api/messages` and `/api/messages/<id>` as JSON, the raw file (`/messages/<id>.eml`) and
`/readyz`. Local development only: no authentication, binds loopback.
"""

from __future__ import annotations

import argparse
import html
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".dev" / "mail"
_ID = re.compile(r"^[0-9]+-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Captured:
    id: str
    mail_from: str
    rcpt_to: list[str]
    received: float
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def body(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        return None if part is None else str(part.get_content())

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.received)),
            "mail_from": self.mail_from,
            "rcpt_to": self.rcpt_to,
            "from": str(self.message.get("From", "")),
            "to": str(self.message.get("To", "")),
            "subject": self.subject,
        }

    def detail(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "headers": [[k, str(v)] for k, v in self.message.items()],
            "text": self.body("plain"),
            "html": self.body("html"),
        }


class MailStore:
    """Captured messages as `<ns-time>-<hex>.eml` files in one directory, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def save(self, mail_from: str, rcpt_to: list[str], content: bytes) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        msg_id = f"{time.time_ns()}-{secrets.token_hex(4)}"
        envelope = (
            f"X-Mail-Capture-Mail-From: {mail_from}\r\n"
            f"X-Mail-Capture-Rcpt-To: {', '.join(rcpt_to)}\r\n"
        ).encode()
        tmp = self.dir / f".{msg_id}.tmp"
        tmp.write_bytes(envelope + content)
        tmp.rename(self.dir / f"{msg_id}.eml")  # readers never see half a message
        return msg_id

    def ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.eml") if _ID.match(p.stem))

    def get(self, msg_id: str) -> Captured | None:
        if not _ID.match(msg_id):
            return None
        path = self.dir / f"{msg_id}.eml"
        if not path.is_file():
            return None
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(msg, EmailMessage)
        rcpts = str(msg.get("X-Mail-Capture-Rcpt-To", ""))
        return Captured(
            id=msg_id,
            mail_from=str(msg.get("X-Mail-Capture-Mail-From", "")),
            rcpt_to=[r.strip() for r in rcpts.split(",") if r.strip()],
            received=int(msg_id.split("-", 1)[0]) / 1e9,
            message=msg,
        )

    def raw(self, msg_id: str) -> bytes | None:
        if not _ID.match(msg_id):
            return None
        path = self.dir / f"{msg_id}.eml"
        return path.read_bytes() if path.is_file() else None

    def all(self) -> list[Captured]:
        return [c for c in (self.get(i) for i in self.ids()) if c is not None]


# ------------------------------------------------------------------------------- servers


class _SmtpHandler:
    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.store.save(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        return "250 Message captured (PenguinMails dev stack, not delivered)"


_PAGE_HEAD = (
    "<!doctype html><meta charset=utf-8><title>{title}</title>"
    "<style>body{{font:14px system-ui;margin:2em}}td,th{{padding:.3em .8em;text-align:left}}"
    "tr:nth-child(even){{background:#f3f4f6}}iframe{{width:100%;height:60vh;border:1px solid"
    " #ccc}}pre{{white-space:pre-wrap}}</style>"
    '<p style="background:#fde68a;padding:.5em">Mail captured by the dev stack: nothing here'
    " left this machine.</p>"
)


def http_app(store: MailStore) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def index(_request: Request) -> Response:
        rows = "".join(
            f"<tr><td>{html.escape(c.summary()['received_at'])}</td>"
            f"<td>{html.escape(c.summary()['from'])}</td>"
            f"<td>{html.escape(', '.join(c.rcpt_to))}</td>"
            f'<td><a href="/messages/{c.id}">{html.escape(c.subject or "(no subject)")}</a></td>'
            "</tr>"
            for c in reversed(store.all())
        )
        return HTMLResponse(
            _PAGE_HEAD.format(title="Captured mail")
            + f"<h1>Captured mail ({len(store.ids())})</h1>"
            + "<table><tr><th>received</th><th>from</th><th>to</th><th>subject</th></tr>"
            + (rows or '<tr><td colspan="4">nothing yet</td></tr>')
            + "</table>"
        )

    def message_page(request: Request) -> Response:
        msg_id = request.path_params["id"]
        if msg_id.endswith(".eml"):
            raw = store.raw(msg_id.removesuffix(".eml"))
            if raw is None:
                return Response("no such message", status_code=404)
            return Response(raw, media_type="message/rfc822")
        c = store.get(msg_id)
        if c is None:
            return HTMLResponse("no such message", status_code=404)
        body_html = c.body("html")
        headers = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in c.message.items()
        )
        parts = f"<table>{headers}</table>"
        if body_html is not None:
            # The HTML part in a sandboxed frame: no scripts, no access to this page.
            parts += f'<h2>HTML</h2><iframe sandbox srcdoc="{html.escape(body_html)}"></iframe>'
        text = c.body("plain")
        if text is not None:
            parts += f"<h2>Text</h2><pre>{html.escape(text)}</pre>"
        return HTMLResponse(
            _PAGE_HEAD.format(title=html.escape(c.subject))
            + f'<p><a href="/">all mail</a> · <a href="/messages/{c.id}.eml">raw</a></p>'
            + f"<h1>{html.escape(c.subject or '(no subject)')}</h1>"
            + parts
        )

    def api_list(_request: Request) -> Response:
        return JSONResponse({"messages": [c.summary() for c in store.all()]})

    def api_message(request: Request) -> Response:
        c = store.get(request.path_params["id"])
        if c is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        return JSONResponse(c.detail())

    def readyz(_request: Request) -> Response:
        return JSONResponse({"status": "ready", "messages": len(store.ids())})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/messages/{id}", message_page),
            Route("/api/messages", api_list),
            Route("/api/messages/{id}", api_message),
            Route("/readyz", readyz),
            Route("/healthz", readyz),
        ]
    )


def serve(store: MailStore, smtp_port: int, http_port: int) -> None:
    """Run the SMTP listener and the HTTP pages until SIGTERM/SIGINT."""
    import uvicorn
    from aiosmtpd.controller import Controller

    smtp = Controller(_SmtpHandler(store), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    server = uvicorn.Server(
        uvicorn.Config(
            http_app(store), host="127.0.0.1", port=http_port, log_config=None, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    print(
        f"mail capture: SMTP 127.0.0.1:{smtp_port}, pages http://127.0.0.1:{http_port}/,"
        f" files {store.dir}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.should_exit = True
    thread.join(10)
    smtp.stop()


# ----------------------------------------------------------------------------------- CLI


def print_list(store: MailStore) -> int:
    captured = store.all()
    if not captured:
        print(f"no captured mail in {store.dir}")
        return 0
    print(f"{'id':<30} {'received (UTC)':<20} {'to':<32} subject")
    for c in captured:
        s = c.summary()
        print(f"{c.id:<30} {s['received_at']:<20} {', '.join(c.rcpt_to)[:32]:<32} {c.subject}")
    print(f"\n{len(captured)} message(s); `make mail ID=<id>` shows one")
    return 0


def print_message(store: MailStore, msg_id: str) -> int:
    c = store.get(msg_id)
    if c is None:
        print(f"no message {msg_id!r} in {store.dir}", file=sys.stderr)
        return 1
    for key, value in c.message.items():
        print(f"{key}: {value}")
    text = c.body("plain")
    html_body = c.body("html")
    print()
    print(text if text is not None else (html_body or "(no body)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.dev.mail_capture")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the SMTP listener and the pages")
    run.add_argument("--smtp-port", type=int, required=True)
    run.add_argument("--http-port", type=int, required=True)
    run.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    sub.add_parser("list", help="list captured messages").add_argument(
        "--dir", type=Path, default=DEFAULT_DIR
    )
    show = sub.add_parser("show", help="print one message")
    show.add_argument("id")
    show.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    store = MailStore(args.dir)
    if args.command == "serve":
        serve(store, args.smtp_port, args.http_port)
        return 0
    if args.command == "show":
        return print_message(store, args.id)
    return print_list(store)


if __name__ == "__main__":
    sys.exit(main())
