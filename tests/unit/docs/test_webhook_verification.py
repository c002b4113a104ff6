"""The verification code in docs/webhooks-events.md, run in its own language against the
platform's own signer (services.webhooks.signatures): accepts what the platform sends, also
during a secret rotation, and refuses a changed body, a wrong secret and an old timestamp."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from scripts.docs.collect import REPO
from services.webhooks.signatures import generate_secret, signature_headers

VERIFY = REPO / "docs" / "examples" / "webhooks"
BODY = (
    b'{"id":"msg_1","type":"email.opened","created":"2026-01-15T09:30:00.000Z",'
    b'"data":{"x":"\xc3\xa9"}}'
)

Case = tuple[str, dict[str, str], bytes, bool]


def _cases() -> list[Case]:
    secret, old_secret, stranger = generate_secret(), generate_secret(), generate_secret()
    now = int(time.time())
    signed = signature_headers([secret], "msg_1", now, BODY)
    rotating = signature_headers([secret, old_secret], "msg_1", now, BODY)
    stale = signature_headers([secret], "msg_1", now - 600, BODY)
    raw = "your-webhook-secret-é"  # the seed's form: the key is the UTF-8 bytes
    raw_signed = signature_headers([raw], "msg_1", now, BODY)
    return [
        (secret, signed, BODY, True),
        (raw, raw_signed, BODY, True),
        (raw, signed, BODY, False),
        (raw + "x", raw_signed, BODY, False),
        (old_secret, rotating, BODY, True),  # a receiver still on the previous secret
        (secret, signed, BODY.replace(b"opened", b"clicked"), False),
        (stranger, signed, BODY, False),
        (secret, stale, BODY, False),
        (secret, {**signed, "webhook-id": "msg_2"}, BODY, False),
        (secret, {k: v for k, v in signed.items() if k != "webhook-signature"}, BODY, False),
    ]


def _check(run: Callable[[list[Case]], list[bool]]) -> None:
    cases = _cases()
    assert run(cases) == [expected for *_, expected in cases]


def test_python_snippet() -> None:
    verify = runpy.run_path(str(VERIFY / "verify.py"))["verify_webhook"]
    _check(lambda cases: [verify(s, h, b) for s, h, b, _ in cases])


def _external(cmd: list[str], cases: list[Case]) -> list[bool]:
    payload = json.dumps([[s, h, b.decode("latin-1")] for s, h, b, _ in cases])
    done = subprocess.run(cmd, input=payload, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: list[bool] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_snippet() -> None:
    script = (
        f"const {{ verifyWebhook }} = require({json.dumps(str(VERIFY / 'verify.js'))});"
        "let input = ''; process.stdin.on('data', (c) => (input += c));"
        "process.stdin.on('end', () => { const cases = JSON.parse(input);"
        "console.log(JSON.stringify(cases.map(([s, h, b]) =>"
        " verifyWebhook(s, h, Buffer.from(b, 'latin1'))))); });"
    )
    _check(lambda cases: _external(["node", "-e", script], cases))


@pytest.mark.skipif(shutil.which("php") is None, reason="php is not installed")
def test_php_snippet() -> None:
    script = (
        f"require {json.dumps(str(VERIFY / 'verify.php'))};"
        "$cases = json_decode(stream_get_contents(STDIN), true); $out = [];"
        "foreach ($cases as [$s, $h, $b]) { $out[] = verify_webhook($s, $h, mb_convert_encoding("
        "$b, 'ISO-8859-1', 'UTF-8')); } echo json_encode($out);"
    )
    _check(lambda cases: _external(["php", "-r", script], cases))
