"""HTTP API of the campaigns service: contacts, templates, campaigns with sequences and schedules,
and analytics read models.
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.campaigns.settings import CampaignsSettings


def create_api(settings: CampaignsSettings | None = None) -> FastAPI:
    settings = settings or CampaignsSettings()
    resources = Resources(settings, schema="campaigns")
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails campaigns service",
    )
