"""The operator: reconcile InferenceServices into their children and report their status."""
