"""The local run: what an InferenceService describes, on this machine, without a cluster."""
