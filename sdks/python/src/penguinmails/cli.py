"""`penguinmails`: the command line of the PenguinMails API.

Account commands sign in as a dashboard user (`login`, `logout`, `keys ...`): `login` keeps
the refresh token in the OS keyring when the `keyring` package and a backend are available,
else in `$XDG_CONFIG_HOME/penguinmails/credentials.json` (mode 0600). Each account command
trades it for a fresh access token (the API rotates refresh tokens, so the new one is kept).
API commands (`emails send`, `contacts import`, `events tail|types`, `listen`, `trigger`)
use an API key: `--api-key` or `PENGUINMAILS_API_KEY`. Exit codes: 0 done, 1 the API or the
network failed, 2 bad usage, 3 done with failed rows (`contacts import`), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import sys
from typing import Any, NoReturn

from . import _cli_contacts, _cli_events
from ._cli_support import (
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    api_client,
    base_url,
    config_dir,
    emit,
    read_json,
    write_private,
)
from ._client import PenguinMails
from ._errors import PenguinMailsError

KEYRING_SERVICE = "penguinmails"


# ---------------------------------------------------------------- the refresh token's home


def _keyring() -> Any | None:
    """The keyring module when it has a real backend (not the fail/null ones), else None."""
    if os.environ.get("PENGUINMAILS_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring) or "null" in type(backend).__module__:
        return None
    return keyring


class TokenStore:
    """The refresh token of one base URL: in the OS keyring, else in a 0600 file."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.path = config_dir() / "credentials.json"
        self.keyring = _keyring()

    @property
    def where(self) -> str:
        return "the OS keyring" if self.keyring else str(self.path)

    def _file(self) -> dict[str, Any]:
        return read_json(self.path)

    def load(self) -> str | None:
        if self.keyring:
            token = self.keyring.get_password(KEYRING_SERVICE, self.base_url)
            return str(token) if token else None
        token = self._file().get(self.base_url, {}).get("refresh_token")
        return str(token) if token else None

    def save(self, refresh_token: str) -> None:
        if self.keyring:
            self.keyring.set_password(KEYRING_SERVICE, self.base_url, refresh_token)
            return
        data = self._file()
        data[self.base_url] = {"refresh_token": refresh_token}
        write_private(self.path, data)

    def delete(self) -> None:
        if self.keyring:
            with contextlib.suppress(Exception):
                self.keyring.delete_password(KEYRING_SERVICE, self.base_url)
            return
        data = self._file()
        if data.pop(self.base_url, None) is not None:
            self.path.write_text(json.dumps(data, indent=2))


# ---------------------------------------------------------------- commands


def _account_client(args: argparse.Namespace) -> PenguinMails:
    """A client holding a fresh access token (the stored refresh token, rotated)."""
    url = base_url(args)
    store = TokenStore(url)
    refresh_token = store.load()
    if not refresh_token:
        raise UsageError("Not signed in: run `penguinmails login` first.")
    # auth/refresh takes no credentials: the refresh token in the body is the proof.
    pair = PenguinMails(base_url=url, max_retries=args.max_retries).auth.refresh(
        refresh_token=refresh_token
    )
    store.save(pair["refresh_token"])
    # Account routes (auth "jwt") send the access token before any API key of the environment.
    return PenguinMails(
        access_token=pair["access_token"], base_url=url, max_retries=args.max_retries
    )


