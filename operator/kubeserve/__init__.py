"""kubeserve: an InferenceService operator and the inference server it deploys."""

API_GROUP = "serving.kubeserve.dev"
API_VERSION = "v1alpha1"
KIND = "InferenceService"

__version__ = "0.1.0"
