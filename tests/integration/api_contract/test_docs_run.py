"""Every code example of docs/examples runs against the real stack and succeeds (issue 15 §6):
cURL, Node.js, Python (httpx), PHP, and the TypeScript, Python and Ruby SDK calls beside them.

Each language gets a tenant of its own (the examples create the same objects), and the
objects the examples name by id are made first, through the API, by `World`. The examples
are adapted only the way an integrator adapts them: the base URL, the key in the environment
(`PM_API_KEY`: a test-mode key with every scope; `PM_ACCESS_TOKEN`: the owner's dashboard
JWT), the example ids and the auth emails replaced by ones of this tenant, the webhook
receiver URL replaced by one reachable here, and the event stream's 30 s cut to 3 s.

The Postman collection runs end to end with newman (pinned in tests/tools, installed by
`make docs-deps`), with a test-mode key, carrying ids from each create to what follows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import smtplib
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.common.principal import SCOPES
from scripts.docs.collect import REPO
from scripts.docs.render import BASE_URL, POSTMAN_FOLDERS, _postman_order
from services.campaigns.scheduling import DAY_NAMES
from tests.integration.api_contract.conftest import REPLY_DOMAIN, Stack, connect
from tests.integration.billing.conftest import BillingStack
from tests.integration.keys.platform_stack import Platform, bearer, set_plan
from tests.unit.inbox import mail

EXAMPLES = REPO / "docs" / "examples"
# Operations answering a file (`get_raw`: the message's raw MIME), not the JSON envelope:
# their examples print it, and the inbound reply's headers must show in what they print.
RAW = frozenset({"get_raw"})
TS_SDK = REPO / "sdks" / "typescript"
RUBY_LIB = REPO / "sdks" / "ruby" / "lib"
PASSWORD = "correct horse battery staple"
RECEIVER_PATH = "/webhooks/penguinmails"
LANGUAGES = {
    "cURL": "curl",
    "Node.js (18+)": "node",
    "Python (httpx)": "python",
    "PHP (curl)": "php",
    "TypeScript SDK (`@penguinmails/sdk`)": "typescript-sdk",
    "Python SDK (`penguinmails`)": "python-sdk",
    "Ruby SDK (`penguinmails` gem)": "ruby-sdk",
}


@dataclass
class Example:
    op_id: str
    method: str
    path: str
    language: str
    code: str
    tag: str = ""


def read_examples() -> list[Example]:
    out = []
    for page in sorted(EXAMPLES.glob("*.md")):
        for section in page.read_text().split("\n## ")[1:]:
            head = re.search(r"`(\w+) (\S+)` · operationId `(\w+)`", section)
            if head is None:
                continue
            method, path, op_id = head.groups()
            blocks = re.findall(r"\*\*(.+?)\*\*\n\n```(\w+)\n(.*?)\n```", section, re.S)
            for title, _lang, code in blocks:
                out.append(Example(op_id, method, path, LANGUAGES[title], code, page.stem))
    # The order the Postman collection runs in: what makes an object before what uses it,
    # every delete last.
    return sorted(out, key=_run_order)


def _run_order(e: Example) -> tuple[Any, ...]:
    folder = POSTMAN_FOLDERS.index(e.tag) if e.tag in POSTMAN_FOLDERS else len(POSTMAN_FOLDERS)
    last = e.method == "DELETE"
    return (last, folder, _postman_order(e.path, e.method.lower(), e.op_id))


# ------------------------------------------------------------------ a tenant and its objects


class Receiver:
    """A webhook receiver on loopback answering 200 (the examples' https://example.com one
    cannot be reached from here)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}{RECEIVER_PATH}"

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class World:
    """One tenant: its credentials, and per operation the text replacements that make that
    operation's examples name objects of this tenant in the state the operation needs."""

    gw: str
    email: str
    test_key: str
    access_token: str
    common: dict[str, str] = field(default_factory=dict)
    per_op: dict[str, dict[str, str]] = field(default_factory=dict)

    def env(self, op_id: str = "") -> dict[str, str]:
        return {"PM_API_KEY": self.test_key, "PM_ACCESS_TOKEN": self.access_token}

    def adapt(self, example: Example) -> str:
        code = example.code.replace(BASE_URL, self.gw)
        for old, new in {**self.common, **self.per_op.get(example.op_id, {})}.items():
            code = code.replace(old, new)
        if example.op_id == "stream_events":
            code = code.replace("30000", "3000").replace("--max-time 30", "--max-time 3")
            code = code.replace("+ 30", "+ 3").replace("CURLOPT_TIMEOUT, 30", "CURLOPT_TIMEOUT, 3")
        return code


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 300, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()["data"]


