"""Boot description of the lottery service: its gRPC service, settings, jobs and migrations."""

from pathlib import Path

from loyalty.lottery.v1 import lottery_pb2, lottery_pb2_grpc

from plumbing.server import Registration, ServiceSpec
from services.lottery.api import LotteryServicer
from services.lottery.settings import LotterySettings

SERVICE = ServiceSpec(
    name="lottery",
    settings_type=LotterySettings,
    registrations=[
        Registration(
            descriptor=lottery_pb2.DESCRIPTOR.services_by_name["LotteryService"],
            add_to_server=lottery_pb2_grpc.add_LotteryServiceServicer_to_server,
            make_servicer=LotteryServicer,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=False,
)

__all__ = ["SERVICE", "LotterySettings"]
