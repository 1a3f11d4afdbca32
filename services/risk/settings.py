"""The risk service's settings (environment variables ``LOYALTY_RISK_*``), typed:
code reads them as ``settings_as(resources, RiskSettings)``, never by ``getattr``."""

from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class RiskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_RISK_", extra="ignore")

    listen: str = "127.0.0.1:50056"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_risk"
