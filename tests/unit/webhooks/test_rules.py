"""Pure rules of the webhooks service: signatures, SSRF address checks, retries, matching."""

from __future__ import annotations

import base64
import ipaddress
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from libs.common.http import ERROR_CODES
from services.webhooks import api as _api  # noqa: F401  (registers the service's error codes)
from services.webhooks.address_guard import (
    UrlRefused,
    address_allowed,
    check_url_syntax,
    parse_networks,
)
from services.webhooks.attempt_queue import DELAY_TIERS_MS, AttemptJob, tier_for
from services.webhooks.payloads import sample_data, webhook_body
from services.webhooks.service import (
    WEBHOOK_EVENT_TYPES,
    RetryPolicy,
    delivery_id_for,
    endpoint_matches,
    health_of,
    invalid_event_patterns,
)
from services.webhooks.signatures import (
    SECRET_JSON_SCHEMA,
    InvalidSecret,
    generate_secret,
    legacy_signature,
    secret_key,
    signature_headers,
)
from services.webhooks.transport import parse_retry_after

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"


def test_signatures_verify_with_the_reference_library_and_the_seed_scheme() -> None:
    secret = generate_secret()
    body = b'{"id":"msg_1","type":"email.opened"}'
    headers = signature_headers([secret], "msg_1", int(datetime.now(UTC).timestamp()), body)
    assert Webhook(secret).verify(body, headers)["id"] == "msg_1"
    import hashlib
    import hmac

    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-PenguinMails-Signature"] == f"sha256={expected}"
    with pytest.raises(Exception, match="signature"):
        Webhook(generate_secret()).verify(body, headers)
    tampered = body.replace(b"opened", b"clicked")
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(tampered, headers)


def test_rotation_signs_with_both_secrets() -> None:
    old, new = generate_secret(), generate_secret()
    body = b"{}"
    headers = signature_headers([new, old], "msg_2", int(datetime.now(UTC).timestamp()), body)
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)
    assert headers["X-PenguinMails-Signature"].split(" ") == [
        legacy_signature(new, body),
        legacy_signature(old, body),
    ]


def test_a_raw_secret_keys_both_headers_with_its_utf8_bytes() -> None:
    import base64
    import hashlib
    import hmac

    secret = "your-webhook-secret"
    body = '{"id":"msg_3","data":{"to":"é"}}'.encode()
    ts = int(datetime.now(UTC).timestamp())
    headers = signature_headers([secret], "msg_3", ts, body)
    assert secret_key(secret) == secret.encode()
    standard = hmac.new(secret.encode(), f"msg_3.{ts}.".encode() + body, hashlib.sha256)
    assert headers["webhook-signature"] == "v1," + base64.b64encode(standard.digest()).decode()
    legacy = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-PenguinMails-Signature"] == f"sha256={legacy}"
    # The reference library takes a raw key as bytes.
    assert Webhook(secret.encode()).verify(body, headers)["id"] == "msg_3"
    with pytest.raises(Exception, match="signature"):
        Webhook(b"another-secret-of-16+").verify(body, headers)


@pytest.mark.parametrize(
    "bad",
    [
        "plain",
        "x" * 15,
        "x" * 129,
        "sixteen chars\n ok",
        " leading-space-secret",
        "trailing-nbsp-secret\u00a0",
        "\u3000ideographic-space-first",
        "a-secret-with-a-\u0085-next-line",
        "whsec_!!!",
        "whsec_" + "QUJD",
        "whsec_",
        "whsec_not base64 at all!",
    ],
)
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSecret):
        secret_key(bad)


@pytest.mark.parametrize(
    "good",
    [
        "x" * 16,
        "y" * 128,
        "your-webhook-secret",
        "clé-secrète-à-moi",
        "inner spaces are fine",
        "zero\u200bwidth-inside-is-fine",
        "whsec-is-no-prefix-here",
    ],
)
def test_printable_secrets_of_16_to_128_characters_are_keys(good: str) -> None:
    assert secret_key(good) == good.encode()


_SPEC_SECRET = jsonschema_rs.validator_for(SECRET_JSON_SCHEMA)


def _code_accepts(secret: str) -> bool:
    try:
        secret_key(secret)
    except InvalidSecret:
        return False
    return True


@settings(max_examples=400)
@given(
    st.one_of(
        st.text(min_size=14, max_size=130),
        st.text(min_size=30, max_size=100).map(lambda t: "whsec_" + t),
        st.binary(min_size=20, max_size=70).map(lambda b: "whsec_" + base64.b64encode(b).decode()),
        st.from_regex(str(SECRET_JSON_SCHEMA["pattern"]), fullmatch=True),
    )
)
def test_the_spec_pattern_and_the_code_agree_on_every_secret(secret: str) -> None:
    """What the OpenAPI spec states is exactly what the service accepts (the contract fuzz
    sends schema-valid secrets and expects them taken)."""
    assert _SPEC_SECRET.is_valid(secret) == _code_accepts(secret)


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::a00:1", False),
        ("2002:0a00:0001::", False),
    ],
)
def test_address_allowed(ip: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(ip), []) is allowed


