"""HTTP API of the billing service: Stripe checkout, Stripe webhooks, reconciliation and plan
changes.
"""

from fastapi import FastAPI
from libs.common.app import create_app

from libs.common.resources import Resources
from services.billing.settings import BillingSettings


def create_api(settings: BillingSettings | None = None) -> FastAPI:
    settings = settings or BillingSettings()
    resources = Resources(settings, schema="billing", vault=True)
    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=resources.lifespan,
        title="PenguinMails billing service",
    )
