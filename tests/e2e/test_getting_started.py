"""docs/getting-started.md, executed step by step against the stack `make up` starts.

Every `curl` of the guide is parsed out of the guide itself (method, path, headers, JSON
body) and sent to the gateway, with the guide's shell variables bound to what the earlier
steps returned. So a guide whose requests stop working fails this test. The only
substitution: the guide's example receiver URL becomes a local receiver (the dev stack
allows http and loopback). "Press Pay" is done as the browser does it: the fake Stripe's
Checkout page is fetched and its form posted.

Which stack (`tests/e2e/dev_stack.py`): this checkout's running `make up` stack when there
is one; otherwise the test starts a separate instance of it with `scripts.dev.stack up`
(own state directory, ports shifted, this session's database and vhost), and stops it after.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from scripts.docs.collect import REPO
from tests.e2e.dev_stack import DevStack
from tests.e2e.dev_stack import dev_stack as dev_stack
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.common.amqp_tools import eventually

GUIDE = REPO / "docs" / "getting-started.md"
EXAMPLE_RECEIVER = "https://your-app.example/webhooks/penguinmails"


@dataclass
class Curl:
    method: str
    url: str
    headers: dict[str, str]
    body: Any | None


def json_body(curl: Curl) -> dict[str, Any]:
    """The JSON object a curl command of the guide sends (-d '{...}')."""
    assert isinstance(curl.body, dict), f"{curl.method} {curl.url} sends no JSON object"
    return curl.body


def guide_steps() -> list[list[Curl]]:
    """The curl commands of each ```bash block of the guide, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)
    steps = []
    for block in blocks:
        text = re.sub(r"\\\n\s*", " ", block)  # join continued lines
        text = re.sub(r"^\s*#.*$", "", text, flags=re.M)  # drop comment lines
        commands = [
            _parse_curl(" ".join(chunk.split()))  # a JSON body may span lines
            for chunk in re.split(r"\n(?=curl )", text)
            if chunk.startswith("curl ")
        ]
        steps.append(commands)
    return steps


def _parse_curl(line: str) -> Curl:
    words = shlex.split(line, posix=True)
    method, url, headers, body = "GET", "", {}, None
    it = iter(words[1:])
    for word in it:
        if word == "-X":
            method = next(it)
        elif word == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = json.loads(next(it))
            method = "POST" if method == "GET" else method
        elif word in ("-s", "-i"):
            continue
        else:
            url = word
    return Curl(method, url, headers, body)


def expand(text: str, env: dict[str, str]) -> str:
    text = text.replace("$(uuidgen)", str(uuid.uuid4()))
    text = re.sub(r"<data\.id>", env.get("WEBHOOK_ID", ""), text)
    return re.sub(r"\$([A-Z_]+)", lambda m: env[m.group(1)], text)


def send(client: httpx.Client, cmd: Curl, env: dict[str, str]) -> httpx.Response:
    body = cmd.body
    if isinstance(body, dict) and body.get("url") == EXAMPLE_RECEIVER:
        body = {**body, "url": env["RECEIVER_URL"]}
    return client.request(
        cmd.method,
        expand(cmd.url, env),
        headers={k: expand(v, env) for k, v in cmd.headers.items()},
        json=body,
    )


# Starting a separate instance (~20 processes) can take minutes on a loaded machine.
@pytest.mark.timeout(900)
def test_the_getting_started_guide_works(dev_stack: DevStack) -> None:
    account, key, first_call, webhook, plan = guide_steps()
    assert [len(s) for s in (account, key, first_call, webhook, plan)] == [1, 1, 2, 2, 2]
    env = {"PM": dev_stack.gateway}
    with httpx.Client(timeout=30) as client, WebhookReceiver() as receiver:
        env["RECEIVER_URL"] = receiver.url

        # 1. An account and a dashboard token.
        email = f"getting-started-{uuid.uuid4().hex[:8]}@example.com"
        signup = account[0]
        signup.body = {**json_body(signup), "email": email}
        r = send(client, signup, env)
        assert r.status_code == 201, r.text
        env["PM_ACCESS_TOKEN"] = r.json()["data"]["access_token"]

        # 2. An API key (shown once).
        r = send(client, key[0], env)
        assert r.status_code == 201, r.text
        env["PM_API_KEY"] = r.json()["data"]["key"]
        assert env["PM_API_KEY"].startswith("pm_test_")

        # 3. The first call, and the list with its rate-limit headers.
        r = send(client, first_call[0], env)
        assert r.status_code == 201, r.text
        assert r.json()["success"] is True
        r = send(client, first_call[1], env)
        assert r.status_code == 200, r.text
        assert [c["email"] for c in r.json()["data"]] == ["jane@example.com"]
        assert "X-RateLimit-Remaining" in r.headers
        limit_before = r.headers["X-RateLimit-Limit"]

        # 4. The first webhook, to a receiver on this machine (http, loopback): register it,
        # ask for a test event, verify its signature.
        assert env["RECEIVER_URL"].startswith("http://127.0.0.1:")
        r = send(client, webhook[0], env)
        assert r.status_code == 201, r.text
        env["WEBHOOK_ID"] = r.json()["data"]["id"]
        verifier = Webhook(r.json()["data"]["secret"])
        r = send(client, webhook[1], env)
        assert r.status_code in (200, 201, 202), r.text
        test_event = receiver.wait_for(1, 30)[0]
        verifier.verify(test_event.body, test_event.headers)

        # "Creating a contact now (step 3) also delivers a contact.created event."
        another = Curl(
            first_call[0].method,
            first_call[0].url,
            first_call[0].headers,
            {**json_body(first_call[0]), "email": "joe@example.com"},
        )
        assert send(client, another, env).status_code == 201
        delivered = eventually_sync(lambda: _contact_created(receiver), timeout=60)
        verifier.verify(delivered.body, delivered.headers)
        # Payload version 2026-12-01 (the default): the contact nested as data.contact.
        assert json.loads(delivered.body)["data"]["contact"]["email"] == "joe@example.com"

        # 5. A paid plan: Checkout on the fake Stripe, Pay pressed as a browser does, the
        # signed webhook through /hooks/stripe, the plan changed.
        r = send(client, plan[0], env)
        assert r.status_code == 201, r.text
        pay_url = r.json()["data"]["url"]
        assert pay_url.startswith(f"{dev_stack.fake_stripe}/c/pay/cs_live_")
        page = client.get(pay_url)
        assert page.status_code == 200 and "FAKE Stripe" in page.text, page.text
        assert re.search(r'<form method="post">\s*<button id="pay"', page.text), page.text
        paid = client.post(pay_url)
        assert paid.status_code == 303, paid.text
        assert "checkout=success" in paid.headers["location"]

        def on_pro() -> bool:
            state = send(client, plan[1], env)
            return state.status_code == 200 and state.json()["data"]["plan"] == "pro"

        assert eventually_sync(on_pro, timeout=60)
        r = send(client, first_call[1], env)
        assert r.headers["X-RateLimit-Limit"] != limit_before


def _contact_created(receiver: WebhookReceiver) -> Any:
    for req in list(receiver.requests):
        payload = json.loads(req.body)
        if (
            payload["type"] == "contact.created"
            and payload["data"].get("contact", {}).get("email") == "joe@example.com"
        ):
            return req
    return None


def eventually_sync(check: Any, timeout: float) -> Any:
    import asyncio

    return asyncio.run(eventually(check, timeout=timeout, interval=0.2))
