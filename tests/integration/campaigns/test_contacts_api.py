"""Contacts over HTTP: auth and scope, CRUD, tenant isolation, events, pagination (both
kinds), filters and sorting over 10,000 contacts, and bulk import with bad rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from libs.common.pagination import encode_cursor
from libs.common.principal import Principal, sign_principal
from libs.common.signing_keys import generate_private_key
from services.campaigns import service
from tests.integration.campaigns.conftest import eventually, principal_headers

URL = "/api/v1/contacts"


async def outbox_events(pool: asyncpg.Pool, tenant: str, event_type: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE tenant_id = $1 AND event_type = $2 ORDER BY created_at",
        tenant,
        event_type,
    )
    return [r["payload"] for r in rows]


async def test_every_route_needs_a_valid_principal_and_the_scope(
    api: httpx.AsyncClient, tenant: str
) -> None:
    r = await api.get(URL)
    assert r.status_code == 401 and r.json()["error"]["code"] == "principal_missing"
    r = await api.get(URL, headers={"X-PM-Principal": "not-a-token"})
    assert r.json()["error"]["code"] == "principal_invalid"
    forged = Principal(
        tenant_id=tenant,
        subject_type="api_key",
        subject_id="k",
        scopes=["manage_contacts"],
        plan="pro",
        mode="live",
    )
    # Same kid as the dev key, another private key: the signature must not verify.
    token = sign_principal(
        forged,
        "dev:" + generate_private_key().split(":", 1)[1],
        60,
        audience="campaigns",
        method="GET",
        path=URL,
    )
    r = await api.get(URL, headers={"X-PM-Principal": token})
    assert r.status_code == 401
    for path, scope in (
        (URL, "manage_contacts"),
        ("/api/v1/templates", "manage_templates"),
        ("/api/v1/campaigns", "manage_campaigns"),
        ("/api/v1/analytics/emails", "read_analytics"),
    ):
        others = [
            s
            for s in ("manage_contacts", "manage_templates", "manage_campaigns", "read_analytics")
            if s != scope
        ]
        r = await api.get(path, headers=principal_headers(tenant, others))
        assert r.status_code == 403, path
        assert r.json()["error"]["code"] == "insufficient_scope"
        assert scope in r.json()["error"]["message"]
        r = await api.get(path, headers=principal_headers(tenant, [scope]))
        assert r.status_code == 200, path


async def test_crud_round_trip_with_events(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    body = {
        "email": "Ada@Example.COM",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company": "Analytical Engines",
        "tags": ["vip", "beta"],
        "custom_fields": {"plan": "pro", "seats": 5},
    }
    r = await api.post(URL, json=body, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    assert (
        created["status"] == "active" and created["email"] == "Ada@example.com"
    )  # domain normalised
    cid = created["id"]

    # Unique per tenant, whatever the case.
    r = await api.post(URL, json={"email": "ada@example.com"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "contact_exists"

    r = await api.get(f"{URL}/{cid}", headers=auth)
    assert r.json()["data"] == created

    r = await api.put(
        f"{URL}/{cid}", json={"company": "Babbage Ltd", "tags": ["vip"]}, headers=auth
    )
    assert r.status_code == 200
    updated = r.json()["data"]
    assert updated["company"] == "Babbage Ltd" and updated["tags"] == ["vip"]
    assert updated["first_name"] == "Ada"  # absent fields unchanged

    r = await api.delete(f"{URL}/{cid}", headers=auth)
    assert r.json()["data"] == {"id": cid, "deleted": True}
    assert (await api.get(f"{URL}/{cid}", headers=auth)).status_code == 404
    assert (await api.delete(f"{URL}/{cid}", headers=auth)).status_code == 404

    created_events = await outbox_events(campaigns_pool, tenant, "contact.created")
    assert [e["data"]["contact_id"] for e in created_events] == [cid]
    assert created_events[0]["data"]["contact_tags"] == ["vip", "beta"]
    updates = await outbox_events(campaigns_pool, tenant, "contact.updated")
    assert updates[0]["data"]["changed"] == ["company", "tags"]
    deleted = await outbox_events(campaigns_pool, tenant, "contact.deleted")
    assert deleted[0]["data"]["email"] == "Ada@example.com"


async def test_bad_input_gets_the_documented_errors(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    cases = [
        ({"email": "not-an-email"}, "body.email"),
        ({"email": "a@x.io", "status": "deleted"}, "body.status"),
        ({"email": "a@x.io", "tags": ["x" * 65]}, "body.tags"),
        ({"email": "a@x.io", "custom_fields": [1]}, "body.custom_fields"),
        ({"email": "a@x.io", "unknown": 1}, "body.unknown"),
        ({}, "body.email"),
    ]
    for body, field in cases:
        r = await api.post(URL, json=body, headers=auth)
        assert r.status_code == 422, body
        err = r.json()["error"]
        assert err["code"] == "validation_error"
        assert any(d["field"] == field for d in err["details"]), (body, err)
    r = await api.post(URL, content=b"{", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await api.get(f"{URL}/not-a-uuid", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.put(f"{URL}/00000000-0000-0000-0000-000000000000", json={}, headers=auth)
    assert r.status_code == 404
    r = await api.get(URL, params={"limit": 0}, headers=auth)
    assert r.status_code == 422
    r = await api.get(URL, params={"sort_by": "password"}, headers=auth)
    assert r.status_code == 422
    r = await api.get(URL, params={"cursor": "nonsense"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
    # A sealed cursor of a list with text ids (e.g. the email list): refused, never a 500
    # from casting its id to the contacts' uuid.
    foreign = encode_cursor(datetime.now(UTC), "msg_abc", sort="created_at:desc")
    r = await api.get(URL, params={"cursor": foreign}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
    r = await api.get(URL, params={"custom_field": "novalue"}, headers=auth)
    assert r.status_code == 422
    # Postgres text and jsonb cannot hold U+0000: a 422, never a 500 (found by the fuzz).
    for body in (
        {"email": "nul@x.io", "first_name": "A\u0000"},
        {"email": "nul@x.io", "custom_fields": {"k": "v\u0000"}},
    ):
        r = await api.post(URL, json=body, headers=auth)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
    # An import row that is not an object is a malformed request (found by the fuzz).
    for path in ("/import", "/imports"):
        r = await api.post(f"{URL}{path}", json=[{"email": "ok@x.io"}, True, None], headers=auth)
        assert r.status_code == 422, r.text
        fields = [d["field"] for d in r.json()["error"]["details"]]
        assert fields == ["body.1", "body.2"], r.text
    for params in ({"email": "a\u0000@x.io"}, {"tag": "t\u0000"}, {"custom_field": "k:\u0000"}):
        r = await api.get(URL, params=params, headers=auth)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text


async def test_another_tenant_or_mode_sees_nothing(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str
) -> None:
    r = await api.post(URL, json={"email": "mine@x.io"}, headers=auth)
    cid = r.json()["data"]["id"]
    for other in (principal_headers(f"{tenant}_other"), principal_headers(tenant, mode="test")):
        assert (await api.get(f"{URL}/{cid}", headers=other)).status_code == 404
        assert (
            await api.put(f"{URL}/{cid}", json={"company": "x"}, headers=other)
        ).status_code == 404
        assert (await api.delete(f"{URL}/{cid}", headers=other)).status_code == 404
        assert (await api.get(URL, headers=other)).json()["data"] == []
        # Their own contact with the same address is a different contact.
        assert (await api.post(URL, json={"email": "mine@x.io"}, headers=other)).status_code == 201
    assert (await api.get(f"{URL}/{cid}", headers=auth)).status_code == 200


# ---------------------------------------------------------------- 10,000 contacts

N = 10_000


@pytest.fixture(scope="module")
async def big_tenant(api: httpx.AsyncClient) -> tuple[str, dict[str, str], list[dict[str, Any]]]:
    import uuid

    tenant = f"t_big_{uuid.uuid4().hex[:8]}"
    headers = principal_headers(tenant)
    rows = [
        {
            "email": f"user{i:05d}@{'acme' if i % 2 else 'initech'}.io",
            "first_name": f"F{i}",
            "tags": ["even" if i % 2 == 0 else "odd", *(["fizz"] if i % 3 == 0 else [])],
            "custom_fields": {"tier": i % 4, "region": "eu" if i % 5 == 0 else "us"},
            **({"status": "unsubscribed"} if i % 10 == 0 else {}),
        }
        for i in range(N)
    ]
    r = await api.post(f"{URL}/import", json=rows, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["created"] == N
    return tenant, headers, rows


async def walk(
    api: httpx.AsyncClient, headers: dict[str, str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = await api.get(URL, params=q, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()["meta"]["pagination"]
        out += r.json()["data"]
        if not page["has_more"]:
            assert page.get("next_cursor") is None
            return out
        cursor = page["next_cursor"]


async def test_cursor_pagination_visits_every_contact_once_in_order(
    api: httpx.AsyncClient, big_tenant: Any
) -> None:
    _, headers, _ = big_tenant
    for sort_by, order in (("created_at", "desc"), ("email", "asc"), ("updated_at", "asc")):
        items = await walk(api, headers, {"limit": 500, "sort_by": sort_by, "order": order})
        assert len(items) == N and len({c["id"] for c in items}) == N
        keys = [c["email"].lower() if sort_by == "email" else c[sort_by] for c in items]
        assert keys == sorted(keys, reverse=order == "desc")


async def test_cursor_pages_stay_stable_when_rows_are_added(
    api: httpx.AsyncClient, big_tenant: Any
) -> None:
    _, headers, _ = big_tenant
    first = await api.get(
        URL, params={"limit": 100, "sort_by": "email", "order": "asc"}, headers=headers
    )
    cursor = first.json()["meta"]["pagination"]["next_cursor"]
    # A new contact sorting before the cursor must not shift the next page.
    await api.post(URL, json={"email": "aaaa-first@acme.io"}, headers=headers)
    second = await api.get(
        URL,
        params={"limit": 100, "sort_by": "email", "order": "asc", "cursor": cursor},
        headers=headers,
    )
    assert second.json()["data"][0]["email"] == "user00100@initech.io"
    found = await api.get(URL, params={"email": "aaaa-first@acme.io"}, headers=headers)
    await api.delete(f"{URL}/{found.json()['data'][0]['id']}", headers=headers)


async def test_offset_pagination_and_total(api: httpx.AsyncClient, big_tenant: Any) -> None:
    _, headers, _ = big_tenant
    r = await api.get(
        URL,
        params={
            "limit": 20,
            "offset": 40,
            "sort_by": "email",
            "order": "asc",
            "include_total": "true",
        },
        headers=headers,
    )
    body = r.json()
    assert [c["email"] for c in body["data"]][:2] == ["user00040@initech.io", "user00041@acme.io"]
    assert body["meta"]["pagination"] == {
        "limit": 20,
        "offset": 40,
        "total": N,
        "has_more": True,
        "next_cursor": body["meta"]["pagination"]["next_cursor"],
    }
    r = await api.get(
        URL, params={"limit": 20, "offset": N - 5, "sort_by": "email"}, headers=headers
    )
    assert len(r.json()["data"]) == 5 and r.json()["meta"]["pagination"]["has_more"] is False
    r = await api.get(
        URL,
        params={"offset": 10, "cursor": body["meta"]["pagination"]["next_cursor"]},
        headers=headers,
    )
    assert r.status_code == 422


async def test_filters_match_the_data(api: httpx.AsyncClient, big_tenant: Any) -> None:
    _, headers, rows = big_tenant

    async def emails(params: dict[str, Any]) -> set[str]:
        return {c["email"] for c in await walk(api, headers, {"limit": 500, **params})}

    def expect(pred: Any) -> set[str]:
        return {r["email"] for i, r in enumerate(rows) if pred(i, r)}

    assert await emails({"tag": ["odd", "fizz"]}) == expect(lambda i, r: i % 2 and i % 3 == 0)
    assert await emails({"status": "unsubscribed"}) == expect(lambda i, r: i % 10 == 0)
    assert await emails({"custom_field": ["tier:3", "region:eu"]}) == expect(
        lambda i, r: i % 4 == 3 and i % 5 == 0
    )
    assert await emails({"email": "USER00042@INITECH.IO"}) == {"user00042@initech.io"}
    assert await emails({"status": "active", "tag": "fizz"}) == expect(
        lambda i, r: i % 3 == 0 and i % 10 != 0
    )
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await emails({"created_after": future}) == set()
    assert len(await emails({"created_before": future})) >= N


async def test_list_queries_use_indexes(campaigns_pool: asyncpg.Pool, big_tenant: Any) -> None:
    tenant, _, _ = big_tenant
    for sql, args in (
        (
            "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = 'live'"
            " ORDER BY created_at DESC, id DESC LIMIT 50",
            [tenant],
        ),
        (
            "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = 'live'"
            " ORDER BY email_key, id LIMIT 50",
            [tenant],
        ),
        (
            "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = 'live' AND tags @> $2::text[]"
            " ORDER BY created_at DESC, id DESC LIMIT 51",
            [tenant, ["fizz"]],
        ),
        (
            "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = 'live'"
            " AND email_key = lower($2)",
            [tenant, "USER00042@initech.io"],
        ),
        (  # the status filter as the repository writes it (partial index on suppressed)
            "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = 'live' AND status = $2"
            " AND status <> 'active' ORDER BY created_at DESC, id DESC LIMIT 51",
            [tenant, "unsubscribed"],
        ),
    ):
        async with campaigns_pool.acquire() as conn:
            await conn.execute("ANALYZE contacts")
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        assert "Seq Scan" not in orjson.dumps(plan).decode(), plan


# ---------------------------------------------------------------- import


async def test_import_50k_rows_keeps_good_rows_and_reports_every_bad_one(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    rows: list[Any] = []
    bad: dict[int, str] = {}
    for i in range(50_000):
        row: Any = {
            "email": f"p{i}@import.example",
            "tags": ["imported"],
            "custom_fields": {"n": i},
        }
        if i % 1000 == 7:
            row = {"email": f"p{i}-at-import.test"}
            bad[i + 1] = "email"
        elif i % 1000 == 8:
            row = {"email": f"p{i}@import.example", "status": "gone"}
            bad[i + 1] = "status"
        elif i % 1000 == 9:
            row = {"email": f"P{i - 1}@IMPORT.EXAMPLE"}  # same address as the previous good row
            bad[i + 1] = "email"
        rows.append(row)
    # i % 1000 == 9 duplicates row i-1 (which is bad itself when i-1 % 1000 == 8): only the
    # duplicates of a good row are errors.
    for i in range(50_000):
        if i % 1000 == 9:
            bad.pop(i + 1)
    r = await api.post(f"{URL}/import", json=rows, headers=auth, timeout=300)
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert report["received"] == 50_000
    assert {e["row"]: e["field"] for e in report["errors"]} == bad
    assert report["created"] == 50_000 - len(bad)
    assert report["failed"] == len(bad) and report["updated"] == 0
    stored = await campaigns_pool.fetchval(
        "SELECT count(*) FROM contacts WHERE tenant_id = $1", tenant
    )
    assert stored == report["created"]
    events = await campaigns_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE tenant_id = $1 AND event_type = 'contact.created'",
        tenant,
    )
    assert events == report["created"]

    # Too many rows: refused as a whole.
    r = await api.post(
        f"{URL}/import", json=[{"email": "x@y.io"}] * 50_001, headers=auth, timeout=60
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_csv_import_upserts_and_never_reactivates_a_suppressed_contact(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    r = await api.post(
        URL, json={"email": "gone@x.io", "status": "unsubscribed", "tags": ["a"]}, headers=auth
    )
    gone = r.json()["data"]
    csv_body = (
        "email,first_name,company,tags,status,plan\n"
        "GONE@x.io,Back,Acme,b;c,active,gold\n"
        "new@x.io,New,,x,,silver\n"
        "broken\n"
        "new@x.io,Dup,,,,\n"
    )
    r = await api.post(
        f"{URL}/import", content=csv_body.encode(), headers={**auth, "content-type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert (report["created"], report["updated"], report["failed"]) == (1, 1, 2)
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(3, "email"), (4, "email")]
    merged = (await api.get(f"{URL}/{gone['id']}", headers=auth)).json()["data"]
    assert merged["status"] == "unsubscribed"  # never re-activated by an import
    assert merged["first_name"] == "Back" and merged["company"] == "Acme"
    assert sorted(merged["tags"]) == ["a", "b", "c"]
    # CR-only line ends (classic Mac, some Excel exports) and a quoted line break parse
    # (they were "malformed"; found by the contract fuzz).
    mac_body = 'email,first_name,note\rcr1@x.io,Ann,"two\rlines"\rcr2@x.io,Bob,\r'
    r = await api.post(
        f"{URL}/import", content=mac_body.encode(), headers={**auth, "content-type": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["created"], r.json()["data"]["failed"]) == (2, 0)
    found = (await api.get(URL, params={"email": "cr1@x.io"}, headers=auth)).json()["data"]
    assert found[0]["custom_fields"] == {"note": "two\rlines"}
    assert merged["custom_fields"] == {"plan": "gold"}
    r = await api.post(
        f"{URL}/import", content=b"a,b", headers={**auth, "content-type": "application/xml"}
    )
    assert r.status_code == 415


async def test_import_merges_an_address_a_concurrent_write_takes_during_the_copy(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    """The fast path COPYs addresses the look-up did not find. One inserted by a transaction
    still open at look-up time makes the COPY wait on it, then fail on commit: the import
    merges every row instead, and nothing is lost or doubled."""
    rows = [
        {"email": "Race@x.io", "first_name": "Imported", "tags": ["imp"]},
        {"email": "calm1@x.io", "tags": ["imp"]},
        {"email": "calm2@x.io", "tags": ["imp"]},
        {"email": "bad"},
    ]
    async with campaigns_pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "INSERT INTO contacts (id, tenant_id, mode, email, tags) VALUES"
            " (gen_random_uuid(), $1, 'live', 'race@X.io', '{early}')",
            tenant,
        )
        task = asyncio.create_task(api.post(f"{URL}/import", json=rows, headers=auth, timeout=60))
        blocked = await eventually(
            lambda: campaigns_pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'COPY%contacts%'"
            ),
            timeout=30,
        )
        assert blocked == 1, "the COPY waits on the uncommitted address"
        await tx.commit()
        r = await task
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert (report["created"], report["updated"], report["failed"]) == (2, 1, 1)
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(4, "email")]
    stored = {
        c["email_key"]: c
        for c in await campaigns_pool.fetch(
            "SELECT email_key, first_name, tags FROM contacts WHERE tenant_id = $1", tenant
        )
    }
    assert set(stored) == {"race@x.io", "calm1@x.io", "calm2@x.io"}
    assert stored["race@x.io"]["first_name"] == "Imported"
    assert sorted(stored["race@x.io"]["tags"]) == ["early", "imp"]
    created = await outbox_events(campaigns_pool, tenant, "contact.created")
    updated = await outbox_events(campaigns_pool, tenant, "contact.updated")
    assert sorted(e["data"]["email"] for e in created) == ["calm1@x.io", "calm2@x.io"]
    assert [(e["data"]["email"], e["data"]["changed"]) for e in updated] == [
        ("race@X.io", ["import"])
    ]
    assert sorted(updated[0]["data"]["contact_tags"]) == ["early", "imp"], "tags as merged"


async def test_an_address_taken_beyond_the_probe_is_merged_not_copied(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    """None of the first IMPORT_PROBE_ROWS addresses exists, so the import COPYs every row
    at once; the COPY meets the taken address near the end, its savepoint undoes it, and the
    import looks every address up and merges that one: nothing doubled, nothing lost."""
    await campaigns_pool.execute(
        "INSERT INTO contacts (id, tenant_id, mode, email, tags) VALUES"
        " (gen_random_uuid(), $1, 'live', 'late250@x.io', '{early}')",
        tenant,
    )
    rows = [{"email": f"late{i}@x.io", "tags": ["imp"]} for i in range(300)]
    assert service.IMPORT_PROBE_ROWS < 250 < len(rows)
    r = await api.post(f"{URL}/import", json=rows, headers=auth)
    assert r.status_code == 200, r.text
    report = r.json()["data"]
    assert (report["created"], report["updated"], report["failed"]) == (299, 1, 0)
    assert (
        await campaigns_pool.fetchval("SELECT count(*) FROM contacts WHERE tenant_id = $1", tenant)
        == 300
    )
    tags = await campaigns_pool.fetchval(
        "SELECT tags FROM contacts WHERE tenant_id = $1 AND email_key = 'late250@x.io'", tenant
    )
    assert sorted(tags) == ["early", "imp"]
    created = await outbox_events(campaigns_pool, tenant, "contact.created")
    updated = await outbox_events(campaigns_pool, tenant, "contact.updated")
    assert len(created) == 299 and len({e["data"]["email"] for e in created}) == 299
    assert [e["data"]["email"] for e in updated] == ["late250@x.io"]


async def test_import_events_carry_each_contact_and_a_second_import_updates(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    rows = [
        {"email": f"ev{i}@x.io", "tags": [f"t{i}"], "custom_fields": {"n": i, "s": 'q"\\'}}
        for i in range(300)
    ]
    r = await api.post(f"{URL}/import", json=rows, headers=auth)
    assert r.json()["data"]["created"] == 300
    stored = {
        c["email"]: c
        for c in await campaigns_pool.fetch(
            "SELECT id, email, tags, custom_fields FROM contacts WHERE tenant_id = $1", tenant
        )
    }
    assert stored["ev7@x.io"]["custom_fields"] == {"n": 7, "s": 'q"\\'}
    created = await outbox_events(campaigns_pool, tenant, "contact.created")
    assert sorted((e["data"]["contact_id"], e["data"]["contact_tags"][0]) for e in created) == (
        sorted((str(c["id"]), c["tags"][0]) for c in stored.values())
    )
    assert all(e["subject"] == f"contacts/{e['data']['contact_id']}" for e in created)
    assert len({e["id"] for e in created}) == 300
    # Half again (with a new tag) and 100 new: merge the known ones, COPY the new ones.
    again = [{**row, "tags": ["again"]} for row in rows[:150]]
    again += [{"email": f"new{i}@x.io"} for i in range(100)]
    r = await api.post(f"{URL}/import", json=again, headers=auth)
    assert (r.json()["data"]["created"], r.json()["data"]["updated"]) == (100, 150)
    updated = await outbox_events(campaigns_pool, tenant, "contact.updated")
    assert len(updated) == 150
    assert all(sorted(e["data"]["contact_tags"])[0] == "again" for e in updated)
    assert len(await outbox_events(campaigns_pool, tenant, "contact.created")) == 400
