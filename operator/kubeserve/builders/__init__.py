"""Pure builders: an InferenceService in; its children's manifests, the router's nginx.conf and
the text of its status URL and traffic split out. No API calls and no state here.
"""
