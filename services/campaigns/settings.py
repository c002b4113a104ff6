"""Settings of the campaigns service (environment variables with the PM_ prefix)."""

from libs.common.settings import ServiceSettings


class CampaignsSettings(ServiceSettings):
    service_name: str = "campaigns"
    database_url: str = "postgresql://pm_campaigns@127.0.0.1:5432/pm"

    # Contact import: rows per call, and the request body cap that goes with it.
    import_max_rows: int = 50_000
    import_max_bytes: int = 64 * 1024 * 1024

    # Campaign runner: recipient steps claimed per transaction, and how often an idle runner
    # looks for due work (pausing takes effect at the next claim, so within this bound).
    runner_batch_size: int = 500
    runner_idle_seconds: float = 0.5
