"""The verified-key caches: bcrypt paid once per key, bad secrets throttled per lookup id,
evictions from the outbox feed alone reaching every replica, regenerate grace periods."""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from libs.common.apikeys import generate_api_key, parse_api_key
from libs.common.principal import PRINCIPAL_HEADER, Principal
from tests.integration.keys.platform_stack import Platform, bearer, create_key, metrics_url, signup
from tests.principals import bound_principal


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _outcomes(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await client.get(metrics_url(url))).text
    return {
        o: metric(text, "pm_gateway_auth_total", method="api_key", outcome=o)
        for o in ("verified", "cache_local", "cache_redis", "throttled", "invalid", "malformed")
    }


async def _until_status(
    client: httpx.AsyncClient, url: str, key: str, status: int, limit: float = 10.0
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        resp = await client.get(url, headers=bearer(key))
        if resp.status_code == status:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered {status}")


async def test_verification_is_paid_once_then_served_from_caches(
    platform: Platform, unique: str
) -> None:
    gw1, gw2 = (g.url for g in platform.gateways)
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw1, unique)
        key = (await create_key(client, gw1, owner["access_token"], ["manage_contacts"]))["key"]
        before1, before2 = await _outcomes(client, gw1), await _outcomes(client, gw2)
        for _ in range(5):
            assert (await client.get(f"{gw1}/api/v1/contacts", headers=bearer(key))).is_success
        for _ in range(5):
            assert (await client.get(f"{gw2}/api/v1/contacts", headers=bearer(key))).is_success
        after1, after2 = await _outcomes(client, gw1), await _outcomes(client, gw2)
    assert after1["verified"] - before1["verified"] == 1
    assert after1["cache_local"] - before1["cache_local"] == 4
    # The second replica finds the verified principal in Redis: no second bcrypt.
    assert after2["verified"] - before2["verified"] == 0
    assert after2["cache_redis"] - before2["cache_redis"] == 1
    assert after2["cache_local"] - before2["cache_local"] == 4


async def test_bad_secrets_for_one_lookup_id_are_throttled(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        real = (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
            "key"
        ]
        url = f"{platform.gw}/api/v1/contacts"
        assert (await client.get(url, headers=bearer(real))).status_code == 200
        lookup = parse_api_key(real).lookup_id
        before = await _outcomes(client, platform.gw)
        # Well-formed keys (valid checksum) with the real lookup id and wrong secrets.
        forged = [generate_api_key("live", lookup_id=lookup).raw for _ in range(7)]
        statuses = [(await client.get(url, headers=bearer(f))).status_code for f in forged]
        throttled = await client.get(url, headers=bearer(forged[-1]))
        still_ok = await client.get(url, headers=bearer(real))
        after = await _outcomes(client, platform.gw)
    assert statuses == [401] * 5 + [429] * 2
    assert throttled.json()["error"]["code"] == "auth_throttled"
    assert int(throttled.headers["Retry-After"]) >= 1
    # Only 5 bcrypt checks were asked of the keys service; the rest were refused up front.
    assert after["invalid"] - before["invalid"] == 5
    assert after["throttled"] - before["throttled"] >= 2
    assert still_ok.status_code == 200  # the cached real key is unaffected


async def test_revocation_via_outbox_event_reaches_both_replicas(
    platform: Platform, unique: str
) -> None:
    """Revoked straight at the keys service (no gateway involved): only the api_key.revoked
    fact, relayed from the outbox, can tell the gateways."""
    gw1, gw2 = (g.url for g in platform.gateways)
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw1, unique)
        created = await create_key(client, gw1, owner["access_token"], ["manage_contacts"])
        key = created["key"]
        for gw in (gw1, gw2):
            assert (await client.get(f"{gw}/api/v1/contacts", headers=bearer(key))).is_success
        principal = Principal(
            tenant_id=owner["tenant"]["id"],
            subject_type="user",
            subject_id=owner["user"]["id"],
            scopes=[],
            plan="starter",
            mode="live",
        )
        token = bound_principal(
            principal, "keys", "DELETE", f"/api/v1/platform/api-keys/{created['id']}"
        )
        revoked = await client.delete(
            f"{platform.keys.url}/api/v1/platform/api-keys/{created['id']}",
            headers={PRINCIPAL_HEADER: token},
        )
        assert revoked.status_code == 200
        assert revoked.json()["data"]["status"] == "revoked"
        waits = await asyncio.gather(
            _until_status(client, f"{gw1}/api/v1/contacts", key, 401),
            _until_status(client, f"{gw2}/api/v1/contacts", key, 401),
        )
    print(f"revocation via outbox reached the replicas after {waits[0]:.3f}s / {waits[1]:.3f}s")


async def test_regenerate_with_grace_keeps_the_old_secret_then_without_grace_drops_it(
    platform: Platform, unique: str
) -> None:
    gw1, gw2 = (g.url for g in platform.gateways)
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw1, unique)
        auth = bearer(owner["access_token"])
        created = await create_key(client, gw1, owner["access_token"], ["manage_contacts"])
        old = created["key"]
        assert (await client.get(f"{gw2}/api/v1/contacts", headers=bearer(old))).is_success
        url = f"{gw1}/api/v1/platform/api-keys/{created['id']}/regenerate"
        graced = await client.post(url, json={"grace_period_seconds": 3600}, headers=auth)
        assert graced.status_code == 200, graced.text
        new = graced.json()["data"]["key"]
        assert graced.json()["data"]["id"] == created["id"]
        assert new != old
        for gw in (gw1, gw2):
            assert (await client.get(f"{gw}/api/v1/contacts", headers=bearer(old))).is_success
            assert (await client.get(f"{gw}/api/v1/contacts", headers=bearer(new))).is_success
        again = await client.post(url, json={"grace_period_seconds": 0}, headers=auth)
        newest = again.json()["data"]["key"]
        # Through the gateway that forwarded it: evicted before the response returned.
        assert (await client.get(f"{gw1}/api/v1/contacts", headers=bearer(new))).status_code == 401
        await _until_status(client, f"{gw2}/api/v1/contacts", new, 401)
        assert (await client.get(f"{gw2}/api/v1/contacts", headers=bearer(newest))).is_success


