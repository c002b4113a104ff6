"""The endpoints API through the service app, with principals signed as the gateway does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from libs.common.vault import Vault, make_client
from services.webhooks.secret_store import secret_path
from tests.fakes.webhook_receiver import WebhookReceiver

BASE = "/api/v1/webhooks"


async def test_crud_is_tenant_scoped_and_secret_lives_only_in_vault(
    api, unique, wh_pool, vault_dev
) -> None:
    h = api.as_tenant(unique)
    created = await api.create(
        unique,
        url="http://127.0.0.1:9/hooks",
        description="crm",
        events=["email.opened", "contact.*"],
        filters={"campaign_ids": ["cmp_1"], "contact_tags": ["vip"]},
        retry_schedule=[1, 5],
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    ep_id = created["id"]
    got = (await api.client.get(f"{BASE}/{ep_id}", headers=h)).json()["data"]
    assert "secret" not in got and got["events"] == ["email.opened", "contact.*"]
    assert got["filters"] == {"campaign_ids": ["cmp_1"], "contact_tags": ["vip"]}
    assert got["retry_schedule"] == [1.0, 5.0]
    # The secret is in Vault, nowhere in Postgres.
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    stored = await vault.read(secret_path(ep_id))
    assert stored is not None and stored["current"] == secret
    row = await wh_pool.fetchrow("SELECT * FROM endpoints WHERE id = $1", ep_id)
    assert secret not in str(dict(row))

    other = api.as_tenant(f"{unique}-other")
    assert (await api.client.get(f"{BASE}/{ep_id}", headers=other)).status_code == 404
    assert (
        await api.client.put(f"{BASE}/{ep_id}", json={"enabled": False}, headers=other)
    ).status_code == 404
    assert (await api.client.delete(f"{BASE}/{ep_id}", headers=other)).status_code == 404
    assert (await api.client.get(f"{BASE}/{ep_id}/deliveries", headers=other)).status_code == 404
    assert (await api.client.get(BASE, headers=other)).json()["data"] == []
    # Test-mode keys see their own sandbox endpoints only.
    test_mode = api.as_tenant(unique, mode="test")
    assert (await api.client.get(f"{BASE}/{ep_id}", headers=test_mode)).status_code == 404

    r = await api.client.put(
        f"{BASE}/{ep_id}", json={"description": "new", "events": ["*"]}, headers=h
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["description"] == "new"
    assert r.json()["data"]["filters"]["campaign_ids"] == ["cmp_1"]  # omitted: kept

    assert (await api.client.delete(f"{BASE}/{ep_id}", headers=h)).status_code == 200
    assert (await api.client.get(f"{BASE}/{ep_id}", headers=h)).status_code == 404
    assert await vault.read(secret_path(ep_id)) is None


async def test_list_paginates_with_a_cursor(api, unique) -> None:
    h = api.as_tenant(unique)
    ids = [
        (await api.create(unique, url=f"http://127.0.0.1:9/{i}", events=["email.*"]))["id"]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await api.client.get(BASE, params=params, headers=h)).json()
        seen += [e["id"] for e in body["data"]]
        page = body["meta"]["pagination"]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))
    bad = await api.client.get(BASE, params={"cursor": "garbage!"}, headers=h)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


async def test_list_sorts_filters_and_offsets(api, unique) -> None:
    h = api.as_tenant(unique)
    ids = [
        (await api.create(unique, url=f"http://127.0.0.1:9/o{i}", events=["email.*"]))["id"]
        for i in range(3)
    ]
    await api.client.put(f"{BASE}/{ids[1]}", json={"enabled": False}, headers=h)
    body = (await api.client.get(BASE, params={"order": "asc"}, headers=h)).json()
    assert [e["id"] for e in body["data"]] == ids
    body = (await api.client.get(BASE, params={"limit": 1, "offset": 2}, headers=h)).json()
    assert [e["id"] for e in body["data"]] == [ids[0]]
    assert body["meta"]["pagination"]["offset"] == 2
    body = (await api.client.get(BASE, params={"enabled": "false"}, headers=h)).json()
    assert [e["id"] for e in body["data"]] == [ids[1]]
    body = (await api.client.get(BASE, params={"url": "http://127.0.0.1:9/o2"}, headers=h)).json()
    assert [e["id"] for e in body["data"]] == [ids[2]]
    for params, field in (({"sort_by": "url"}, "query.sort_by"), ({"active": "1"}, "query.active")):
        r = await api.client.get(BASE, params=params, headers=h)
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == field
    r = await api.client.get(f"{BASE}/{ids[0]}/deliveries", params={"sort_by": "status"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "query.sort_by"


_LOCAL = "http://127.0.0.1:9/x"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"url": _LOCAL, "events": ["email.nonsense"]}, "validation_error", "body.events"),
        ({"url": _LOCAL, "events": ["api_key.*"]}, "validation_error", "body.events"),
        ({"url": _LOCAL, "events": []}, "validation_error", "body.events"),
        ({"url": "ftp://example.com/x", "events": ["*"]}, "webhook_url_refused", "body.url"),
        ({"url": _LOCAL, "events": ["*"], "secret": "plain"}, "validation_error", "body.secret"),
        (
            {"url": _LOCAL, "events": ["*"], "secret": "whsec_not base64!!"},
            "validation_error",
            "body.secret",
        ),
        (
            {"url": _LOCAL, "events": ["*"], "retry_schedule": [0]},
            "validation_error",
            "body.retry_schedule.0",
        ),
        ({"url": _LOCAL, "events": ["*"], "surprise": 1}, "validation_error", "body.surprise"),
    ],
)
async def test_bad_input_gets_the_error_envelope(api, unique, body, code, field) -> None:
    r = await api.client.post(BASE, json=body, headers=api.as_tenant(unique))
    err = r.json()["error"]
    assert (r.status_code, err["code"]) == (422, code), r.text
    assert field in {d["field"] for d in err["details"]}


async def test_broken_json_and_auth_and_scope(api, unique) -> None:
    r = await api.client.post(
        BASE,
        content=b"{nope",
        headers={**api.as_tenant(unique), "content-type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json")
    r = await api.client.get(BASE)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "principal_missing")
    r = await api.client.get(BASE, headers={"X-PM-Principal": "forged.token.here"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "principal_invalid")
    r = await api.client.get(BASE, headers=api.as_tenant(unique, scopes=("send_email",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "http://localhost:8080/hook",
        "https://192.168.0.10/hook",
    ],
)
async def test_ssrf_guard_refuses_non_public_addresses(
    make_api, base_settings, unique, url
) -> None:
    strict = await make_api(base_settings.model_copy(update={"webhooks_allowed_networks": []}))
    r = await strict.client.post(
        BASE, json={"url": url, "events": ["*"]}, headers=strict.as_tenant(unique)
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "webhook_url_refused"), r.text


async def test_http_refused_unless_configured(make_api, base_settings, unique) -> None:
    https_only = await make_api(base_settings.model_copy(update={"webhooks_allow_http": False}))
    r = await https_only.client.post(
        BASE,
        json={"url": "http://127.0.0.1:9/x", "events": ["*"]},
        headers=https_only.as_tenant(unique),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "webhook_url_refused")


async def test_test_send_rotation_and_stats(api, unique) -> None:
    h = api.as_tenant(unique)
    with WebhookReceiver() as rx:
        ep = await api.create(unique, url=rx.url, events=["email.*"])
        old = ep["secret"]
        r = await api.client.post(
            f"{BASE}/{ep['id']}/test", json={"event_type": "email.clicked"}, headers=h
        )
        assert r.status_code == 200, r.text
        result = r.json()["data"]
        assert result["attempt"]["succeeded"] is True and result["attempt"]["status_code"] == 200
        (first,) = rx.snapshot()
        assert Webhook(old).verify(first.body, first.headers)["type"] == "email.clicked"

        rotated = await api.client.post(f"{BASE}/{ep['id']}/rotate-secret", headers=h)
        new = rotated.json()["data"]["secret"]
        assert new != old and new.startswith("whsec_")
        await api.client.post(f"{BASE}/{ep['id']}/test", headers=h)
        second = rx.snapshot()[1]
        # Both secrets verify during the overlap: receivers switch at their own pace.
        Webhook(new).verify(second.body, second.headers)
        Webhook(old).verify(second.body, second.headers)
        assert len(second.headers["webhook-signature"].split(" ")) == 2

        bad = await api.client.post(
            f"{BASE}/{ep['id']}/test", json={"event_type": "api_key.revoked"}, headers=h
        )
        assert bad.status_code == 422

        stats = (await api.client.get(f"{BASE}/{ep['id']}/stats", headers=h)).json()["data"]
        assert stats["24h"]["attempts"] == 2 and stats["24h"]["success_rate"] == 1.0
        assert stats["health"] == "healthy"
        log = (await api.client.get(f"{BASE}/{ep['id']}/deliveries", headers=h)).json()["data"]
        assert [d["test"] for d in log] == [True, True]


async def test_payload_version_defaults_to_the_newest_and_patch_changes_it(
    api, unique, wh_pool
) -> None:
    h = api.as_tenant(unique)
    ep = await api.create(unique, url="http://127.0.0.1:9/v", events=["email.*"])
    assert ep["payload_version"] == "2026-12-01"
    r = await api.client.patch(
        f"{BASE}/{ep['id']}", json={"payload_version": "2026-11-21"}, headers=h
    )
    assert r.status_code == 200 and r.json()["data"]["payload_version"] == "2026-11-21"
    assert r.json()["data"]["events"] == ["email.*"]  # PATCH keeps what it does not name
    r = await api.client.patch(
        f"{BASE}/{ep['id']}", json={"payload_version": "2020-01-01"}, headers=h
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"].startswith(
        "body.payload_version"
    )
    # A row written before payload versions existed (the migration's default) stays flat.
    await wh_pool.execute(
        "INSERT INTO endpoints (id, tenant_id, mode, url, event_types)"
        " VALUES ($1, $2, 'live', 'http://127.0.0.1:9/o', '{email.*}')",
        f"ep_old_{unique}",
        unique,
    )
    got = await api.client.get(f"{BASE}/ep_old_{unique}", headers=h)
    assert got.json()["data"]["payload_version"] == "2026-11-21"


class _Recorder:
    """Stands in for the pool: keeps the statement the repository would run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []


