"""`penguinmails`: the command line of the PenguinMails API.

Account commands sign in as a dashboard user (`login`, `logout`, `keys ...`): `login` keeps
the refresh token in the OS keyring when the `keyring` package and a backend are available,
else in `$XDG_CONFIG_HOME/penguinmails/credentials.json` (mode 0600). Each account command
trades it for a fresh access token (the API rotates refresh tokens, so the new one is kept).
API commands (`emails send`) use an API key: `--api-key` or `PENGUINMAILS_API_KEY`.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._client import PenguinMails
from ._core import DEFAULT_BASE_URL
from ._errors import PenguinMailsError

KEYRING_SERVICE = "penguinmails"


# ---------------------------------------------------------------- the refresh token's home


def _config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "penguinmails"


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
        self.path = _config_dir() / "credentials.json"
        self.keyring = _keyring()

    @property
    def where(self) -> str:
        return "the OS keyring" if self.keyring else str(self.path)

    def _file(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

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
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created 0600 from the start: the token is never readable by others, not even briefly.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(self.path, 0o600)

    def delete(self) -> None:
        if self.keyring:
            with contextlib.suppress(Exception):
                self.keyring.delete_password(KEYRING_SERVICE, self.base_url)
            return
        data = self._file()
        if data.pop(self.base_url, None) is not None:
            self.path.write_text(json.dumps(data, indent=2))


# ---------------------------------------------------------------- commands


def _base_url(args: argparse.Namespace) -> str:
    url = args.base_url or os.environ.get("PENGUINMAILS_BASE_URL") or DEFAULT_BASE_URL
    return str(url).rstrip("/")


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _account_client(args: argparse.Namespace) -> PenguinMails:
    """A client holding a fresh access token (the stored refresh token, rotated)."""
    base_url = _base_url(args)
    store = TokenStore(base_url)
    refresh_token = store.load()
    if not refresh_token:
        raise SystemExit("Not signed in: run `penguinmails login` first.")
    # auth/refresh takes no credentials: the refresh token in the body is the proof.
    pair = PenguinMails(base_url=base_url, max_retries=args.max_retries).auth.refresh(
        refresh_token=refresh_token
    )
    store.save(pair["refresh_token"])
    # Account routes (auth "jwt") send the access token before any API key of the environment.
    return PenguinMails(
        access_token=pair["access_token"], base_url=base_url, max_retries=args.max_retries
    )


def cmd_login(args: argparse.Namespace) -> int:
    email = args.email or input("Email: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("PENGUINMAILS_PASSWORD") or getpass.getpass("Password: ")
    base_url = _base_url(args)
    client = PenguinMails(base_url=base_url, max_retries=args.max_retries)
    session = client.auth.login(email=email, password=password)
    store = TokenStore(base_url)
    store.save(session["refresh_token"])
    who = session.get("user", {}).get("email", email)
    tenant = session.get("tenant", {}).get("name", "")
    _print(
        args,
        {"user": session.get("user"), "tenant": session.get("tenant"), "stored_in": store.where},
        f"Signed in as {who}{f' ({tenant})' if tenant else ''}; refresh token kept in "
        f"{store.where}.",
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    store = TokenStore(_base_url(args))
    token = store.load()
    if token:
        with contextlib.suppress(PenguinMailsError):
            PenguinMails(base_url=_base_url(args)).auth.logout(refresh_token=token)
    store.delete()
    _print(args, {"signed_out": True}, "Signed out.")
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
    _print(args, keys, "\n".join(lines) if lines else "No API keys.")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    client = _account_client(args)
    created = client.api_keys.create(name=args.name, scopes=args.scope, mode=args.mode)
    _print(
        args,
        created,
        f"Created {created.get('id')}. The key is shown once, keep it now:\n{created.get('key')}",
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    client = _account_client(args)
    revoked = client.api_keys.revoke(args.key_id)
    _print(args, revoked, f"Revoked {args.key_id}.")
    return 0


def cmd_emails_send(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("PENGUINMAILS_API_KEY")
    if not api_key:
        raise SystemExit("An API key is needed: --api-key or PENGUINMAILS_API_KEY.")
    client = PenguinMails(api_key=api_key, base_url=_base_url(args), max_retries=args.max_retries)
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
    _print(args, result, f"Queued {result.get('message_id')} ({result.get('status', 'queued')}).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="penguinmails", description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", help="API base URL (default: PENGUINMAILS_BASE_URL)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--max-retries", type=int, default=2)
    sub = parser.add_subparsers(dest="command", required=True)

    login = sub.add_parser("login", help="sign in with email and password")
    login.add_argument("--email")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(func=cmd_login)
    sub.add_parser("logout", help="end the session, forget the token").set_defaults(func=cmd_logout)

    keys = sub.add_parser("keys", help="API keys of your account").add_subparsers(
        dest="keys_command", required=True
    )
    k_list = keys.add_parser("list", help="list API keys")
    k_list.add_argument("--status", choices=["active", "revoked", "expired"])
    k_list.set_defaults(func=cmd_keys_list)
    k_create = keys.add_parser("create", help="create an API key (shown once)")
    k_create.add_argument("--name", required=True)
    k_create.add_argument("--scope", action="append", required=True, help="repeatable")
    k_create.add_argument("--mode", choices=["live", "test"], default="live")
    k_create.set_defaults(func=cmd_keys_create)
    k_revoke = keys.add_parser("revoke", help="revoke an API key")
    k_revoke.add_argument("key_id")
    k_revoke.set_defaults(func=cmd_keys_revoke)

    emails = sub.add_parser("emails", help="send email").add_subparsers(
        dest="emails_command", required=True
    )
    send = emails.add_parser("send", help="send one email")
    send.add_argument("--api-key", help="default: PENGUINMAILS_API_KEY")
    send.add_argument("--from", dest="from_", required=True)
    send.add_argument("--to", required=True)
    send.add_argument("--subject", required=True)
    send.add_argument("--text")
    send.add_argument("--html")
    send.add_argument("--tag", action="append")
    send.add_argument("--category", choices=["marketing", "transactional"])
    send.set_defaults(func=cmd_emails_send)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PenguinMailsError as exc:
        detail = "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in exc.details)
        print(f"error: {exc}{detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
