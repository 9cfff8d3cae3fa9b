"""The InferenceService API: pydantic models of spec and status, validation, the CRD generator."""
