"""Names: the DNS label rules for user-given names and the names of every derived object.

Every child object's name is derived here and nowhere else, so the length budget that keeps
them valid Kubernetes names (63 characters for Services and label values) is checked in one
place.
"""

from __future__ import annotations

import re

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1035_LABEL_RE = re.compile(DNS1035_LABEL)
MAX_LABEL = 63

# The router's objects are named `<isvc>-router`, so this suffix is the longest one an
# InferenceService name must leave room for, and no variant may be called `router`.
ROUTER_SUFFIX = "router"
RESERVED_VARIANT_NAMES = frozenset({ROUTER_SUFFIX})
MAX_SERVICE_NAME = MAX_LABEL - len(ROUTER_SUFFIX) - 1
# A variant name this short fits beside any valid InferenceService name.
FITS_BESIDE_ANY_NAME = MAX_LABEL - MAX_SERVICE_NAME - 1


def dns1035_problem(value: str) -> str | None:
    """Say why `value` is not a DNS-1035 label, or None when it is one."""
    if len(value) > MAX_LABEL:
        return f"must be at most {MAX_LABEL} characters (has {len(value)})"
    return dns1035_form_problem(value)


def dns1035_form_problem(value: str) -> str | None:
    """Say why `value` is not of the form of a DNS-1035 label, whatever its length."""
    if not value:
        return "must not be empty"
    if not DNS1035_LABEL_RE.match(value):
        return (
            f"{value!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
            "start with a letter and end with a letter or digit"
        )
    return None


def variant_object_name(service: str, variant: str) -> str:
    """Name the Deployment, Service, HPA and PDB of one variant."""
    return f"{service}-{variant}"


def router_object_name(service: str) -> str:
    """Name the router's Deployment and ConfigMap (its Service carries the bare name)."""
    return f"{service}-{ROUTER_SUFFIX}"
