"""Boot description of the points service: its gRPC service, settings, jobs and migrations."""

from pathlib import Path

from loyalty.points.v1 import points_pb2, points_pb2_grpc

from plumbing.server import Registration, ServiceSpec
from services.points.api import PointsServicer
from services.points.jobs import expiry_sweeper, hold_reaper, pending_releaser
from services.points.settings import PointsSettings

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
    background=[hold_reaper, expiry_sweeper, pending_releaser],
)

__all__ = ["SERVICE", "PointsSettings"]