def build_world(
    stack: Stack, billing: BillingStack, receiver: Receiver, platform: Platform
) -> World:
    unique = uuid.uuid4().hex[:10]
    email = f"docs-{unique}@example.com"
    with httpx.Client(base_url=stack.gw, timeout=60) as c:
        owner = _ok(
            c.post(
                "/api/v1/auth/signup",
                json={"email": email, "password": PASSWORD, "company": f"Docs {unique}"},
            )
        )
        # 82 examples and their set-up in a minute or two: more than the free plan's 20/min.
        set_plan(platform, owner["tenant"]["id"], "enterprise")
        jwt = bearer(owner["access_token"])
        test_key = _ok(
            c.post(
                "/api/v1/platform/api-keys",
                json={"name": "docs", "scopes": list(SCOPES), "mode": "test"},
                headers=jwt,
            )
        )["key"]
        world = World(stack.gw, email, test_key, owner["access_token"])
        h = bearer(test_key)

        def post(path: str, body: Any, headers: dict[str, str] = h) -> Any:
            return _ok(c.post(path, json=body, headers=headers))

        today = datetime.now(UTC).weekday()
        other_days = [d for i, d in enumerate(DAY_NAMES) if i != today]

        def campaign(name: str) -> str:
            return str(
                post(
                    "/api/v1/campaigns",
                    {
                        "name": name,
                        "subject": "Hi {{ first_name }}",
                        "content": {"text": "Hello {{ first_name }}"},
                        # Sending only on other days than today: a started campaign stays
                        # running (pausable) instead of completing at once.
                        "recipients": [
                            {"email": f"{name}-{n}-{unique}@example.com"} for n in (1, 2)
                        ],
                        "daily_cap": 1,
                        "schedule": {"timezone": "UTC", "days": other_days},
                    },
                )["id"]
            )

        contact = str(post("/api/v1/contacts", {"email": f"c-{unique}@example.com"})["id"])
        doomed_contact = str(post("/api/v1/contacts", {"email": f"d-{unique}@example.com"})["id"])
        template = {"name": "T", "subject": "S", "text": "Hello"}
        template_id = str(post("/api/v1/templates", template)["id"])
        doomed_template = str(post("/api/v1/templates", template)["id"])
        draft, doomed_campaign, to_start, to_cancel = (
            campaign(n) for n in ("draft", "doomed", "start", "cancel")
        )
        running = campaign("running")
        post(f"/api/v1/campaigns/{running}/start", {})
        paused = campaign("paused")
        post(f"/api/v1/campaigns/{paused}/start", {})
        post(f"/api/v1/campaigns/{paused}/pause", {})
        # Its own name: a domain another tenant verified (the verify example does) is taken.
        domain_name = f"mail-{unique}.yourdomain.example"
        domain_id = str(post("/api/v1/domains", {"name": domain_name})["id"])
        doomed_domain = str(post("/api/v1/domains", {"name": f"d{unique}.example"})["id"])
        endpoint = {"url": receiver.url, "events": ["email.opened"]}
        endpoint_id = str(post("/api/v1/webhooks", endpoint)["id"])
        doomed_endpoint = str(post("/api/v1/webhooks", endpoint)["id"])
        post(f"/api/v1/webhooks/{endpoint_id}/test", {"event_type": "email.opened"})
        delivery_id = _first_delivery(c, h, endpoint_id)
        message_id = post(
            "/api/v1/emails/send", {"to": f"m-{unique}@example.com", "subject": "S", "text": "T"}
        )["message_id"]
        thread_id, inbox_message_id = _reply_thread(c, h, stack, message_id)
        batch_id = post(
            "/api/v1/emails/send-bulk",
            {"subject": "S", "text": "T", "recipients": [{"email": f"b-{unique}@example.com"}]},
        )["batch_id"]
        rows = [{"email": f"i-{unique}@example.com"}]
        import_id = str(post("/api/v1/contacts/imports", rows)["id"])
        rule_id = str(post("/api/v1/emails/routing-rules", {"primary_provider": "postmark"})["id"])
        suppressed = f"s-{unique}@example.com"
        post("/api/v1/emails/suppressions", {"email": suppressed})
        keys = [
            str(
                post(
                    "/api/v1/platform/api-keys",
                    {"name": f"k{i}", "scopes": ["send_email"], "mode": "test"},
                    headers=jwt,
                )["id"]
            )
            for i in range(2)
        ]
        refresh_tokens = [
            post("/api/v1/auth/login", {"email": email, "password": PASSWORD}, headers={})[
                "refresh_token"
            ]
            for _ in range(2)
        ]
        # The customer portal needs a Stripe customer, which a checkout session makes.
        post("/api/v1/billing/checkout-sessions", {"plan_id": "pro"}, headers=jwt)

    world.common = {
        "thread_0001": thread_id,
        "contact_0001": contact,
        "template_0001": template_id,
        "campaign_0001": draft,
        "domain_0001": domain_id,
        "endpoint_0001": endpoint_id,
        "delivery_0001": delivery_id,
        "message_0001": message_id,
        "batch_0001": batch_id,
        "import_0001": import_id,
        "rule_0001": rule_id,
        "key_0001": keys[0],
        "https://example.com/webhooks/penguinmails": receiver.url,
        "mail.yourdomain.example": domain_name,
    }
    world.per_op = {
        "delete_contact": {"contact_0001": doomed_contact},
        "delete_template": {"template_0001": doomed_template},
        "delete_campaign": {"campaign_0001": doomed_campaign},
        "start_campaign": {"campaign_0001": to_start},
        "pause_campaign": {"campaign_0001": running},
        "resume_campaign": {"campaign_0001": paused},
        "cancel_campaign": {"campaign_0001": to_cancel},
        "delete_domain": {"domain_0001": doomed_domain},
        "delete_endpoint": {"endpoint_0001": doomed_endpoint},
        "delete_suppression": {"jane@example.com": suppressed},
        "regenerate_key": {"key_0001": keys[1]},
        "signup": {"jane@example.com": f"new-{unique}@example.com"},
        # The tenant already has this domain (update_domain's sender is on it).
        "create_domain": {"mail.yourdomain.example": f"news-{unique}.yourdomain.example"},
        "login": {"jane@example.com": email},
        "refresh": {"refresh_token_0001": refresh_tokens[0]},
        "logout": {"refresh_token_0001": refresh_tokens[1]},
        # The inbox's messages are its own (an inbound reply), not delivery's sent ones.
        **{
            op: {"message_0001": inbox_message_id}
            for op in ("list_messages", "get_message", "get_raw")
        },
    }
    return world