def _index_conds(plan: Any) -> list[str]:
    node = plan[0]["Plan"] if isinstance(plan, list) else plan
    found = [node.get("Index Cond", "")] if "Scan" in node["Node Type"] else []
    for child in node.get("Plans", []):
        found += _index_conds(child)
    return found


async def test_delivery_log_by_status_walks_an_index_in_custom_and_generic_plans(
    api, unique, wh_pool
) -> None:
    """Issue 21: `?status=` of a status the log lacks read every delivery of the endpoint (a
    seq scan at 1M). Both plans Postgres may pick for the prepared statement must start from
    an index on (endpoint, status)."""
    h = api.as_tenant(unique)
    ep = (await api.create(unique, url="http://127.0.0.1:9/log", events=["email.*"]))["id"]
    async with wh_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload,"
            " status, created_at)"
            " SELECT $1 || '_' || i, $1, $2, gen_random_uuid(),"
            " CASE WHEN i % 2 = 0 THEN 'email.opened' ELSE 'email.sent' END, '{}',"
            " CASE WHEN i % 500 = 0 THEN 'failed' ELSE 'succeeded' END,"
            " now() - interval '1 second' * i FROM generate_series(1, 20000) i",
            ep,
            unique,
        )
        await conn.execute("ANALYZE deliveries")

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get(f"{BASE}/{ep}/deliveries", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["data"]]

    failed = [f"{ep}_{i}" for i in range(500, 20001, 500)]
    assert await ids(status="failed", limit=100) == failed
    assert await ids(status="paused") == []
    assert await ids(status="failed", event_type="email.opened", limit=100) == failed
    assert await ids(status="failed", event_type="email.sent") == []
    page = await ids(status="failed", limit=3, order="asc")
    assert page == failed[::-1][:3]

    from libs.common.pagination import ListParams
    from services.webhooks.repository import list_deliveries

    recorder = _Recorder()
    for status in ("paused", "failed"):
        await list_deliveries(
            recorder,
            ep,
            ListParams(limit=50),
            status=status,
            event_type=None,
            created_after=None,
            created_before=None,
        )
    for n, (sql, args) in enumerate(recorder.calls):
        for mode in ("force_custom_plan", "force_generic_plan"):
            async with wh_pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
                await conn.execute(f"PREPARE log_{n} AS {sql}")
                try:
                    # EXECUTE takes no bind parameters: the values as literals.
                    values = ", ".join(
                        "NULL"
                        if a is None
                        else str(a)
                        if isinstance(a, int)
                        else "'" + str(a).replace("'", "''") + "'"
                        for a in args
                    )
                    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE log_{n}({values})")
                finally:
                    await conn.execute(f"DEALLOCATE log_{n}")
            conds = _index_conds(orjson.loads(plan) if isinstance(plan, str) else plan)
            assert any("status" in c for c in conds), (mode, args, plan)
