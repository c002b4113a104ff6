"""Session fixtures for infrastructure the suite shares with the dev stack: OpenBao.

`vault_dev` is the address and root token of a running OpenBao dev server: this checkout's,
the one `scripts/dev/infra.sh` runs (address in `.dev/vault-addr`, root token in
`.dev/vault-root-token`), started through that script when it does not answer. Another
checkout's server on 8200 is never borrowed: infra.sh gives this checkout's its own port.
`PM_TEST_VAULT_ADDR` and `PM_TEST_VAULT_TOKEN` point the suite at another server instead.
Imported by `tests/conftest.py`.
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
ADDR_FILE = REPO / ".dev" / "vault-addr"


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
    if "PM_TEST_VAULT_ADDR" in os.environ:
        addr = os.environ["PM_TEST_VAULT_ADDR"].rstrip("/")
        if not _answers(addr):
            pytest.fail(f"OpenBao at PM_TEST_VAULT_ADDR={addr} does not answer")
    else:
        # infra.sh checks that the server answers *and* takes this checkout's token, and
        # starts this checkout's own (on a free port when 8200 is taken) when it does not.
        started = subprocess.run(
            ["bash", str(INFRA_SH), "start-vault"],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        addr = ADDR_FILE.read_text().strip().rstrip("/") if ADDR_FILE.is_file() else ""
        if started.returncode != 0 or not addr or not _answers(addr):
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
