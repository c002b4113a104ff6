"""Settings of the billing service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class BillingSettings(ServiceSettings):
    service_name: str = "billing"
    database_url: str = "postgresql://pm_billing@127.0.0.1:5432/pm"
