"""Session fixtures for infrastructure the suite shares with the dev stack: OpenBao.

`vault_dev` is the address and root token of a running OpenBao dev server: the one that
`scripts/dev/infra.sh` runs (root token in `.dev/vault-root-token`), started through that
script when nothing answers. `PM_TEST_VAULT_ADDR` and `PM_TEST_VAULT_TOKEN` point the suite
at another server instead. Imported by `tests/conftest.py`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

__all__ = ["VaultDev", "vault_dev"]

REPO = Path(__file__).resolve().parents[1]
INFRA_SH = REPO / "scripts" / "dev" / "infra.sh"
TOKEN_FILE = REPO / ".dev" / "vault-root-token"


class VaultDev(NamedTuple):
    """A reachable OpenBao dev server: `addr, token = vault_dev` or `.addr` / `.token`."""

    addr: str
    token: str


def _answers(addr: str) -> bool:
    try:
        return httpx.get(f"{addr}/v1/sys/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def vault_dev() -> VaultDev:
    addr = os.environ.get("PM_TEST_VAULT_ADDR", "http://127.0.0.1:8200").rstrip("/")
    if not _answers(addr):
        if "PM_TEST_VAULT_ADDR" in os.environ:
            pytest.fail(f"OpenBao at PM_TEST_VAULT_ADDR={addr} does not answer")
        started = subprocess.run(
            ["bash", str(INFRA_SH), "start-vault"],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if started.returncode != 0 or not _answers(addr):
            pytest.fail(
                f"could not start the OpenBao dev server:\n{started.stdout}{started.stderr}"
            )
    token = os.environ.get("PM_TEST_VAULT_TOKEN")
    if not token:
        if not TOKEN_FILE.is_file():
            pytest.fail(
                f"OpenBao answers on {addr} but {TOKEN_FILE} is missing (not started by "
                "scripts/dev/infra.sh?): set PM_TEST_VAULT_TOKEN"
            )
        token = TOKEN_FILE.read_text().strip()
    lookup = httpx.get(
        f"{addr}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=5.0
    )
    if lookup.status_code != 200:
        pytest.fail(f"OpenBao at {addr} rejects the root token ({lookup.status_code})")
    return VaultDev(addr, token)
