"""Boot description of the lottery service: its settings, gRPC service and migrations."""

from pathlib import Path

from loyalty.lottery.v1 import lottery_pb2, lottery_pb2_grpc
from pydantic_settings import SettingsConfigDict

from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings
from services.lottery.api import LotteryServicer


class LotterySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_LOTTERY_", extra="ignore")

    listen: str = "127.0.0.1:50055"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_lottery"


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
