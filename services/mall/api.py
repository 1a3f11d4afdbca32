"""gRPC API of the mall service: protobuf in, domain calls, protobuf out.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #5
builds the service; nothing here pretends to work."""

from loyalty.mall.v1 import mall_pb2_grpc

from plumbing.server import Resources


class MallServicer(mall_pb2_grpc.MallServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
