"""HTTP API of the gateway service: the public entry point: authenticates API keys and JWTs,
enforces scopes, rate-limits, honours idempotency keys and forwards to the owning service.
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.gateway.settings import GatewaySettings


def create_api(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    resources = Resources(settings, schema=None, redis=True)
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails gateway service",
    )
