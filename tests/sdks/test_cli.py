"""The `penguinmails` CLI driven as a subprocess against the real stack of conftest.py
(gateway, keys, campaigns api/relay/worker, delivery, webhooks api/worker/stream/relay): sign-in and
keys, `trigger`, `events tail` across the server's stream time limit (4 s here) and across CLI
runs, `listen --forward-to` a real local receiver (its deliveries verified with the
`standardwebhooks` library, like a real endpoint's with the same secret), and
`contacts import` through the import job API."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from penguinmails import PenguinMails
from standardwebhooks import Webhook, WebhookVerificationError

from tests.conftest import REPO
from tests.fakes.webhook_receiver import Received, Reply, WebhookReceiver
from tests.integration.keys.platform_stack import Platform
from tests.sdks.conftest import SdkStack, new_tenant

SAFETY = 90.0  # seconds: how long a step may take before the test gives up (not a measure)


def _exe() -> str:
    return shutil.which("penguinmails", path=str(REPO / ".venv" / "bin")) or "penguinmails"


def _env(stack: SdkStack, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENGUINMAILS_")}
    env.update(
        PENGUINMAILS_BASE_URL=stack.gateway,
        PENGUINMAILS_API_KEY=stack.api_key,
        XDG_CONFIG_HOME=str(config),
        PENGUINMAILS_NO_KEYRING="1",
        **extra,
    )
    return env


def _cli(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [_exe(), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SAFETY,
        check=False,
    )
    print(f"$ penguinmails {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done


class Running:
    """A long-running CLI (`events tail`, `listen`): its stdout lines one by one, its stderr
    searchable while it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [_exe(), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()

    def _pump(self, stream: Any, out: bool) -> None:
        for line in stream:
            (self.stdout if out else self.stderr).append(line)
            if out:
                self.lines.put(line.rstrip("\n"))

    def line(self) -> str:
        try:
            return self.lines.get(timeout=SAFETY)
        except queue.Empty:
            raise AssertionError(f"no output line; stderr: {''.join(self.stderr)}") from None

    def wait_stderr(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + SAFETY
        while sum(text in line for line in self.stderr) < count:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"{text!r} x{count} not on stderr: {''.join(self.stderr)}")
            time.sleep(0.05)

    def finish(self) -> int:
        code = self.proc.wait(timeout=SAFETY)
        time.sleep(0.1)  # let the pumps read the last lines
        print(f"$ penguinmails {' '.join(self.args)}\n{''.join(self.stdout)}{''.join(self.stderr)}")
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def client(sdk_stack: SdkStack) -> PenguinMails:
    return PenguinMails(api_key=sdk_stack.api_key, base_url=sdk_stack.gateway)


@pytest.fixture
def own_tenant(sdk_stack: SdkStack, platform: Platform) -> SdkStack:
    """The stack with a tenant of its own, for the stream tests: a new stream starts at the
    head, so a shared tenant's stream may carry an earlier test's event stored only after this
    test connected (late, not lost), which would break their exact order assertions."""
    return new_tenant(platform, sdk_stack.gateway, sdk_stack.control, sdk_stack.receiver)


def _trigger(client: PenguinMails, event_type: str) -> str:
    return str(client.events.trigger(type=event_type)["id"])


def test_cli_login_keys_and_emails_send(sdk_stack: SdkStack, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENGUINMAILS_")}
    env.update(
        PENGUINMAILS_BASE_URL=sdk_stack.gateway,
        XDG_CONFIG_HOME=str(tmp_path),
        PENGUINMAILS_NO_KEYRING="1",
    )
    not_signed_in = _cli(["keys", "list"], env)
    assert not_signed_in.returncode == 2 and "Not signed in" in not_signed_in.stderr

    login = _cli(
        ["login", "--email", sdk_stack.email, "--password-stdin"], env, sdk_stack.password + "\n"
    )
    assert login.returncode == 0, login.stderr
    stored = tmp_path / "penguinmails" / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text())[sdk_stack.gateway]["refresh_token"]

    created = _cli(
        ["--json", "keys", "create", "--name", "cli", "--scope", "send_email", "--mode", "test"],
        env,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("pm_test_")
    listed = _cli(["keys", "list", "--json"], env)  # --json after the command works too
    assert listed.returncode == 0, listed.stderr
    assert key["id"] in {k["id"] for k in json.loads(listed.stdout)}

    send = ["--json", "emails", "send", "--from", "hello@example.com", "--to", "jo@example.com"]
    send += ["--subject", "From the CLI", "--text", "Hello"]
    no_key = _cli(send, env)
    assert no_key.returncode == 2 and "API key is needed" in no_key.stderr
    sent = _cli(send, {**env, "PENGUINMAILS_API_KEY": key["key"]})
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "queued"
    bad_to = [a if a != "jo@example.com" else "not-an-address" for a in send]
    bad = _cli(bad_to, {**env, "PENGUINMAILS_API_KEY": key["key"]})
    assert bad.returncode == 1
    assert json.loads(bad.stderr)["error"]["status"] == 422  # --json: the error as JSON

    assert _cli(["keys", "revoke", key["id"]], env).returncode == 0
    revoked = _cli([*send[1:], "--api-key", key["key"]], env)
    assert revoked.returncode == 1 and "error:" in revoked.stderr

    assert _cli(["logout"], env).returncode == 0
    assert sdk_stack.gateway not in json.loads(stored.read_text())
    assert "Not signed in" in _cli(["keys", "list"], env).stderr


def test_trigger_emits_a_test_event_and_refuses_live_keys_and_unknown_types(
    sdk_stack: SdkStack, config: Path
) -> None:
    env = _env(sdk_stack, config)
    done = _cli(["trigger", "email.opened", "--json"], env)
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout)
    assert event["type"] == "email.opened" and event["mode"] == "test"
    uuid.UUID(event["id"])
    pretty = _cli(["trigger", "contact.created"], env)
    assert pretty.returncode == 0 and "Triggered contact.created: event " in pretty.stdout

    unknown = _cli(["--json", "trigger", "email.teleported"], env)
    assert unknown.returncode == 1
    assert json.loads(unknown.stderr)["error"]["status"] == 422

    r = httpx.post(
        f"{sdk_stack.gateway}/api/v1/platform/api-keys",
        json={"name": "live", "scopes": ["read_analytics"], "mode": "live"},
        headers={"Authorization": f"Bearer {sdk_stack.access_token}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    live = _cli(["trigger", "email.opened", "--api-key", r.json()["data"]["key"]], env)
    assert live.returncode == 1 and "test_mode_required" in live.stderr

    types = _cli(["events", "types", "--json"], env)
    assert types.returncode == 0
    scopes = {t["type"]: t["scope"] for t in json.loads(types.stdout)}
    assert scopes["email.opened"] == "read_analytics"


def test_events_tail_follows_reconnects_and_resumes_across_runs(
    own_tenant: SdkStack, config: Path
) -> None:
    env = _env(own_tenant, config)
    client = PenguinMails(api_key=own_tenant.api_key, base_url=own_tenant.gateway)
    tail = Running(["events", "tail", "--json", "--types", "email.opened,email.clicked"], env)
    try:
        tail.wait_stderr("Connected to the event stream")
        sent = [_trigger(client, "email.opened"), _trigger(client, "contact.created")]
        # The server ends each stream after 4 s: the CLI reconnects with Last-Event-ID.
        tail.wait_stderr("Connected to the event stream", count=2)
        sent += [_trigger(client, "email.clicked"), _trigger(client, "email.opened")]
        tail.wait_stderr("Connected to the event stream", count=3)
        sent.append(_trigger(client, "email.clicked"))
        wanted = [sent[0], sent[2], sent[3], sent[4]]  # contact.created is filtered out
        got = [json.loads(tail.line()) for _ in wanted]
    finally:
        assert tail.stop() == 0
    assert [e["id"] for e in got] == wanted  # each once, in order, across reconnections
    assert [e["type"] for e in got] == ["email.opened", "email.clicked"] * 2
    assert all("data" in e and e["created"] for e in got)
    assert len(tail.stdout) == len(wanted)  # nothing else, no repeat
    assert f"--last-event-id {wanted[-1]}" in "".join(tail.stderr)

    # Stopped: these happen while no CLI runs; the next run resumes from the printed id.
    missed = [_trigger(client, "email.opened"), _trigger(client, "email.clicked")]
    resumed = _cli(["events", "tail", "--last-event-id", wanted[-1], "--limit", "2"], env)
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert len(lines) == 2  # pretty: time, type, id, summary
    assert [line.split()[3] for line in lines] == missed
    assert [line.split()[2] for line in lines] == ["email.opened", "email.clicked"]

    # An id the stream does not keep: said loudly, then the stream goes on from now.
    gone = Running(
        ["events", "tail", "--json", "--limit", "1", "--last-event-id", str(uuid.uuid4())], env
    )
    gone.wait_stderr("Connected to the event stream")
    fresh = _trigger(client, "email.opened")
    assert json.loads(gone.line())["id"] == fresh
    assert gone.finish() == 0
    assert "cannot resume after" in "".join(gone.stderr)


def test_listen_forwards_signed_events_in_order_retrying_failures(
    own_tenant: SdkStack, config: Path
) -> None:
    env = _env(own_tenant, config)
    client = PenguinMails(api_key=own_tenant.api_key, base_url=own_tenant.gateway)
    cli_hits = 0

    def script(r: Received) -> Reply:
        nonlocal cli_hits
        if r.path != "/cli":
            return Reply(200)
        cli_hits += 1
        return Reply(500, body=b"boom") if cli_hits == 1 else Reply(200)

    receiver = WebhookReceiver(script).start()
    try:
        base = f"http://127.0.0.1:{receiver.port}"
        listen = Running(
            ["listen", "--forward-to", f"{base}/cli", "--json", "--types", "email.*"], env
        )
        try:
            ready = json.loads(listen.line())
            secret = ready["secret"]
            assert ready["ready"] and ready["forward_to"] == f"{base}/cli"
            assert secret.startswith("whsec_")
            # A real endpoint with the same secret gets the same events, signed by the platform.
            endpoint = client.webhooks.create(
                url=f"{base}/real", events=["email.opened"], secret=secret
            )
            listen.wait_stderr("Connected to the event stream")
            sent = [
                _trigger(client, "email.opened"),
                _trigger(client, "contact.created"),  # not an email.* type: not forwarded
                _trigger(client, "email.clicked"),
                _trigger(client, "email.delivered"),
            ]
            attempts = [json.loads(listen.line()) for _ in range(4)]
        finally:
            assert listen.stop() == 0
        forwarded = [sent[0], sent[2], sent[3]]
        # The first answer was a 500: retried (same id, signed afresh) before the next event.
        assert [(a["event_id"], a["attempt"], a["status"]) for a in attempts] == [
            (forwarded[0], 1, 500),
            (forwarded[0], 2, 200),
            (forwarded[1], 1, 200),
            (forwarded[2], 1, 200),
        ]
        assert attempts[0]["retry_in"] is not None and not attempts[0]["delivered"]
        assert all(a["delivered"] for a in attempts[1:])

        hits = [r for r in receiver.snapshot() if r.path == "/cli"]
        assert [r.headers["webhook-id"] for r in hits] == [forwarded[0], *forwarded]
        verifier = Webhook(secret)
        payloads = [verifier.verify(r.body, r.headers) for r in hits]
        assert [p["id"] for p in payloads] == [forwarded[0], *forwarded]
        assert [p["type"] for p in payloads[1:]] == [
            "email.opened",
            "email.clicked",
            "email.delivered",
        ]
        assert all(r.headers["user-agent"].startswith("PenguinMails-CLI/") for r in hits)
        for r in hits:  # the SDK's verification and the legacy header agree
            assert (
                client.webhooks.verify(r.body, r.headers, secret)["id"] == r.headers["webhook-id"]
            )
            assert r.headers["x-penguinmails-signature"].startswith("sha256=")
        with pytest.raises(WebhookVerificationError):
            verifier.verify(
                hits[1].body.replace(b"email.opened", b"email.clicked"), hits[1].headers
            )

        # The platform's own delivery of the first event verifies with the same code and secret,
        # and carries the same payload (its id is the delivery's).
        real = receiver.wait_for(len(hits) + 1)
        delivery = next(r for r in real if r.path == "/real")
        payload = verifier.verify(delivery.body, delivery.headers)
        assert {k: payload[k] for k in ("type", "created", "data")} == {
            k: payloads[1][k] for k in ("type", "created", "data")
        }
        client.webhooks.delete(endpoint["id"])
    finally:
        receiver.stop()

    # The secret is this machine's, kept 0600 and the same on every run.
    again = _cli(["listen", "--forward-to", "localhost:3000/hooks", "--print-secret"], env)
    assert again.stdout.strip() == secret
    kept = config / "penguinmails" / "listen.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    bad = _cli(["listen", "--forward-to", "ftp://x/y"], env)
    assert bad.returncode == 2 and "--forward-to" in bad.stderr


def test_contacts_import_reports_progress_and_failed_rows(
    sdk_stack: SdkStack, config: Path, tmp_path: Path, client: PenguinMails
) -> None:
    env = _env(sdk_stack, config)
    tag = f"imp-{uuid.uuid4().hex[:8]}"
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text(
        "email,first_name,tags,plan\n"
        f"ann-{tag}@example.com,Ann,{tag},pro\n"
        "not-an-address,Bob,,free\n"
        f"cy-{tag}@example.com,Cy,{tag};vip,\n"
        ",NoEmail,,\n"
    )
    done = _cli(["contacts", "import", str(csv_file), "--interval", "0.2"], env)
    assert done.returncode == 3, done.stderr  # completed, with failed rows
    assert "(100%)" in done.stderr  # the progress bar reached the end
    assert "4 rows, 2 created, 0 updated, 2 failed" in done.stdout
    assert "row 2 (line 3)  not-an-address" in done.stdout
    assert "row 4 (line 5)" in done.stdout
    imported = {c["email"]: c for c in client.contacts.list(tag=[tag], limit=10)}
    assert set(imported) == {f"ann-{tag}@example.com", f"cy-{tag}@example.com"}
    assert imported[f"ann-{tag}@example.com"]["custom_fields"] == {"plan": "pro"}

    json_file = tmp_path / "contacts.json"
    json_file.write_text(
        json.dumps([{"email": f"ann-{tag}@example.com", "last_name": "Again", "tags": [tag]}])
    )
    again = _cli(["--json", "contacts", "import", str(json_file), "--interval", "0.2"], env)
    assert again.returncode == 0, again.stderr
    job = json.loads(again.stdout)
    assert (job["status"], job["total"], job["updated"], job["failed"]) == ("completed", 1, 1, 0)

    no_wait = _cli(["contacts", "import", str(json_file), "--no-wait", "--json"], env)
    assert no_wait.returncode == 0 and json.loads(no_wait.stdout)["status"] in (
        "pending",
        "running",
        "completed",
    )

    headless = tmp_path / "headless.csv"
    headless.write_text("name\nAnn\n")
    refused = _cli(["contacts", "import", str(headless)], env)
    assert refused.returncode == 1 and "error:" in refused.stderr
    assert _cli(["contacts", "import", str(tmp_path / "nope.csv")], env).returncode == 2
    assert _cli(["contacts", "import", str(tmp_path / "contacts.txt")], env).returncode == 2
