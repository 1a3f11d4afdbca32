"""Boot description of the levels service: its gRPC service, settings, jobs and migrations."""

from pathlib import Path

from loyalty.levels.v1 import levels_pb2, levels_pb2_grpc

from plumbing.server import Registration, ServiceSpec
from services.levels.api import LevelsServicer
from services.levels.jobs import tier_judge
from services.levels.settings import LevelsSettings

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

__all__ = ["SERVICE", "LevelsSettings"]
