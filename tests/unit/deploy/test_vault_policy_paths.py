"""Delivery's Vault policy names each ESP credential path: a glob over
`penguinmails/api-keys/` would also grant billing's live Stripe key (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

from services.delivery.connectors.registry import PROVIDERS

POLICY = Path(__file__).resolve().parents[3] / "deploy" / "vault" / "policies" / "delivery.hcl"


def test_delivery_reads_exactly_its_providers_credentials() -> None:
    paths = re.findall(r'path "secret/data/penguinmails/api-keys/([^"]+)"', POLICY.read_text())
    assert sorted(paths) == sorted(p for p in PROVIDERS if p != "sandbox")
    assert not any("*" in p or "+" in p for p in paths)
