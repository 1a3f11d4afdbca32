"""gRPC API of the levels service: protobuf in, domain calls, protobuf out.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #4
builds the service; nothing here pretends to work."""

from loyalty.levels.v1 import levels_pb2_grpc

from plumbing.server import Resources


class LevelsServicer(levels_pb2_grpc.LevelsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
