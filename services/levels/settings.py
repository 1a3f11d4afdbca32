"""The levels service's settings (environment variables ``LOYALTY_LEVELS_*``), typed:
code reads them as ``settings_as(resources, LevelsSettings)``, never by ``getattr``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from plumbing.settings import ServiceSettings


class LevelsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_LEVELS_", extra="ignore")

    listen: str = "127.0.0.1:50053"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_levels"
    # How often members whose period ended or whose program changed are judged again.
    tier_sweep_seconds: float = Field(default=60.0, gt=0)
    # How often leaderboards that missed writes while Redis was away are rebuilt.
    board_repair_seconds: float = Field(default=10.0, gt=0)
