"""Settings of the gateway service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
