"""Validate manifests against the official Kubernetes OpenAPI schemas (PyPI kubernetes-validate)."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
from kubernetes_validate import utils

# The oldest Kubernetes kubeserve supports and the newest the package knows.
VERSIONS = ("1.30", utils.latest_version())

# The package re-reads its JSON schema files on every call; the files never change.
utils.schema_contents = functools.cache(utils.schema_contents)


def problems(obj: dict[str, Any]) -> list[str]:
    """List why `obj` fails the strict official schema of each supported version."""
    found = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            found.append(
                f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} @ {version}: {path}: {exc.message}"
            )
    return found


def assert_valid(obj: dict[str, Any]) -> None:
    """Fail with every schema problem of `obj`, or pass silently."""
    found = problems(obj)
    assert not found, "\n".join(found)
