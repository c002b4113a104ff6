"""HTTP API of the keys service: tenants, users, login and API keys (hashes in Vault, metadata in
the keys schema).
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.keys.settings import KeysSettings


def create_api(settings: KeysSettings | None = None) -> FastAPI:
    settings = settings or KeysSettings()
    resources = Resources(settings, schema="keys", redis=True, vault=True)
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails keys service",
    )
