"""Boot description of the risk service: its gRPC service, settings, jobs and migrations."""

from pathlib import Path

from loyalty.risk.v1 import risk_pb2, risk_pb2_grpc

from plumbing.server import Registration, ServiceSpec
from services.risk.api import RiskServicer
from services.risk.settings import RiskSettings

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

__all__ = ["SERVICE", "RiskSettings"]
