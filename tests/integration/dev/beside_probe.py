"""Run by test_beside_another_checkout.py in a test session of its own (not collected by
default: the file name does not start with `test_`). It does what a `make test` session does
with the suite's fixtures: this checkout's OpenBao (`vault_dev`), its own database and vhost,
real keys processes and gateways (`platform`), a tenant and a key used through the gateway;
then it writes what it picked to $PM_PROBE_OUT for the outer test to check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.integration.keys.platform_stack import (
    Platform,
    bearer,
    create_key,
    signup,
)
from tests.integration.keys.platform_stack import keys_vault as keys_vault
from tests.integration.keys.platform_stack import platform as platform


async def test_the_session_uses_its_own_checkouts_infrastructure(
    platform: Platform, vault_dev: Any, test_database: str, keys_vault: dict[str, str], unique: str
) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        owner = await signup(client, platform.gw, unique)
        key = await create_key(client, platform.gw, owner["access_token"], ["read_analytics"])
        r = await client.get(
            f"{platform.gw}/api/v1/platform/api-keys", headers=bearer(owner["access_token"])
        )
        assert r.status_code == 200, r.text
        assert key["id"] in r.text
    Path(os.environ["PM_PROBE_OUT"]).write_text(
        json.dumps(
            {
                "vault_addr": vault_dev.addr,
                "keys_vault_addr": keys_vault["PM_VAULT_ADDR"],
                "database": test_database,
                "pid": os.getpid(),
            }
        )
    )
