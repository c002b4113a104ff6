"""Idempotency-Key on POST through the gateway (Stripe semantics, shared by replicas)."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.keys.platform_stack import Platform, bearer, create_key, signup


async def test_replayed_post_returns_the_stored_response_and_creates_nothing(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        headers = {**bearer(owner["access_token"]), "Idempotency-Key": f"create-{unique}"}
        body = {"name": "ci", "scopes": ["send_email"]}
        url = f"{platform.gw}/api/v1/platform/api-keys"
        first = await client.post(url, json=body, headers=headers)
        # The retry lands on the other replica: the stored response is shared.
        second = await client.post(
            f"{platform.gateways[1].url}/api/v1/platform/api-keys", json=body, headers=headers
        )
        other_body = await client.post(url, json={**body, "name": "other"}, headers=headers)
        listed = await client.get(url, headers=bearer(owner["access_token"]))
    assert first.status_code == 201
    assert first.headers["Idempotent-Replayed"] == "false"
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()  # same key id, same secret, same meta
    assert other_body.status_code == 409
    assert other_body.json()["error"]["code"] == "idempotency_key_reused"
    assert [k["id"] for k in listed.json()["data"]] == [first.json()["data"]["id"]]


async def test_concurrent_duplicate_is_409_while_the_first_runs(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
            "key"
        ]
        headers = {**bearer(key), "Idempotency-Key": f"slow-{unique}"}
        url = f"{platform.gw}/api/v1/contacts?delay=1"
        slow = asyncio.create_task(client.post(url, json={"email": "a@b.c"}, headers=headers))
        await asyncio.sleep(0.3)
        duplicate = await client.post(url, json={"email": "a@b.c"}, headers=headers)
        first = await slow
        replay = await client.post(url, json={"email": "a@b.c"}, headers=headers)
    assert first.status_code == 200
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "idempotency_key_in_use"
    assert replay.status_code == 200
    assert replay.json()["data"]["call"] == first.json()["data"]["call"]  # upstream ran once
    assert replay.headers["Idempotent-Replayed"] == "true"


async def test_a_503_from_a_service_whose_dependency_is_down_is_not_replayed(
    platform: Platform, unique: str
) -> None:
    """A service that found Redis (or Postgres, Vault, the broker) down answers 503
    `service_unavailable` with Retry-After and did nothing; the client retries with the same
    key, as the docs say. That retry must run, not replay the 503 for 24 h (found by `make
    chaos`: after Redis and OpenBao restarts, a probe retrying one key never got through)."""
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
            "key"
        ]
        idem = f"outage-{unique}"
        armed = await client.post(f"{platform.echo_url}/_dependency_down/{idem}")
        assert armed.status_code == 200, armed.text
        headers = {**bearer(key), "Idempotency-Key": idem}
        url = f"{platform.gw}/api/v1/contacts"
        down = await client.post(url, json={"email": "a@b.c"}, headers=headers)
        retried = await client.post(url, json={"email": "a@b.c"}, headers=headers)
        replay = await client.post(url, json={"email": "a@b.c"}, headers=headers)
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "service_unavailable"
    assert down.headers["Retry-After"] == "1"
    assert retried.status_code == 200, retried.text
    assert retried.headers["Idempotent-Replayed"] == "false"
    # The answer that did the work is the one stored: replayed, the upstream not called again.
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["data"]["call"] == retried.json()["data"]["call"]


async def test_malformed_idempotency_key_is_400(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        resp = await client.post(
            f"{platform.gw}/api/v1/platform/api-keys",
            json={"name": "x", "scopes": ["send_email"]},
            headers={**bearer(owner["access_token"]), "Idempotency-Key": "k" * 300},
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_idempotency_key"


async def test_a_stored_key_creation_reveals_no_secret_to_redis(
    platform: Platform, unique: str
) -> None:
    import redis.asyncio as aioredis

    from tests.conftest import REDIS_URL
    from tests.integration.keys.platform_stack import NAMESPACE

    redis = aioredis.from_url(REDIS_URL)
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        headers = {**bearer(owner["access_token"]), "Idempotency-Key": f"secret-{unique}"}
        url = f"{platform.gw}/api/v1/platform/api-keys"
        first = await client.post(
            url, json={"name": "ci", "scopes": ["send_email"]}, headers=headers
        )
        raw_key = first.json()["data"]["key"]
        names = [n async for n in redis.scan_iter(f"{NAMESPACE}:idem:{owner['tenant']['id']}:*")]
        assert len(names) == 1
        stored = await redis.get(names[0])
        assert isinstance(stored, bytes)
        # Neither the key, its secret part, nor the response body is readable in Redis.
        assert raw_key.encode() not in stored and raw_key[-24:].encode() not in stored
        assert first.json()["data"]["id"].encode() not in stored

        replay = await client.post(
            url, json={"name": "ci", "scopes": ["send_email"]}, headers=headers
        )
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.content == first.content

        # An edited entry is never replayed (nor run again).
        await redis.set(names[0], stored.replace(b'"sealed":"', b'"sealed":"AAAA'), ex=60)
        edited = await client.post(
            url, json={"name": "ci", "scopes": ["send_email"]}, headers=headers
        )
        assert edited.status_code == 409, edited.text
        listed = await client.get(url, headers=bearer(owner["access_token"]))
        assert len(listed.json()["data"]) == 1
    await redis.aclose()
