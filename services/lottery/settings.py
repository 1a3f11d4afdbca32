"""The lottery service's settings (environment variables ``LOYALTY_LOTTERY_*``), typed:
code reads them as ``settings_as(resources, LotterySettings)``, never by ``getattr``."""

from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class LotterySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_LOTTERY_", extra="ignore")

    listen: str = "127.0.0.1:50055"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_lottery"
