"""Give Services their cluster IPs and IP families, as the Service registry does.

A single-stack IPv4 cluster with the service range 10.96.0.0/12 (kubeadm's and kind's
default). The rules follow `pkg/registry/core/service/storage/alloc.go`
(`initIPFamilyFields`, `allocClusterIPs`) and `rest.go` (`patchAllocatedValues`):

- ipFamilyPolicy defaults to SingleStack, but RequireDualStack for a headless Service
  without a selector; an update that leaves it out keeps the old one;
- ipFamilies default to the cluster's family (IPv4), plus IPv6 for a headless Service whose
  policy is not SingleStack;
- clusterIP and clusterIPs are allocated unless given, `None` (headless) or the type is
  ExternalName; an update that leaves them out keeps the allocated ones, and one that
  changes them is refused: `spec.clusterIPs[0]` is immutable.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

# 10.96.0.1 is the `kubernetes` Service and 10.96.0.10 kube-dns in a kubeadm cluster.
_FIRST_FREE = 11
_RANGE = ipaddress.ip_network("10.96.0.0/12")


class InvalidService(ValueError):
    """An update the Service registry refuses (the API server answers 422 Invalid)."""


class ClusterIPs:
    """Cluster IPs handed out so far, in order; freed ones are not reused (nor are they soon)."""

    def __init__(self) -> None:
        self._next = itertools.count(_FIRST_FREE)

    def _allocate(self) -> str:
        return str(_RANGE[next(self._next)])

    def assign(self, service: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Fill in a Service's IP fields in place, keeping what `old` was given."""
        spec = service.setdefault("spec", {})
        if spec.get("type") == "ExternalName":
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(key, None)
            return
        old_spec = (old or {}).get("spec") or {}
        if old_spec.get("clusterIP"):
            if spec.get("clusterIP") and spec["clusterIP"] != old_spec["clusterIP"]:
                raise InvalidService(
                    f"spec.clusterIPs[0]: Invalid value: {spec['clusterIP']!r}: "
                    "may not change once set"
                )
            # rest.go patchAllocatedValues: an update that leaves them out keeps them.
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in old_spec and not spec.get(key):
                    spec[key] = old_spec[key]
        headless = spec.get("clusterIP") == "None"
        if not spec.get("ipFamilyPolicy"):
            selectorless = headless and not spec.get("selector")
            spec["ipFamilyPolicy"] = "RequireDualStack" if selectorless else "SingleStack"
        families = spec.get("ipFamilies") or ["IPv4"]
        if headless and spec["ipFamilyPolicy"] != "SingleStack" and families == ["IPv4"]:
            families = ["IPv4", "IPv6"]
        spec["ipFamilies"] = families
        if not spec.get("clusterIP"):
            spec["clusterIP"] = self._allocate()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
