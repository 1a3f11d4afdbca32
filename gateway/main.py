"""Boot description of the gateway: its settings (including where the participants are), its two
gRPC services and its migrations (the saga log, keys and members live in its own database)."""

from pathlib import Path

from loyalty.gateway.v1 import admin_pb2, admin_pb2_grpc, loyalty_pb2, loyalty_pb2_grpc

from gateway.admin_api import AdminServicer
from gateway.member_api import LoyaltyServicer
from gateway.referrals import referral_payer
from gateway.saga.recovery import recovery_loop
from gateway.settings import GatewaySettings
from plumbing.server import Registration, ServiceSpec

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
    background=[recovery_loop, referral_payer],
)
