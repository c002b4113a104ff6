"""`verify_webhook` with the stripe library against signatures made as Stripe makes them."""

from __future__ import annotations

import json
import time

import pytest

from services.billing.stripe_api import verify_webhook
from tests.fakes.stripe import decode_form, sign_payload

LIVE, TEST = "whsec_live_secret", "whsec_test_secret"
SECRETS = [("live", LIVE), ("test", TEST)]
PAYLOAD = json.dumps(
    {"id": "evt_1", "object": "event", "type": "invoice.paid", "created": 1, "data": {"object": {}}}
).encode()


def test_valid_signature_names_the_mode_of_the_secret() -> None:
    live = verify_webhook(PAYLOAD, sign_payload(PAYLOAD, LIVE), SECRETS, 300)  # type: ignore[arg-type]
    test = verify_webhook(PAYLOAD, sign_payload(PAYLOAD, TEST), SECRETS, 300)  # type: ignore[arg-type]
    assert live is not None and live[0] == "live" and live[1]["id"] == "evt_1"
    assert test is not None and test[0] == "test"


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "t=1,v1=deadbeef",
        sign_payload(PAYLOAD, "whsec_other"),
        sign_payload(PAYLOAD, LIVE, int(time.time()) - 301),
        sign_payload(PAYLOAD + b" ", LIVE),
    ],
)
def test_bad_or_stale_signatures_are_refused(signature: str | None) -> None:
    assert verify_webhook(PAYLOAD, signature, SECRETS, 300) is None  # type: ignore[arg-type]


def test_signed_garbage_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        verify_webhook(b"not json", sign_payload(b"not json", LIVE), SECRETS, 300)  # type: ignore[arg-type]


def test_fake_decodes_stripe_bracket_notation() -> None:
    pairs = [
        ("mode", "subscription"),
        ("line_items[0][price]", "price_pro"),
        ("line_items[0][quantity]", "1"),
        ("metadata[tenant_id]", "t1"),
        ("subscription_data[metadata][plan_id]", "pro"),
        ("types[0]", "a"),
        ("types[1]", "b"),
    ]
    assert decode_form(pairs) == {
        "mode": "subscription",
        "line_items": [{"price": "price_pro", "quantity": "1"}],
        "metadata": {"tenant_id": "t1"},
        "subscription_data": {"metadata": {"plan_id": "pro"}},
        "types": ["a", "b"],
    }
