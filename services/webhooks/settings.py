"""Settings of the webhooks service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class WebhooksSettings(ServiceSettings):
    service_name: str = "webhooks"
    database_url: str = "postgresql://pm_webhooks@127.0.0.1:5432/pm"
