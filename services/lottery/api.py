"""gRPC API of the lottery service: protobuf in, domain calls, protobuf out.

Every RPC answers UNIMPLEMENTED (inherited from the generated base) until issue #8
builds the service; nothing here pretends to work."""

from loyalty.lottery.v1 import lottery_pb2_grpc

from plumbing.server import Resources


class LotteryServicer(lottery_pb2_grpc.LotteryServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