def cmd_login(args: argparse.Namespace) -> int:
    email = args.email or input("Email: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("PENGUINMAILS_PASSWORD") or getpass.getpass("Password: ")
    url = base_url(args)
    client = PenguinMails(base_url=url, max_retries=args.max_retries)
    session = client.auth.login(email=email, password=password)
    store = TokenStore(url)
    store.save(session["refresh_token"])
    who = session.get("user", {}).get("email", email)
    tenant = session.get("tenant", {}).get("name", "")
    emit(
        args,
        {"user": session.get("user"), "tenant": session.get("tenant"), "stored_in": store.where},
        f"Signed in as {who}{f' ({tenant})' if tenant else ''}; refresh token kept in "
        f"{store.where}.",
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    store = TokenStore(base_url(args))
    token = store.load()
    if token:
        with contextlib.suppress(PenguinMailsError):
            PenguinMails(base_url=base_url(args)).auth.logout(refresh_token=token)
    store.delete()
    emit(args, {"signed_out": True}, "Signed out.")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    client = _account_client(args)
    query: dict[str, Any] = {"limit": 100}
    if args.status:
        query["status"] = args.status
    keys = list(client.api_keys.list(**query))
    lines = [
        f"{k.get('id')}  {k.get('status', ''):8}  {k.get('mode', ''):4}  "
        f"{k.get('prefix', k.get('key_prefix', '')):16}  {k.get('name', '')}"
        for k in keys
    ]
    emit(args, keys, "\n".join(lines) if lines else "No API keys.")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    client = _account_client(args)
    created = client.api_keys.create(name=args.name, scopes=args.scope, mode=args.mode)
    emit(
        args,
        created,
        f"Created {created.get('id')}. The key is shown once, keep it now:\n{created.get('key')}",
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    client = _account_client(args)
    revoked = client.api_keys.revoke(args.key_id)
    emit(args, revoked, f"Revoked {args.key_id}.")
    return 0


def cmd_emails_send(args: argparse.Namespace) -> int:
    client = api_client(args)
    body: dict[str, Any] = {"from": args.from_, "to": args.to, "subject": args.subject}
    if args.text:
        body["text"] = args.text
    if args.html:
        body["html"] = args.html
    if args.tag:
        body["tags"] = args.tag
    if args.category:
        body["category"] = args.category
    result = client.emails.send(body)
    emit(args, result, f"Queued {result.get('message_id')} ({result.get('status', 'queued')}).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="penguinmails", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="API base URL (default: PENGUINMAILS_BASE_URL)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--max-retries", type=int, default=2, help="API retries (default 2)")
    sub = parser.add_subparsers(dest="command", required=True)
    # `--json` after the command too (`events tail --json`); SUPPRESS keeps the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    # API commands take the key here or from the environment.
    api = argparse.ArgumentParser(add_help=False, parents=[common])
    api.add_argument("--api-key", help="default: PENGUINMAILS_API_KEY")

    login = sub.add_parser("login", parents=[common], help="sign in with email and password")
    login.add_argument("--email")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(func=cmd_login)
    sub.add_parser(
        "logout", parents=[common], help="end the session, forget the token"
    ).set_defaults(func=cmd_logout)

    keys = sub.add_parser("keys", help="API keys of your account").add_subparsers(
        dest="keys_command", required=True
    )
    k_list = keys.add_parser("list", parents=[common], help="list API keys")
    k_list.add_argument("--status", choices=["active", "revoked", "expired"])
    k_list.set_defaults(func=cmd_keys_list)
    k_create = keys.add_parser("create", parents=[common], help="create an API key (shown once)")
    k_create.add_argument("--name", required=True)
    k_create.add_argument("--scope", action="append", required=True, help="repeatable")
    k_create.add_argument("--mode", choices=["live", "test"], default="live")
    k_create.set_defaults(func=cmd_keys_create)
    k_revoke = keys.add_parser("revoke", parents=[common], help="revoke an API key")
    k_revoke.add_argument("key_id")
    k_revoke.set_defaults(func=cmd_keys_revoke)

    emails = sub.add_parser("emails", help="send email").add_subparsers(
        dest="emails_command", required=True
    )
    send = emails.add_parser("send", parents=[api], help="send one email")
    send.add_argument("--from", dest="from_", required=True)
    send.add_argument("--to", required=True)
    send.add_argument("--subject", required=True)
    send.add_argument("--text")
    send.add_argument("--html")
    send.add_argument("--tag", action="append")
    send.add_argument("--category", choices=["marketing", "transactional"])
    send.set_defaults(func=cmd_emails_send)

    _cli_contacts.add_commands(sub, api)
    _cli_events.add_commands(sub, api)
    return parser


def _stop(_signum: int, _frame: Any) -> NoReturn:
    # SIGTERM ends `events tail` and `listen` as Ctrl-C does: cleanly, naming the resume id.
    raise KeyboardInterrupt


def _fail(args: argparse.Namespace, exc: PenguinMailsError) -> int:
    if args.json:
        error = {
            "code": exc.code,
            "message": exc.message,
            "status": exc.status,
            "details": exc.details,
            "request_id": exc.request_id,
        }
        print(json.dumps({"error": error}), file=sys.stderr)
    else:
        detail = "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in exc.details)
        print(f"error: {exc}{detail}", file=sys.stderr)
    return EXIT_API


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return int(args.func(args))
    except PenguinMailsError as exc:
        return _fail(args, exc)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed by its reader (`events tail | head -3`): done, without a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
