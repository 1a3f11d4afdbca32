"""Boot description of the levels service: its settings, gRPC service and migrations."""

from pathlib import Path

from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings
from services.levels.api import LevelsServicer
from services.levels.jobs import tier_judge


class LevelsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_LEVELS_", extra="ignore")

    listen: str = "127.0.0.1:50053"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_levels"
    # How often members whose period ended or whose program changed are judged again.
    tier_sweep_seconds: float = Field(default=60.0, gt=0)
    # How often leaderboards that missed writes while Redis was away are rebuilt.
    board_repair_seconds: float = Field(default=10.0, gt=0)


SERVICE = ServiceSpec(
    name="levels",
    settings_type=LevelsSettings,
    registrations=[
        Registration(
            descriptor=levels_pb2.DESCRIPTOR.services_by_name["LevelsService"],
            add_to_server=levels_pb2_grpc.add_LevelsServiceServicer_to_server,
            make_servicer=LevelsServicer,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=True,
    background=[tier_judge],
)