def _reply_thread(
    c: httpx.Client, h: dict[str, str], stack: Stack, message_id: str
) -> tuple[str, str]:
    """The recipient of `message_id` answers it (a reply delivered to the inbox's SMTP
    listener, threaded by In-Reply-To): the thread it makes and its inbound message (ids)."""
    deadline = time.monotonic() + 120
    sent = asyncio.run(_learned_by_inbox(message_id, deadline))
    raw = mail.reply(to=sent["from_email"], in_reply_to=sent["header_message_id"])
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30) as smtp:
        smtp.sendmail(sent["to"], [f"reply@{REPLY_DOMAIN}"], raw)
    while True:
        threads = _ok(c.get("/api/v1/inbox/threads", headers=h))
        if threads:
            break
        assert time.monotonic() < deadline, "the reply never made a thread"
        time.sleep(0.5)
    messages = _ok(c.get(f"/api/v1/inbox/threads/{threads[0]['id']}", headers=h))["messages"]
    inbound = [m for m in messages if m["direction"] == "inbound"]
    return str(threads[0]["id"]), str(inbound[0]["id"])


async def _learned_by_inbox(message_id: str, deadline: float) -> dict[str, Any]:
    """The inbox's read model of a sent message, once its `email.sent` has reached it."""
    conn = await connect("inbox")
    try:
        while True:
            row = await conn.fetchrow(
                'SELECT header_message_id, from_email, to_email AS "to" FROM sent_messages'
                " WHERE message_id = $1 AND header_message_id IS NOT NULL",
                message_id,
            )
            if row is not None:
                return dict(row)
            assert time.monotonic() < deadline, "the inbox never learned the sent message"
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def _first_delivery(c: httpx.Client, h: dict[str, str], endpoint_id: str) -> str:
    deadline = time.monotonic() + 120
    while True:
        rows = _ok(c.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", headers=h))
        if rows:
            return str(rows[0]["id"])
        assert time.monotonic() < deadline, "the test delivery never appeared"
        time.sleep(0.5)


# ------------------------------------------------------------------ running them


@dataclass
class Outcome:
    example: Example
    ok: bool
    output: str


def _run(
    command: list[str], env: dict[str, str], cwd: Path, timeout: int = 120
) -> tuple[int, str, str]:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout, done.stderr


def _base_env(world: World, op_id: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "PENGUINMAILS_"))}
    return {**env, **world.env(op_id)}


