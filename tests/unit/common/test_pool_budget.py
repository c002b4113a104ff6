"""Every pool size comes from the connection budget (libs.common.db.POOL_BUDGET): each
process kind the services run has its row, and the dev stack's worst case leaves a default
Postgres (max_connections 100) room for a `make test` session beside it."""

from __future__ import annotations

import importlib

import pytest

from libs.common.db import POOL_BUDGET, pool_budget
from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES, ServiceSettings

# docs/operations.md "Connection budget": 100 - 3 reserved for superusers = 97; the dev
# stack may use at most this many, the rest (about 30 at a test session's peak) is the test
# session's.
DEV_STACK_SHARE = 67


def _processes() -> list[tuple[str, str]]:
    out = []
    for svc in SERVICE_NAMES:
        main = importlib.import_module(f"services.{svc}.__main__")
        out += [(svc, name) for name in main.PROCESSES]
    return out


def test_every_process_kind_has_its_own_row() -> None:
    kinds = {proc for _, proc in _processes()}
    assert kinds <= set(POOL_BUDGET), f"no budget row for {kinds - set(POOL_BUDGET)}"


def test_the_dev_stack_fits_its_share_of_a_default_postgres() -> None:
    # A relay's LISTEN session is inside its pool row (no pooler in the dev stack).
    from scripts.dev.stack import dev_settings

    def max_size(svc: str, proc: str) -> int:
        override = dev_settings(svc, proc).get("PM_DB_POOL_MAX")  # the stack's own cap
        return int(override) if override else pool_budget(proc).max_size

    worst = sum(max_size(svc, proc) for svc, proc in _processes() if svc in SCHEMA_SERVICES)
    assert worst <= DEV_STACK_SHARE, worst


def test_settings_take_their_kinds_row_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings()
    assert settings.pool_budget() == POOL_BUDGET["command"]
    settings.process_kind = "relay"
    assert settings.pool_budget() == POOL_BUDGET["relay"]
    monkeypatch.setenv("PM_DB_POOL_MAX", "12")
    overridden = ServiceSettings()
    overridden.process_kind = "api"
    assert overridden.pool_budget().max_size == 12
    assert overridden.pool_budget().min_size == POOL_BUDGET["api"].min_size
