"""The points service's settings (environment variables ``LOYALTY_POINTS_*``), typed:
code reads them as ``settings_as(resources, PointsSettings)``, never by ``getattr``."""

from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class PointsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_POINTS_", extra="ignore")

    listen: str = "127.0.0.1:50052"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_points"
    # How often live holds past their TTL are released, and due lots expired (seconds).
    hold_sweep_seconds: float = 1.0
    expiry_sweep_seconds: float = 60.0
    # How often pending points whose window has passed are released (a sandbox app's
    # AdvanceClock releases them at once).
    pending_sweep_seconds: float = 5.0
