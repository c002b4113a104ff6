"""HTTP API of the webhooks service: customer endpoints and the signed, retried fan-out of events
to them.
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.webhooks.settings import WebhooksSettings


def create_api(settings: WebhooksSettings | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    resources = Resources(settings, schema="webhooks", vault=True)
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails webhooks service",
    )
