"""Boot description of the risk service: its settings, gRPC service and migrations."""

from pathlib import Path

from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc
from pydantic_settings import SettingsConfigDict

from plumbing.server import Registration, ServiceSpec
from plumbing.settings import ServiceSettings
from services.risk.api import RiskServicer


class RiskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_RISK_", extra="ignore")

    listen: str = "127.0.0.1:50056"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/loyalty_risk"


SERVICE = ServiceSpec(
    name="risk",
    settings_type=RiskSettings,
    registrations=[
        Registration(
            descriptor=risk_pb2.DESCRIPTOR.services_by_name["RiskService"],
            add_to_server=risk_pb2_grpc.add_RiskServiceServicer_to_server,
            make_servicer=RiskServicer,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    needs_redis=True,
)
