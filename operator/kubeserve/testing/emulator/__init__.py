"""A Kubernetes API emulator for integration tests, built on PyPI kmock's scaffold.

kmock 0.8's KubernetesEmulator stores objects as plain dicts. The operator needs what the
real API server guarantees: uids, resourceVersions, generations, the status subresource,
label and field selectors, watches that resume from a resourceVersion, generateName,
owner-reference garbage collection, optimistic concurrency, JSON and merge patches, and
that what a client reads back is what the API server made of what it sent: defaults filled
in, quantities canonical, empty fields dropped, CRD schemas applied, managedFields recorded.
This package keeps that contract for the calls kubeserve makes, over an indexed store whose
cost per call does not grow with the number of objects.
"""

from kubeserve.testing.emulator.server import ApiServerEmulator, EmulatorThread

__all__ = ["ApiServerEmulator", "EmulatorThread"]
