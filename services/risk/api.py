"""gRPC API of the risk service: protobuf in, domain calls, protobuf out.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #6
builds the service; nothing here pretends to work."""

from loyalty.risk.v1 import risk_pb2_grpc

from plumbing.server import Resources


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
