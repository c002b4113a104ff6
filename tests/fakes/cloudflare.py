"""A local fake of Cloudflare's DNS records API (v4: `/client/v4/zones`,
`/zones/{id}/dns_records`), speaking its documented wire format (`{success, errors,
messages, result, result_info}`, Bearer tokens), for the official `cloudflare` library.

Records it holds can be served by a `FakeDns` (`serve_with`), so publish → verify runs end to
end on loopback. Run alone: `python -m tests.fakes.cloudflare --port N`.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.dns_server import FakeDns
from tests.fakes.esp_server import FakeEsp


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _envelope(result: Any, status: int = 200, *, page_count: int | None = None) -> Response:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if page_count is not None:
        body["result_info"] = {
            "page": 1,
            "per_page": 100,
            "count": page_count,
            "total_count": page_count,
            "total_pages": 1,
        }
    return JSONResponse(body, status_code=status)


def _error(status: int, code: int, message: str) -> Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": []}
    return JSONResponse(body, status_code=status, headers={"cf-ray": uuid.uuid4().hex[:16]})


class FakeCloudflare(FakeEsp):
    def __init__(
        self, token: str = "cf-test-token-0123456789abcdef", *, auto_zones: bool = False
    ) -> None:
        super().__init__()
        self.token = token
        self.zones: dict[str, str] = {}  # id -> name
        self.records: dict[str, dict[str, Any]] = {}  # id -> record
        self.dns: FakeDns | None = None
        # The dev stack's instance: a zone looked up by name exists (the first name asked,
        # e.g. `mail.example.com`), so any domain can be published locally.
        self.auto_zones = auto_zones

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/client/v4"

    def add_zone(self, name: str) -> str:
        zone_id = uuid.uuid4().hex
        self.zones[zone_id] = name
        return zone_id

    def serve_with(self, dns: FakeDns) -> FakeCloudflare:
        self.dns = dns
        return self

    def routes(self) -> list[Route]:
        base = "/client/v4"
        return [
            Route("/readyz", self._ready, methods=["GET"]),
            Route(f"{base}/zones", self._zones, methods=["GET"]),
            Route(f"{base}/zones/{{zone_id}}/dns_records", self._records, methods=["GET", "POST"]),
            Route(
                f"{base}/zones/{{zone_id}}/dns_records/{{record_id}}",
                self._record,
                methods=["GET", "PUT", "PATCH", "DELETE"],
            ),
        ]

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def _ready(self, request: Request) -> Response:
        return JSONResponse({"status": "ready", "fake": "Cloudflare DNS API"})

    async def _zones(self, request: Request) -> Response:
        if (failed := await self._gate(request)) is not None:
            return failed
        name = request.query_params.get("name")
        if name and self.auto_zones and name not in self.zones.values():
            self.add_zone(name)
        found = [
            {"id": zid, "name": zname, "status": "active", "type": "full", "paused": False}
            for zid, zname in self.zones.items()
            if name is None or zname == name
        ]
        return _envelope(found, page_count=len(found))

    async def _records(self, request: Request) -> Response:
        if (failed := await self._gate(request)) is not None:
            return failed
        zone_id = request.path_params["zone_id"]
        if zone_id not in self.zones:
            return _error(
                404,
                7003,
                "Could not route to /zones/..., perhaps your object identifier is invalid?",
            )
        if request.method == "POST":
            body = await request.json()
            record = self._new_record(zone_id, body)
            self.records[record["id"]] = record
            self._sync(record["name"], record["type"])
            return _envelope(record)
        name = request.query_params.get("name.exact") or request.query_params.get("name")
        rtype = request.query_params.get("type")
        found = [
            r
            for r in self.records.values()
            if r["zone_id"] == zone_id
            and (name is None or r["name"] == name)
            and (rtype is None or r["type"] == rtype)
        ]
        return _envelope(found, page_count=len(found))

    async def _record(self, request: Request) -> Response:
        if (failed := await self._gate(request)) is not None:
            return failed
        record = self.records.get(request.path_params["record_id"])
        if record is None or record["zone_id"] != request.path_params["zone_id"]:
            return _error(404, 81044, "Record does not exist.")
        if request.method == "DELETE":
            del self.records[record["id"]]
            self._sync(record["name"], record["type"])
            return _envelope({"id": record["id"]})
        if request.method in ("PUT", "PATCH"):
            body = await request.json()
            updated = {**record, **{k: v for k, v in body.items() if k in record}}
            updated["modified_on"] = _now()
            self.records[record["id"]] = updated
            self._sync(updated["name"], updated["type"])
            return _envelope(updated)
        return _envelope(record)

    async def _gate(self, request: Request) -> Response | None:
        status = await self.gate(request, [])
        if status is not None:
            return _error(status, 10000 + status, "scripted failure")
        if not self._authorized(request):
            return _error(403, 10000, "Authentication error")
        return None

    def _new_record(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        return {
            "id": uuid.uuid4().hex,
            "zone_id": zone_id,
            "zone_name": self.zones[zone_id],
            "name": str(body["name"]).rstrip(".").lower(),
            "type": body["type"],
            "content": body.get("content", ""),
            "proxiable": False,
            "proxied": bool(body.get("proxied", False)),
            "ttl": body.get("ttl", 1),
            "settings": {},
            "meta": {},
            "comment": body.get("comment"),
            "tags": [],
            "created_on": now,
            "modified_on": now,
        }

    def _sync(self, name: str, rtype: str) -> None:
        if self.dns is None:
            return
        values = [
            r["content"] for r in self.records.values() if r["name"] == name and r["type"] == rtype
        ]
        self.dns.set(name, rtype, *values)


def main() -> None:
    """The dev stack's instance: the HTTP API on --port and, with --dns-port, the records it
    holds served by an authoritative DNS server on that UDP/TCP port (the token comes from
    FAKE_CLOUDFLARE_TOKEN)."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.cloudflare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dns-port", type=int)
    parser.add_argument("--auto-zones", action="store_true")
    args = parser.parse_args()
    token = os.environ.get("FAKE_CLOUDFLARE_TOKEN", "cf-test-token-0123456789abcdef")
    fake = FakeCloudflare(token, auto_zones=args.auto_zones)
    dns = FakeDns().start(args.dns_port) if args.dns_port else None
    if dns is not None:
        fake.serve_with(dns)
    fake.start(args.port)
    print(f"fake Cloudflare on {fake.url}" + (f", DNS on {dns.address}" if dns else ""), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
        if dns is not None:
            dns.stop()


if __name__ == "__main__":
    main()
