"""Fake Postmark API: `POST /email`, `POST /email/batch` (max 500), `GET /server`; checks
`X-Postmark-Server-Token`; answers like Postmark (200 with MessageID, 422 ErrorCode 300 for
an invalid request, per-message ErrorCode in batches, 401 ErrorCode 10, scripted 429/5xx).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.esp_server import FakeEsp, run_standalone

INVALID_DOMAIN = "rejected.example.com"  # recipients here get ErrorCode 300, like a malformed To


class FakePostmark(FakeEsp):
    def __init__(self, token: str = "pm-server-token") -> None:
        super().__init__()
        self.token = token

    def routes(self) -> list[Route]:
        return [
            Route("/email", self.email, methods=["POST"]),
            Route("/email/batch", self.batch, methods=["POST"]),
            Route("/server", self.server, methods=["GET"]),
        ]

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("x-postmark-server-token") != self.token:
            return JSONResponse(
                {"ErrorCode": 10, "Message": "Bad or missing Server API token."}, status_code=401
            )
        return None

    @staticmethod
    def _answer(m: dict[str, Any]) -> dict[str, Any]:
        to = str(m.get("To", ""))
        if not to or "@" not in to or to.endswith("@" + INVALID_DOMAIN) or not m.get("From"):
            return {"ErrorCode": 300, "Message": f"Invalid 'To' address: '{to}'."}
        return {
            "To": to,
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": str(uuid.uuid4()),
            "ErrorCode": 0,
            "Message": "OK",
        }

    async def server(self, request: Request) -> Response:
        return self._auth(request) or JSONResponse({"ID": 1, "Name": "fake"})

    async def email(self, request: Request) -> Response:
        m = orjson.loads(await request.body())
        status = await self.gate(request, [m.get("To", "")], m)
        if status:
            return self.failure(status, {"ErrorCode": 0, "Message": "Scripted failure"})
        if (denied := self._auth(request)) is not None:
            return denied
        answer = self._answer(m)
        return JSONResponse(answer, status_code=422 if answer["ErrorCode"] else 200)

    async def batch(self, request: Request) -> Response:
        msgs = orjson.loads(await request.body())
        status = await self.gate(request, [m.get("To", "") for m in msgs], msgs)
        if status:
            return self.failure(status, {"ErrorCode": 0, "Message": "Scripted failure"})
        if (denied := self._auth(request)) is not None:
            return denied
        if len(msgs) > 500:
            return JSONResponse({"ErrorCode": 300, "Message": "Too many messages"}, 422)
        return JSONResponse([self._answer(m) for m in msgs])


if __name__ == "__main__":
    run_standalone(FakePostmark, "postmark")
