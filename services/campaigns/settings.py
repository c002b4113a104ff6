"""Settings of the campaigns service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class CampaignsSettings(ServiceSettings):
    service_name: str = "campaigns"
    database_url: str = "postgresql://pm_campaigns@127.0.0.1:5432/pm"
