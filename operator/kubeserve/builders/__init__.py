"""Pure builders: an InferenceService in, the manifests of its children out. No I/O here."""
