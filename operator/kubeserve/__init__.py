"""kubeserve: an InferenceService operator and the inference server it deploys."""

API_GROUP = "serving.kubeserve.dev"
API_VERSION = "v1alpha1"
KIND = "InferenceService"
# The resource name in API paths; `cluster.INFERENCE_SERVICE` is the Kind built from these.
PLURAL = "inferenceservices"

__version__ = "0.1.0"
