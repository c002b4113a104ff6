"""`vault:` settings resolve from the real OpenBao server; a missing one stops start-up."""

from __future__ import annotations

import hvac
import pytest

from libs.common.settings import ServiceSettings, SettingsError
from libs.common.vault import Vault, VaultRef, make_client
from tests.fixtures_infra import VaultDev


@pytest.fixture
def vault_env(vault_dev: VaultDev, monkeypatch: pytest.MonkeyPatch) -> hvac.Client:
    monkeypatch.setenv("PM_VAULT_ADDR", vault_dev.addr)
    monkeypatch.setenv("PM_VAULT_TOKEN", vault_dev.token)
    return make_client(vault_dev.addr, token=vault_dev.token)


def test_vault_reference_resolves_at_start_up(
    vault_env: hvac.Client, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    vault_env.secrets.kv.v2.create_or_update_secret(
        path=f"tests/{unique}/db",
        secret={"url": "postgresql://u@h/db", "value": "plain"},
        mount_point="secret",
    )
    monkeypatch.setenv("PM_DATABASE_URL", f"vault:secret/tests/{unique}/db#url")
    monkeypatch.setenv("PM_REDIS_URL", f"vault:secret/tests/{unique}/db")  # field defaults to value
    settings = ServiceSettings()
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.redis_url == "plain"


def test_missing_vault_path_fails_start_up_naming_it(
    vault_env: hvac.Client, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    monkeypatch.setenv("PM_DATABASE_URL", f"vault:secret/tests/{unique}/absent#url")
    with pytest.raises(SettingsError) as err:
        ServiceSettings()
    assert f"secret/tests/{unique}/absent" in str(err.value)
    assert "PM_DATABASE_URL" in str(err.value)


def test_missing_field_fails_naming_it(
    vault_env: hvac.Client, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    vault_env.secrets.kv.v2.create_or_update_secret(
        path=f"tests/{unique}/x", secret={"a": "1"}, mount_point="secret"
    )
    monkeypatch.setenv("PM_AMQP_URL", f"vault:secret/tests/{unique}/x#nope")
    with pytest.raises(SettingsError, match="field 'nope' not found"):
        ServiceSettings()


def test_malformed_reference_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_AMQP_URL", "vault:nomountpath")
    with pytest.raises(SettingsError, match="needs <mount>/<path>"):
        ServiceSettings()
    assert VaultRef.parse("vault:secret/a/b#c") == VaultRef("secret", "a/b", "c")


async def test_async_facade_round_trip(vault_dev: VaultDev, unique: str) -> None:
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    path = f"tests/{unique}/facade"
    assert await vault.read(path) is None
    await vault.write(path, {"k": "v"})
    assert await vault.read(path) == {"k": "v"}
    await vault.delete(path)
    assert await vault.read(path) is None
    assert await vault.is_ready()


async def test_approle_client_logs_in_again_when_its_token_expires(
    vault_dev: VaultDev, unique: str
) -> None:
    import asyncio

    root = make_client(vault_dev.addr, token=vault_dev.token)
    if "approle/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy(
        f"test-relogin-{unique}",
        f'path "secret/data/tests/{unique}/*" {{ capabilities = ["create", "read", "update"] }}',
    )
    role = f"test-relogin-{unique}"
    root.auth.approle.create_or_update_approle(
        role, token_policies=[role], token_ttl="1s", token_max_ttl="1s"
    )
    role_id = root.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role)["data"]["secret_id"]

    vault = Vault.connect(vault_dev.addr, role_id=role_id, secret_id=secret_id)
    await vault.write(f"tests/{unique}/a", {"v": "1"})
    await asyncio.sleep(2.0)  # the first token is past its max TTL now
    assert await vault.read(f"tests/{unique}/a") == {"v": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        await vault.read(f"tests/other-{unique}")  # policy still applies after re-login
