#!/usr/bin/env bash
# Delete the kind cluster of scripts/kind-up.sh (`make kind-down`), with everything in it.
#   KIND_CLUSTER_NAME  cluster name (default: kubeserve)
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-kubeserve}"
if ! command -v kind >/dev/null 2>&1; then
  echo "kind-down: kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)" >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "kind-down: no kind cluster named $CLUSTER; nothing to do"
fi