def run_one_by_one(examples: list[Example], world: World, tmp: Path) -> list[Outcome]:
    """cURL (bash) and PHP: one process per example (both start in milliseconds)."""
    out = []
    for i, ex in enumerate(examples):
        env = _base_env(world, ex.op_id)
        code = world.adapt(ex)
        if ex.language == "curl":
            rc, stdout, stderr = _run(["bash", "-c", code], env, tmp)
            if ex.op_id == "stream_events":
                ok = rc in (0, 28) and "retry:" in stdout  # 28: --max-time reached, as meant
            else:
                # --fail-with-body: rc 0 is a 2xx; a body, when there is one, is a success
                # (raw MIME for RAW, JSON elsewhere).
                ok = rc == 0 and (
                    _raw_mime(stdout)
                    if ex.op_id in RAW
                    else not stdout.strip() or _json_success(stdout)
                )
        else:
            script = tmp / f"{ex.op_id}-{i}.php"
            script.write_text(code)
            rc, stdout, stderr = _run(["php", str(script)], env, tmp)
            ok = rc == 0 and "Warning" not in stdout + stderr and "Fatal" not in stdout + stderr
            ok = ok and (ex.op_id not in RAW or _raw_mime(stdout))
        out.append(Outcome(ex, ok, (stdout + stderr)[-2000:]))
    return out


def _raw_mime(text: str) -> bool:
    """What a raw example printed is the inbound message: its MIME headers, not JSON."""
    return bool(re.search(r"^Subject: ", text, re.M)) and bool(re.search(r"^From: ", text, re.M))


def _json_success(text: str) -> bool:
    try:
        return json.loads(text).get("success") is True
    except ValueError:
        return False


PY_RUNNER = """
import json, os, runpy, sys
results = []
envs = json.load(open(sys.argv[1] + ".env"))
for path in sys.argv[2:]:
    os.environ.update(envs[path])
    try:
        runpy.run_path(path, run_name="__main__")
        results.append([path, True, ""])
    except BaseException as exc:  # an example failing must not stop the others
        results.append([path, False, repr(exc)[-2000:]])
open(sys.argv[1], "w").write(json.dumps(results))
"""
NODE_RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const results = [];
const envs = JSON.parse(readFileSync(process.argv[2] + ".env", "utf8"));
for (const path of process.argv.slice(3)) {
  Object.assign(process.env, envs[path]);
  try {
    await import(pathToFileURL(path).href);
    results.push([path, true, ""]);
  } catch (err) {
    results.push([path, false, String(err && err.stack || err).slice(-2000)]);
  }
}
writeFileSync(process.argv[2], JSON.stringify(results));
"""
RUBY_RUNNER = """
require "json"
results = []
envs = JSON.parse(File.read(ARGV[0] + ".env"))
ARGV[1..].each do |path|
  envs[path].each { |k, v| ENV[k] = v }
  begin
    load path, true
    results << [path, true, ""]
  rescue Exception => e
    results << [path, false, "#{e.class}: #{e.message}"[-2000..] || "#{e.class}: #{e.message}"]
  end
