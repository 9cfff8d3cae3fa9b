"""The kubeserve inference server: one model, its versions, KServe V1 and Open Inference V2.

Layers, lowest first; a layer imports only the ones below it:

- ``errors``, ``tensors``, ``model``: wire-independent types (errors with a status, the V2
  datatype table and tensor codec, the small ``Model`` interface every runtime implements);
- ``runtimes``: ONNX Runtime and scikit-learn behind ``Model``; ``repository`` finds versions;
- ``metrics``, ``batching``, ``dataplane``: protocol logic, knows nothing of HTTP;
- ``http``: the transport, maps bytes on a socket to data-plane calls and errors to codes;
- ``serve``, ``fetch``, ``cli``: process wiring and the two commands the operator runs.
"""
