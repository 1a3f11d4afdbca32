"""gRPC API of the gateway.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #7 builds the
member and admin APIs and the redemption saga; nothing here pretends to work."""

from loyalty.gateway.v1 import admin_pb2_grpc, loyalty_pb2_grpc

from plumbing.server import Resources


class LoyaltyServicer(loyalty_pb2_grpc.LoyaltyServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
