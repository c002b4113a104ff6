"""Fake Mailgun API: `POST /v3/{domain}/messages` (multipart/form-data, as Mailgun documents
it, or urlencoded, which it also takes; basic auth `api:<key>`; up to 1,000 `to` with
`recipient-variables`); 200 `{"id", "message"}`, 400 `{"message"}` for a missing field or bad
recipient-variables, 401 `Forbidden`, scripted 429/5xx. Parsed with python-multipart (through
Starlette's form parser); a request is logged as arrived before its body is parsed.
"""

from __future__ import annotations

import base64
import time
import uuid

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.esp_server import FakeEsp, run_standalone


class FakeMailgun(FakeEsp):
    def __init__(self, api_key: str = "mg-key") -> None:
        super().__init__()
        self.api_key = api_key

    def routes(self) -> list[Route]:
        return [Route("/v3/{domain}/messages", self.messages, methods=["POST"])]

    async def messages(self, request: Request) -> Response:
        await request.body()
        arrived = time.time()
        # Mailgun's limit is the message size (25 MB), not a field count.
        data = await request.form(max_fields=100_000, max_part_size=25 * 1024 * 1024)
        parsed = {k: [str(v) for v in data.getlist(k)] for k in data}
        to = parsed.get("to", [])
        form = {k: v[0] for k, v in parsed.items()}
        status = await self.gate(request, to, parsed, arrived=arrived)
        if status:
            return self.failure(status, {"message": "Scripted failure"})
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return PlainTextResponse("Forbidden", status_code=401)
        for required in ("from", "to", "subject"):
            if not form.get(required):
                return JSONResponse({"message": f"'{required}' parameter is missing"}, 400)
        if len(to) > 1000:
            return JSONResponse({"message": "Too many recipients"}, 400)
        if "recipient-variables" in form:
            try:
                orjson.loads(str(form["recipient-variables"]))
            except orjson.JSONDecodeError:
                return JSONResponse({"message": "recipient-variables parameter is not valid"}, 400)
        domain = request.path_params["domain"]
        return JSONResponse(
            {"id": f"<{uuid.uuid4().hex}@{domain}>", "message": "Queued. Thank you."}
        )


if __name__ == "__main__":
    run_standalone(FakeMailgun, "mailgun")
