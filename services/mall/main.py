"""Boot description of the mall service: its gRPC service, settings, jobs and migrations."""

from pathlib import Path

from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc

from plumbing.server import Registration, ServiceSpec
from services.mall.api import MallServicer
from services.mall.jobs import gate_reconciler, reservation_reaper
from services.mall.settings import MallSettings

SERVICE = ServiceSpec(
    name="mall",
    settings_type=MallSettings,
    registrations=[
        Registration(
            descriptor=mall_pb2.DESCRIPTOR.services_by_name["MallService"],
            add_to_server=mall_pb2_grpc.add_MallServiceServicer_to_server,
            make_servicer=MallServicer,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=True,
    background=[reservation_reaper, gate_reconciler],
)

__all__ = ["SERVICE", "MallSettings"]
