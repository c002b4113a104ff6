"""Settings of the keys service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class KeysSettings(ServiceSettings):
    service_name: str = "keys"
    database_url: str = "postgresql://pm_keys@127.0.0.1:5432/pm"
