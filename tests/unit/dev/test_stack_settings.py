"""What `make up` hands its processes: dev-only webhook settings (production defaults stay
strict), overrides from `.dev/overrides.env` and the caller's environment, and a supervisord
configuration that carries JSON values intact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from supervisor.datatypes import dict_of_key_value_pairs

from scripts.dev import stack
from services.webhooks.address_guard import UrlRefused, parse_networks, resolve_url
from services.webhooks.settings import WebhooksSettings


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> WebhooksSettings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return WebhooksSettings()


def _check(url: str, settings: WebhooksSettings) -> None:
    asyncio.run(
        resolve_url(
            url,
            allow_http=settings.webhooks_allow_http,
            allowed=parse_networks(settings.webhooks_allowed_networks),
        )
    )


def test_dev_stack_allows_http_and_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _settings(stack.dev_settings("webhooks"), monkeypatch)
    for url in ("http://127.0.0.1:9000/hook", "http://127.8.9.10/h", "http://[::1]:8080/h"):
        _check(url, dev)
    for url in (
        "http://10.0.0.1/h",
        "http://192.168.1.20/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/h",
        "http://[fd00::1]/h",
        "http://100.64.0.1/h",
    ):
        with pytest.raises(UrlRefused, match="PM_WEBHOOKS_ALLOWED_NETWORKS"):
            _check(url, dev)


def test_production_defaults_refuse_http_and_loopback_naming_the_setting() -> None:
    prod = WebhooksSettings()
    assert prod.webhooks_allow_http is False
    assert prod.webhooks_allowed_networks == []
    with pytest.raises(UrlRefused, match="PM_WEBHOOKS_ALLOW_HTTP"):
        _check("http://127.0.0.1:9000/hook", prod)
    with pytest.raises(UrlRefused, match="PM_WEBHOOKS_ALLOWED_NETWORKS"):
        _check("https://127.0.0.1:9000/hook", prod)


def test_overrides_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "overrides.env"
    path.write_text(
        "# local tweaks\n"
        "export PM_LOG_LEVEL=DEBUG\n"
        "PM_WEBHOOKS_RETRY_SCHEDULE='[1, 1]'\n"
        "PM_CONSUMER_PREFETCH=4\n"
        "PM_DATABASE_URL=postgresql://postgres@127.0.0.1/pm\n"
        "PM_REDIS_URL=redis://127.0.0.1:6379/0\n"
    )
    environ = {
        "PM_CONSUMER_PREFETCH": "8",
        "PM_WEBHOOKS_ALLOW_HTTP": "false",
        "PM_VAULT_ROOT_TOKEN": "root",
        "PM_TEST_VAULT_TOKEN": "root",
        "PM_ADMIN_DATABASE_URL": "postgresql://postgres@127.0.0.1/postgres",
        "HOME": "/home/x",
    }
    overrides, refused = stack.read_overrides(path, environ)
    assert overrides == {
        "PM_LOG_LEVEL": "DEBUG",
        "PM_WEBHOOKS_RETRY_SCHEDULE": "[1, 1]",
        "PM_CONSUMER_PREFETCH": "8",
        "PM_WEBHOOKS_ALLOW_HTTP": "false",
    }
    assert refused == ["PM_DATABASE_URL", "PM_REDIS_URL"]


def test_overrides_file_rejects_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "overrides.env"
    path.write_text("DATABASE_URL=x\n")
    with pytest.raises(stack.StackError, match=r"overrides\.env:1"):
        stack.read_overrides(path, {})


def test_an_override_beats_the_dev_setting_but_not_the_stack_credentials() -> None:
    infra = stack.Infra(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "pm",
        "amqp://guest:guest@127.0.0.1:5672/",
        "redis://127.0.0.1:6379/0",
        "http://127.0.0.1:8200",
        "root",
    )
    prov = stack.Provisioned(
        db_passwords={"webhooks": "pw"}, approles={"webhooks": ("role", "secret")}
    )
    env = stack.process_env(infra, prov, "webhooks", "api", {"PM_WEBHOOKS_ALLOW_HTTP": "false"})
    assert env["PM_WEBHOOKS_ALLOW_HTTP"] == "false"
    assert env["PM_WEBHOOKS_ALLOWED_NETWORKS"] == '["127.0.0.0/8", "::1/128"]'
    assert env["PM_VAULT_ROLE_ID"] == "role"
    assert env["PM_HTTP_PORT"] == str(stack.port_of("webhooks", "api"))


def test_supervisord_reads_back_json_values() -> None:
    env = {
        "PM_WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]',
        "PM_DEFAULT_ROUTES": '{"transactional": ["smtp"], "marketing": ["smtp"]}',
        "PM_LOG_LEVEL": "INFO",
        "PM_PCT": "100%",
    }
    rendered = stack._sv_env(env).replace("%%", "%")
    assert dict_of_key_value_pairs(rendered) == env
