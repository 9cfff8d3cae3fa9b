"""Tools for kubeserve's tests and benchmarks: a Kubernetes API emulator, a small client for
it, the operator as a child process, and the nginx router run on loopback.

They live in the package (as `kopf.testing` does in kopf) so that the test suite and the
benchmarks share one copy without editing `sys.path`. They need the `test` extra
(kmock, requests); nothing else in kubeserve imports them.
"""
