"""The mall service's settings (environment variables ``LOYALTY_MALL_*``), typed:
code reads them as ``settings_as(resources, MallSettings)``, never by ``getattr``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class MallSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_MALL_", extra="ignore")

    listen: str = "127.0.0.1:50054"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_mall"
    # How often reservations past their TTL are expired (their stock returns), and quiet
    # flash-sale gate counters are corrected to Postgres's figures (seconds).
    reservation_sweep_seconds: float = Field(default=1.0, gt=0)
    gate_reconcile_seconds: float = Field(default=5.0, gt=0)
