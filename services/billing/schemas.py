"""Request and response models of the billing API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from libs.common.http import ResponseModel
from services.billing.catalog import PlanId


class CheckoutSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId


class PortalSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckoutSessionOut(ResponseModel):
    id: str
    url: str
    plan_id: str
    expires_at: datetime | None


class PortalSessionOut(ResponseModel):
    url: str
    return_url: str


class SubscriptionOut(ResponseModel):
    id: str
    plan_id: str | None
    status: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    created_at: datetime


class BillingStateOut(ResponseModel):
    plan: str
    mode: str
    subscription: SubscriptionOut | None


class PaymentOut(ResponseModel):
    id: str
    subscription_id: str | None
    status: str
    amount_due: int
    amount_paid: int
    currency: str
    attempt_count: int
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None
    period_start: datetime | None
    period_end: datetime | None
    paid_at: datetime | None
    created_at: datetime


class PlanOut(ResponseModel):
    id: str
    name: str
    monthly_amount: int
    currency: str
    requests_per_minute: int
    purchasable: bool


class WebhookReceipt(ResponseModel):
    received: bool
    event_id: str
    duplicate: bool
