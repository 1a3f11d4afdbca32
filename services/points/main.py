"""Boot description of the points service: its settings, gRPC service and migrations."""

from pathlib import Path

from loyalty.points.v1 import points_pb2, points_pb2_grpc
from pydantic_settings import SettingsConfigDict

from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings
from services.points.api import PointsServicer
from services.points.jobs import expiry_sweeper, hold_reaper


class PointsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_POINTS_", extra="ignore")

    listen: str = "127.0.0.1:50052"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_points"
    # How often live holds past their TTL are released, and due lots expired (seconds).
    hold_sweep_seconds: float = 1.0
    expiry_sweep_seconds: float = 60.0


SERVICE = ServiceSpec(
    name="points",
    settings_type=PointsSettings,
    registrations=[
        Registration(
            descriptor=points_pb2.DESCRIPTOR.services_by_name["PointsService"],
            add_to_server=points_pb2_grpc.add_PointsServiceServicer_to_server,
            make_servicer=PointsServicer,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=False,
    background=[hold_reaper, expiry_sweeper],
)
