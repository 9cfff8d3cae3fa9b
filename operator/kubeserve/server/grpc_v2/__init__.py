"""The Open Inference Protocol's gRPC messages, generated from the vendored ``.proto``.

``open_inference_grpc_pb2`` is protoc's output, committed (``generate`` remakes it; README.md
beside it names the source). ``kubeserve.server.grpc_server`` serves the service it describes.
"""
