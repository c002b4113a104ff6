"""Settings of the delivery service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class DeliverySettings(ServiceSettings):
    service_name: str = "delivery"
    database_url: str = "postgresql://pm_delivery@127.0.0.1:5432/pm"