async def test_a_cache_entry_rewritten_in_redis_is_a_miss_not_a_new_identity(
    platform: Platform, unique: str
) -> None:
    import orjson
    import redis.asyncio as aioredis

    from tests.conftest import REDIS_URL
    from tests.integration.keys.platform_stack import NAMESPACE

    gw1, gw2 = (g.url for g in platform.gateways)
    redis = aioredis.from_url(REDIS_URL)
    async with httpx.AsyncClient(timeout=20) as client:
        mine = await signup(client, gw1, unique)
        victim = await signup(client, gw1, unique + "v")
        key = await create_key(client, gw1, mine["access_token"], ["manage_contacts"])
        first = await client.get(f"{gw1}/api/v1/contacts", headers=bearer(key["key"]))
        assert first.json()["data"]["principal"]["tenant_id"] == mine["tenant"]["id"]

        # Someone with write access to Redis re-points the cached entry to another tenant.
        [entry_name] = await redis.smembers(f"{NAMESPACE}:gw:kidx:{key['id']}")
        sealed = await redis.get(entry_name)
        assert isinstance(sealed, bytes)
        mac, _, payload = sealed.partition(b".")
        entry = orjson.loads(payload)
        entry["tenant_id"] = victim["tenant"]["id"]
        entry["scopes"] = ["manage_contacts", "send_email"]
        await redis.set(entry_name, mac + b"." + orjson.dumps(entry), ex=300)
        await redis.set(f"{NAMESPACE}:gw:plan:{victim['tenant']['id']}", b"enterprise", ex=300)

        # The other replica has no local copy: it reads Redis, rejects the entry's MAC and
        # verifies the key again with the keys service.
        before = await client.get(metrics_url(gw2))
        again = await client.get(f"{gw2}/api/v1/contacts", headers=bearer(key["key"]))
        after = await client.get(metrics_url(gw2))
        assert again.status_code == 200, again.text
        assert again.json()["data"]["principal"]["tenant_id"] == mine["tenant"]["id"]
        assert again.json()["data"]["principal"]["scopes"] == ["manage_contacts"]
        for outcome in ("cache_tampered", "verified"):
            assert metric(
                after.text, "pm_gateway_auth_total", method="api_key", outcome=outcome
            ) == 1 + metric(before.text, "pm_gateway_auth_total", method="api_key", outcome=outcome)

        # A plan planted in Redis (no MAC) is ignored too: the replica, which has not seen this
        # tenant yet, asks the keys service. (gw1: gw2's billing upstream is a dead port.)
        billing = await client.get(
            f"{gw1}/api/v1/billing/subscription", headers=bearer(victim["access_token"])
        )
        assert billing.status_code == 200, billing.text
        assert billing.json()["data"]["principal"]["plan"] == "starter", billing.text
    await redis.aclose()


async def test_a_stranger_cannot_lock_out_the_owner_and_one_address_spends_bounded_bcrypt(
    platform: Platform, unique: str
) -> None:
    from tests.integration.keys.platform_stack import gateway_env, start

    # Behind one trusted proxy, so this test can speak from two client addresses.
    env = gateway_env(
        platform.amqp_url,
        platform.keys.url,
        platform.echo_url,
        PM_TRUSTED_PROXY_HOPS="1",
        PM_BAD_SECRET_LIMIT_PER_ADDRESS="8",
    )
    gw = start("gateway", "api", env)
    stranger = {"X-Forwarded-For": "203.0.113.7"}
    owner_server = {"X-Forwarded-For": "198.51.100.9"}
    try:
        gw.wait_ready(60)
        url = f"{gw.url}/api/v1/contacts"
        async with httpx.AsyncClient(timeout=20) as client:
            owner = await signup(client, platform.gw, unique)
            real = await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"])
            lookup = parse_api_key(real["key"]).lookup_id
            forged = [generate_api_key("live", lookup_id=lookup).raw for _ in range(7)]
            statuses = [
                (await client.get(url, headers={**bearer(f), **stranger})).status_code
                for f in forged
            ]
            # The stranger is throttled (gateway_env sets PM_BAD_SECRET_LIMIT=5) ...
            assert statuses == [401] * 5 + [429] * 2
            # ... the owner's servers are not: the key was never cached, so this is a
            # fresh bcrypt verification that the lookup id's bad secrets do not block.
            ok = await client.get(url, headers={**bearer(real["key"]), **owner_server})
            assert ok.status_code == 200, ok.text

            # Guesses spread over other lookup ids still count against the one address.
            others = [generate_api_key("live").raw for _ in range(4)]
            spread = [
                (await client.get(url, headers={**bearer(k), **stranger})).status_code
                for k in others
            ]
            assert spread == [401, 401, 401, 429]  # 5 + 3 failures = the address's 8
            metrics = (await client.get(metrics_url(gw.url))).text
        verified = metric(metrics, "pm_gateway_auth_total", method="api_key", outcome="invalid")
        assert verified == 8, "bcrypt was asked 8 times for this address, no more"
    finally:
        gw.close()
