"""Builds the connector for a provider name with its credentials."""

from __future__ import annotations

from typing import Any

import httpx

from services.delivery.connectors.base import Connector
from services.delivery.connectors.mailgun import MailgunConnector
from services.delivery.connectors.postmark import PostmarkConnector
from services.delivery.connectors.sandbox import SandboxConnector
from services.delivery.connectors.sendgrid import SendGridConnector
from services.delivery.connectors.ses import SesConnector
from services.delivery.connectors.smtp import SmtpConnector
from services.delivery.settings import DeliverySettings

PROVIDERS = ("postmark", "mailgun", "sendgrid", "ses", "smtp", "sandbox")


def build_connector(
    provider: str, credentials: dict[str, Any], client: httpx.AsyncClient, s: DeliverySettings
) -> Connector:
    if provider == "postmark":
        return PostmarkConnector(credentials, client, s.postmark_base_url)
    if provider == "mailgun":
        return MailgunConnector(credentials, client, s.mailgun_base_url)
    if provider == "sendgrid":
        return SendGridConnector(credentials, client, s.sendgrid_base_url)
    if provider == "ses":
        return SesConnector(
            credentials, client, s.ses_base_url, s.sns_cert_url_pattern, s.sns_topic_arns
        )
    if provider == "smtp":
        return SmtpConnector(credentials, client, s.provider_timeout_seconds)
    if provider == "sandbox":
        return SandboxConnector(credentials, client, s.sandbox_dir)
    raise ValueError(f"unknown provider {provider!r}")
