"""Whose data a query may see: one tenant, in live or test mode.

Every service's repository takes a `TenantScope` and filters on both fields; the API builds
it from the verified principal (`TenantScope.of(principal)`), a consumer from the event's
envelope (`TenantScope.of(event)`). Test-mode data (made with a `pm_test_` key) and live data
of one tenant never see each other.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

Mode = Literal["live", "test"]


class _Scoped(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def mode(self) -> Mode: ...


class TenantScope(NamedTuple):
    tenant_id: str
    mode: Mode

    @classmethod
    def of(cls, source: _Scoped) -> TenantScope:
        """The scope of a principal, an event envelope or a row with both fields."""
        return cls(source.tenant_id, source.mode)
