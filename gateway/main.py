"""Boot description of the gateway: its settings (including where the participants are), its two
gRPC services and its migrations (the saga log, keys and members live in its own database)."""

from pathlib import Path

from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc
from pydantic_settings import SettingsConfigDict

from gateway.api import AdminServicer, LoyaltyServicer
from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_GATEWAY_", extra="ignore")

    listen: str = "127.0.0.1:50051"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_gateway"
    # host:port of each participant service.
    points_addr: str = "127.0.0.1:50052"
    levels_addr: str = "127.0.0.1:50053"
    mall_addr: str = "127.0.0.1:50054"
    lottery_addr: str = "127.0.0.1:50055"
    risk_addr: str = "127.0.0.1:50056"


SERVICE = ServiceSpec(
    name="gateway",
    settings_type=GatewaySettings,
    registrations=[
        Registration(
            descriptor=loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"],
            add_to_server=loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server,
            make_servicer=LoyaltyServicer,
        ),
        Registration(
            descriptor=admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
            add_to_server=admin_pb2_grpc.add_AdminServiceServicer_to_server,
            make_servicer=AdminServicer,
        ),
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=True,
)
