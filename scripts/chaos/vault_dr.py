# ruff: noqa: S603  (a drill: runs the repository's own commands and prints its steps)
"""`make vault-dr`: Vault disaster recovery drill on private servers.

1. Private PostgreSQL, Redis, RabbitMQ and OpenBao (integrated raft storage) in a temporary
   directory (`scripts/chaos/instances.py`); the platform on them (`scripts.dev.stack up`
   as a separate instance).
2. A tenant with a live API key, a verified sending domain and a webhook endpoint; a live
   mail sent and a webhook delivered (the "before" picture).
3. Snapshot: `bao operator raft snapshot save` (what the k8s CronJob does, see
   docs/operations.md "Vault disaster recovery").
4. Disaster: the platform stops, the OpenBao server is stopped and its data deleted.
5. Restore into a FRESH OpenBao (new data directory, new port, its own `init`):
   `bao operator raft snapshot restore -force`, then unseal with the unseal key of the
   snapshot's cluster (a restored snapshot brings its keyring and tokens with it).
6. The platform restarts against the restored OpenBao, with Redis flushed (no cached key
   verification): the API key made before verifies through the gateway, a live mail goes out
   with the ESP credentials read from Vault, a webhook is delivered and its signature
   verifies with the secret shown before the disaster, the principal signing key resolves
   (every gateway -> service call is signed with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from scripts.chaos.instances import BAO, OpenBao, PrivateInfra, port_free
from scripts.chaos.run import DOMAIN, RCPT_DOMAIN, captured, stack_cmd, start_dns
from tests.fakes.dns_server import FakeDns
from tests.fakes.webhook_receiver import WebhookReceiver


def bao_cli(bao: OpenBao, token: str, *args: str) -> str:
    env = {**os.environ, "BAO_ADDR": bao.addr, "BAO_TOKEN": token}
    r = subprocess.run([str(BAO), *args], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"bao {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


async def tenant(client: httpx.AsyncClient, gw: str, dns: FakeDns, hook: str) -> dict[str, str]:
    r = await client.post(
        f"{gw}/api/v1/auth/signup",
        json={
            "email": f"dr-{uuid.uuid4().hex[:8]}@example.com",
            "password": "a-long-dr-passphrase",
            "company": "DR",
        },
    )
    r.raise_for_status()
    jwt = {"Authorization": f"Bearer {r.json()['data']['access_token']}"}
    r = await client.post(
        f"{gw}/api/v1/platform/api-keys",
        headers=jwt,
        json={
            "name": "dr",
            "mode": "live",
            "scopes": ["send_email", "manage_contacts", "manage_webhooks", "manage_domains"],
        },
    )
    r.raise_for_status()
    key = str(r.json()["data"]["key"])
    auth = {"Authorization": f"Bearer {key}"}
    r = await client.post(f"{gw}/api/v1/domains", json={"name": DOMAIN}, headers=auth)
    r.raise_for_status()
    for record in r.json()["data"]["records"]:
        dns.set(record["host"], record["type"], record["value"])
    r = await client.post(f"{gw}/api/v1/domains/{r.json()['data']['id']}/verify", headers=auth)
    if r.json()["data"]["status"] != "verified":
        raise RuntimeError(f"domain not verified: {r.text}")
    r = await client.post(
        f"{gw}/api/v1/webhooks", headers=auth, json={"url": hook, "events": ["contact.created"]}
    )
    r.raise_for_status()
    return {"key": key, "secret": str(r.json()["data"]["secret"])}


async def exercise(
    client: httpx.AsyncClient,
    gw: str,
    creds: dict[str, str],
    receiver: WebhookReceiver,
    mail_dir: Path,
    label: str,
) -> bool:
    """Contact (-> signed webhook) and a live send (-> ESP credentials from Vault)."""
    n = uuid.uuid4().hex[:8]
    auth = {"Authorization": f"Bearer {creds['key']}"}
    listed = await client.get(f"{gw}/api/v1/contacts?limit=1", headers=auth)
    print(f"  {label}: API key verifies through the gateway: GET /contacts -> {listed.status_code}")
    contact = f"{label}-{n}@{RCPT_DOMAIN}"
    r = await client.post(f"{gw}/api/v1/contacts", json={"email": contact}, headers=auth)
    print(f"  {label}: POST /contacts -> {r.status_code}")
    rcpt = f"{label}-mail-{n}@{RCPT_DOMAIN}"
    r2 = await client.post(
        f"{gw}/api/v1/emails/send",
        headers=auth,
        json={
            "from": f"dr@{DOMAIN}",
            "to": rcpt,
            "subject": "dr",
            "text": "after",
            "category": "transactional",
        },
    )
    print(f"  {label}: POST /emails/send -> {r2.status_code}")
    deadline = time.monotonic() + 90
    hook = mailed = None
    while time.monotonic() < deadline and (hook is None or mailed is None):
        hook = next((q for q in list(receiver.requests) if contact.encode() in q.body), None)
        mailed = next((m for m in captured(mail_dir) if rcpt in m.rcpt_to), None)
        await asyncio.sleep(0.5)
    signed = False
    if hook is not None:
        try:
            Webhook(creds["secret"]).verify(hook.body, hook.headers)
            signed = True
        except Exception as exc:
            print(f"  {label}: webhook signature does NOT verify: {exc}")
    print(
        f"  {label}: webhook delivered: {hook is not None}, signature verifies with the"
        f" secret shown at creation: {signed}"
    )
    print(
        f"  {label}: live mail captured by the ESP stand-in (SMTP credentials from Vault):"
        f" {mailed is not None}"
    )
    return (
        listed.status_code == 200
        and r.status_code == 201
        and r2.is_success
        and signed
        and (mailed is not None)
    )


def kv_inventory(bao: OpenBao, token: str) -> dict[str, int]:
    """How many secrets each platform KV mount holds (listed recursively)."""
    out = {}
    for mount in ("secret", "api_keys"):
        count, todo = 0, [""]
        while todo:
            prefix = todo.pop()
            try:
                listed = json.loads(
                    bao_cli(bao, token, "kv", "list", "-format=json", f"{mount}/{prefix}")
                )
            except RuntimeError:
                continue
            for name in listed:
                if name.endswith("/"):
                    todo.append(prefix + name)
                else:
                    count += 1
        out[mount] = count
    return out


async def drill(args: argparse.Namespace, base: Path) -> int:
    infra = PrivateInfra(base / "infra", first=args.ports)
    fresh = OpenBao(base / "openbao-restored", args.ports + 6)
    if not (port_free(fresh.port) and port_free(fresh.port + 1)):
        raise RuntimeError(f"ports {fresh.port}-{fresh.port + 1} taken")
    print(f"vault-dr: private servers in {base}", flush=True)
    dns, receiver = start_dns(), WebhookReceiver().start()
    dev_dir = base / "stack"

    def env_for(bao: OpenBao) -> dict[str, str]:
        stack_env = {**infra.stack_env(dev_dir, args.offset), "PM_VAULT_ADDR": bao.addr}
        stack_env["PM_VAULT_ROOT_TOKEN"] = infra.bao.root_token
        os.environ.update(stack_env)
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        return {**clean, **stack_env, "PM_DNS_RESOLVERS": dns.address}

    env: dict[str, str] = {}
    try:
        infra.start()
        env = env_for(infra.bao)
        print("vault-dr: 1. the platform on the original OpenBao", flush=True)
        if stack_cmd(env, "up") != 0:
            return 1
        from scripts.dev import stack

        gw, mail_dir = stack.GATEWAY_URL, dev_dir / "mail"
        async with httpx.AsyncClient(timeout=30) as client:
            creds = await tenant(client, gw, dns, receiver.url)
            before = await exercise(client, gw, creds, receiver, mail_dir, "before")
            inventory = kv_inventory(infra.bao, infra.bao.root_token)
            print(f"  Vault holds: {inventory} secrets (KV v2 mounts secret/, api_keys/)")

            snap = base / "vault.snap"
            print(f"vault-dr: 2. snapshot: bao operator raft snapshot save {snap.name}")
            bao_cli(
                infra.bao, infra.bao.root_token, "operator", "raft", "snapshot", "save", str(snap)
            )
            print(f"  {snap.stat().st_size} bytes")

            print("vault-dr: 3. disaster: platform stopped, OpenBao stopped, its data deleted")
            stack_cmd(env, "down", timeout=120)
            infra.bao.stop()
            shutil.rmtree(infra.bao.base / "data")

            print(f"vault-dr: 4. a fresh OpenBao on {fresh.addr}: init, unseal, restore -force")
            fresh.start()
            bao_cli(
                fresh,
                fresh.root_token,
                "operator",
                "raft",
                "snapshot",
                "restore",
                "-force",
                str(snap),
            )
            await asyncio.sleep(2)
            fresh.unseal_key = infra.bao.unseal_key  # the snapshot's keyring
            try:
                took = fresh.unseal()
                print(f"  unsealed with the original cluster's unseal key ({took:.1f} s)")
            except Exception as exc:
                print(f"  unseal: {type(exc).__name__}: {exc}")
            restored = kv_inventory(fresh, infra.bao.root_token)
            print(
                f"  restored Vault holds: {restored} secrets; same as before: "
                f"{restored == inventory}"
            )

            print("vault-dr: 5. the platform against the restored OpenBao (Redis flushed)")
            infra.redis.flushall()
            env = env_for(fresh)
            if stack_cmd(env, "up") != 0:
                return 1
            after = await exercise(client, gw, creds, receiver, mail_dir, "after")
        ok = before and after and restored == inventory
        print(f"\nvault-dr: {'PASSED' if ok else 'FAILED'}: before {before}, after restore {after}")
        return 0 if ok else 1
    finally:
        if env:
            stack_cmd(env, "down", timeout=120)
        fresh.stop()
        infra.stop()
        dns.stop()
        receiver.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.chaos.vault_dr",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ports", type=int, default=7450, help="first of 8 server ports")
    parser.add_argument("--offset", type=int, default=3000, help="stack port offset")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="pm-vault-dr-"))
    try:
        return asyncio.run(drill(args, base))
    finally:
        if args.keep:
            print(f"vault-dr: kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