def test_allowed_networks_open_only_what_they_list() -> None:
    nets = parse_networks(["127.0.0.0/8"])
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), nets)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), nets)
    assert not address_allowed(ipaddress.ip_address("10.0.0.1"), nets)
    assert not address_allowed(ipaddress.ip_address("::1"), nets)


@pytest.mark.parametrize(
    "url", ["ftp://x.test/", "https://user:pw@x.test/", "https:///nohost", "http://x.test/"]
)
def test_url_syntax_refusals(url: str) -> None:
    with pytest.raises(UrlRefused):
        check_url_syntax(url, allow_http=False)


def test_retry_policy_follows_schedule_then_stops() -> None:
    policy = RetryPolicy((1, 2, 4, 8, 16), jitter=0)
    assert [policy.next_delay(n, None) for n in range(1, 7)] == [1, 2, 4, 8, 16, None]


def test_jitter_only_lengthens_and_retry_after_wins_up_to_its_cap() -> None:
    policy = RetryPolicy((1,), jitter=0.2, max_retry_after=60)
    delays = [policy.next_delay(1, None) for _ in range(200)]
    assert all(1 <= d <= 1.2 for d in delays if d is not None) and len(set(delays)) > 1
    assert policy.next_delay(1, 30) == 30
    assert policy.next_delay(1, 10_000) == 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_delay_tiers_never_overshoot() -> None:
    assert tier_for(10) is None
    for remaining in (60, 99, 100, 999, 1000, 1234, 16_500, 10_000_000):
        tier = tier_for(remaining)
        assert tier is not None and tier <= remaining
        assert tier == max(t for t in DELAY_TIERS_MS if t <= remaining)
    job = AttemptJob("msg_1", "ep_1", 3, 1_700_000_000_000)
    assert AttemptJob.from_bytes(job.to_bytes()) == job


def test_event_patterns_and_matching() -> None:
    assert invalid_event_patterns(["email.*", "*", "contact.created"]) == []
    assert invalid_event_patterns(["api_key.*", "email.nope", "tenant.*", "webhook.*"]) == [
        "api_key.*",
        "email.nope",
        "tenant.*",
    ]
    assert "email.requested" not in WEBHOOK_EVENT_TYPES  # internal events are never sent
    ep = {"event_types": ["email.*"], "filter_campaign_ids": ["c1"], "filter_contact_tags": []}
    assert endpoint_matches(ep, "email.opened", {"campaign_id": "c1"})
    assert not endpoint_matches(ep, "email.opened", {"campaign_id": "c2"})
    assert not endpoint_matches(ep, "campaign.started", {"campaign_id": "c1"})
    tagged = {"event_types": ["*"], "filter_campaign_ids": [], "filter_contact_tags": ["vip"]}
    assert endpoint_matches(tagged, "contact.created", {"contact_tags": ["vip", "x"]})
    assert not endpoint_matches(tagged, "contact.created", {"contact_tags": ["x"]})
    assert not endpoint_matches(tagged, "email.requested", {"contact_tags": ["vip"]})


def test_delivery_ids_are_stable_per_endpoint_and_event() -> None:
    event = uuid.uuid4()
    assert delivery_id_for("ep_1", event) == delivery_id_for("ep_1", event)
    assert delivery_id_for("ep_1", event) != delivery_id_for("ep_2", event)
    body = webhook_body("msg_1", "email.opened", datetime(2025, 12, 1, 9, 15, 30, tzinfo=UTC), {})
    assert (
        body
        == '{"id":"msg_1","type":"email.opened","created":"2025-12-01T09:15:30.000Z","data":{}}'
    )


@pytest.mark.parametrize("event_type", WEBHOOK_EVENT_TYPES)
def test_every_webhook_type_has_a_valid_sample(event_type: str) -> None:
    assert sample_data(event_type)


def test_health() -> None:
    assert health_of(True, None, 0, 0, None, 0) == "healthy"
    assert health_of(True, None, 100, 100, 120.0, 0) == "healthy"
    assert health_of(True, None, 100, 90, 120.0, 0) == "degraded"
    assert health_of(True, None, 100, 100, 20_000.0, 0) == "degraded"
    assert health_of(True, None, 100, 30, 120.0, 0) == "failing"
    assert health_of(False, "the endpoint answered 410 Gone", 1, 0, None, 1) == "failing"


def test_webhooks_error_codes_are_documented() -> None:
    text = DOCS.read_text()
    for code in (
        "webhook_url_refused",
        "webhook_endpoint_disabled",
        "webhook_delivery_in_progress",
    ):
        status = ERROR_CODES[code][0]
        assert f"| `{code}` | {status} |" in text
