"""HTTP API of the delivery service: every message's lifecycle: sending through ESPs, tracking,
bounces and suppression.
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.delivery.settings import DeliverySettings


def create_api(settings: DeliverySettings | None = None) -> FastAPI:
    settings = settings or DeliverySettings()
    resources = Resources(settings, schema="delivery", redis=True, vault=True)
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails delivery service",
    )
