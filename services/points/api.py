"""gRPC API of the points service: protobuf in, domain calls, protobuf out.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #3
builds the service; nothing here pretends to work."""

from loyalty.points.v1 import points_pb2_grpc

from plumbing.server import Resources


class PointsServicer(points_pb2_grpc.PointsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
