"""Boot description of the mall service: its settings, gRPC service and migrations."""

from pathlib import Path

from loyalty.mall.v1 import mall_pb2, mall_pb2_grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings
from services.mall.api import MallServicer
from services.mall.jobs import gate_reconciler, reservation_reaper


class MallSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_MALL_", extra="ignore")

    listen: str = "127.0.0.1:50054"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_mall"
    # How often reservations past their TTL are expired (their stock returns), and quiet
    # flash-sale gate counters are corrected to Postgres's figures (seconds).
    reservation_sweep_seconds: float = Field(default=1.0, gt=0)
    gate_reconcile_seconds: float = Field(default=5.0, gt=0)


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