end
File.write(ARGV[0], JSON.generate(results))
"""


def run_in_one_process(examples: list[Example], world: World, tmp: Path) -> list[Outcome]:
    """Node, Python and Ruby (plain and SDK): every example a file of its own, all run by one
    interpreter in order, each failure caught and reported."""
    language = examples[0].language
    ext = {"node": "mjs", "typescript-sdk": "mjs", "python": "py", "python-sdk": "py"}.get(
        language, "rb"
    )
    files = []
    for i, ex in enumerate(examples):
        code = world.adapt(ex)
        if language == "typescript-sdk":
            # The package as installed from this checkout's build (npm would resolve the name).
            built = (TS_SDK / "packages" / "sdk" / "dist" / "esm" / "index.js").as_uri()
            code = code.replace('"@penguinmails/sdk"', json.dumps(built))
        path = tmp / f"{language}-{i:03d}-{ex.op_id}.{ext}"
        path.write_text(code)
        files.append(str(path))
    results = tmp / f"{language}.json"
    envs = {f: world.env(ex.op_id) for ex, f in zip(examples, files, strict=True)}
    Path(f"{results}.env").write_text(json.dumps(envs))
    env = _base_env(world)
    if ext == "mjs":
        runner = tmp / "runner.mjs"
        runner.write_text(NODE_RUNNER)
        command = ["node", str(runner), str(results), *files]
    elif ext == "py":
        runner = tmp / "runner.py"
        runner.write_text(PY_RUNNER)
        command = [os.sys.executable, str(runner), str(results), *files]  # type: ignore[attr-defined]
    else:
        runner = tmp / "runner.rb"
        runner.write_text(RUBY_RUNNER)
        command = ["ruby", "-I", str(RUBY_LIB), str(runner), str(results), *files]
    rc, stdout, stderr = _run(command, env, tmp, timeout=900)
    assert results.exists(), f"the {language} runner died ({rc}):\n{(stdout + stderr)[-4000:]}"
    by_path = {p: (ok, err) for p, ok, err in json.loads(results.read_text())}
    return [
        Outcome(ex, by_path[f][0], by_path[f][1]) for ex, f in zip(examples, files, strict=True)
    ]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def typescript_sdk_built() -> None:
    if not (TS_SDK / "packages" / "sdk" / "dist" / "esm" / "index.js").exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm is required (make sdk-deps)"
        if not (TS_SDK / "node_modules").exists():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_SDK, check=True)
        subprocess.run([npm, "run", "--silent", "build"], cwd=TS_SDK, check=True)


@pytest.mark.parametrize("language", list(LANGUAGES.values()))
def test_every_example_runs(
    language: str,
    platform: Platform,
    stack: Stack,
    billing: BillingStack,
    receiver: Receiver,
    typescript_sdk_built: None,
    tmp_path: Path,
) -> None:
    tool = {"curl": "curl", "php": "php", "ruby-sdk": "ruby"}.get(language, "node")
    if language in ("python", "python-sdk"):
        tool = "bash"
    assert shutil.which(tool), f"{tool} is required (make docs-deps installs it)"
    examples = [e for e in read_examples() if e.language == language]
    assert len(examples) >= 60 if "sdk" not in language else len(examples) >= 50, len(examples)
    world = build_world(stack, billing, receiver, platform)
    if language in ("curl", "php"):
        outcomes = run_one_by_one(examples, world, tmp_path)
    else:
        outcomes = run_in_one_process(examples, world, tmp_path)
    failed = [o for o in outcomes if not o.ok]
    report = "\n\n".join(
        f"== {o.example.op_id} ({o.example.method} {o.example.path})\n{o.output}" for o in failed
    )
    assert not failed, f"{len(failed)} of {len(outcomes)} {language} examples failed:\n{report}"


NEWMAN = REPO / "tests" / "tools" / "node_modules" / ".bin" / "newman"


def test_the_postman_collection_runs_end_to_end_with_newman(
    platform: Platform, stack: Stack, billing: BillingStack, receiver: Receiver, tmp_path: Path
) -> None:
    assert NEWMAN.exists(), "newman is missing: make docs-deps (npm ci in tests/tools)"
    world = build_world(stack, billing, receiver, platform)
    report = tmp_path / "newman.json"
    collection = json.loads((REPO / "docs" / "postman_collection.json").read_text())
    folders = collection["item"]
    command = [
        str(NEWMAN),
        "run",
        str(REPO / "docs" / "postman_collection.json"),
        *(arg for f in folders for arg in ("--folder", f["name"])),
        "--env-var",
        f"baseUrl={stack.gw}",
        "--env-var",
        f"apiKey={world.test_key}",
        "--env-var",
        f"accessToken={world.access_token}",
        "--env-var",
        f"webhookUrl={receiver.url}",
        "--timeout-request",
        "60000",
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--color",
        "off",
    ]
    rc, stdout, stderr = _run(command, _base_env(world), tmp_path, timeout=900)
    text = stdout + stderr
    run = json.loads(report.read_text())["run"]
    failures = [f"{f['source'].get('name')}: {f['error'].get('message')}" for f in run["failures"]]
    assert rc == 0 and not failures, "\n".join(failures) + "\n" + text[-6000:]
    # Every request of the collection ran (list_deliveries may repeat while it waits).
    requests = sum(len(folder["item"]) for folder in folders)
    assert run["stats"]["requests"]["total"] >= requests >= 70
    assert run["stats"]["assertions"]["failed"] == 0
