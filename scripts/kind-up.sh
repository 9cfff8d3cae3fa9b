#!/usr/bin/env bash
# Bring kubeserve up on a local kind cluster and show a traffic split (`make kind-up`):
#   1. check the prerequisites (docker with a running engine, kind, kubectl, helm);
#   2. create the cluster from kind-config.yaml (or reuse it when it exists);
#   3. build the operator and server images and `kind load` them into the nodes;
#   4. `helm upgrade --install` the chart with those images, in namespaces that enforce the
#      restricted Pod Security Standard;
#   5. apply an InferenceService (examples/canary.yaml) and wait for its Ready condition;
#   6. call it REQUESTS times through its stable Service from a pod in the cluster and count
#      the x-kubeserve-variant response header: the split (and the override header at work).
#
# Settings (environment):
#   KIND_CLUSTER_NAME  cluster name                    (default: kubeserve)
#   KUBESERVE_TAG      tag of the images built here    (default: dev; not "latest", which
#                      would make the kubelet try to pull instead of using the loaded image)
#   EXAMPLE            InferenceService to apply        (default: examples/canary.yaml)
#   NAMESPACE          where to apply it               (default: default)
#   REQUESTS           requests for the split          (default: 200)
#   SKIP_BUILD=1       use images already built with KUBESERVE_TAG
#   ROUTER_IMAGE       the routers' nginx, preloaded into the nodes (default: the chart's)
#
# The last line it prints is machine-readable (tests/e2e reads it):
#   kubeserve-split: {"live": {"v1": 181, "v2": 19}, "forced": {"v2": 20}, "requests": 200}
# Tear down with scripts/kind-down.sh (`make kind-down`).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$PATH:$ROOT/.tools/bin"

CLUSTER="${KIND_CLUSTER_NAME:-kubeserve}"
TAG="${KUBESERVE_TAG:-dev}"
EXAMPLE="${EXAMPLE:-examples/canary.yaml}"
NAMESPACE="${NAMESPACE:-default}"
REQUESTS="${REQUESTS:-200}"
RELEASE=kubeserve
RELEASE_NAMESPACE=kubeserve-system
OPERATOR_IMAGE="kubeserve-operator:$TAG"
SERVER_IMAGE="kubeserve-server:$TAG"
# The chart's default router image (charts/kubeserve/values.yaml routerImage).
ROUTER_IMAGE="${ROUTER_IMAGE:-nginxinc/nginx-unprivileged:1.27-alpine}"
CONTEXT="kind-$CLUSTER"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

# 1. Prerequisites: say everything that is missing at once.
step "checking prerequisites"
missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker: install Docker Engine or Docker Desktop (https://docs.docker.com/engine/install/)")
command -v kind >/dev/null 2>&1 || missing+=("kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (e.g. go install sigs.k8s.io/kind@latest)")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl: https://kubernetes.io/docs/tasks/tools/ (or scripts/install-test-tools.sh, linux x86_64)")
command -v helm >/dev/null 2>&1 || missing+=("helm: https://helm.sh/docs/intro/install/ (or scripts/install-test-tools.sh, linux x86_64)")
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine: 'docker info' fails (start Docker, or check DOCKER_HOST and your permissions)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'kind-up: missing prerequisites:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
echo "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(kind version), kubectl $(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | head -1), helm $(helm version --short)"

diagnose() {
  # On failure: what a human would look at next.
  set +e
  echo "kind-up: failed; the cluster's state:" >&2
  kubectl --context "$CONTEXT" get nodes -o wide >&2
  kubectl --context "$CONTEXT" get infsvc,deploy,pods -A -o wide >&2
  kubectl --context "$CONTEXT" -n "$NAMESPACE" describe infsvc >&2
  kubectl --context "$CONTEXT" get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -30 >&2
  kubectl --context "$CONTEXT" -n "$RELEASE_NAMESPACE" logs deploy/"$RELEASE" --tail=60 >&2
}

# 2. The cluster.
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "reusing kind cluster $CLUSTER"
else
  step "creating kind cluster $CLUSTER from kind-config.yaml"
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
fi
trap diagnose ERR
kubectl --context "$CONTEXT" get nodes -L nvidia.com/gpu.product

# 3. Images, built from this working tree and loaded into every node.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "building $OPERATOR_IMAGE and $SERVER_IMAGE"
  docker build -f images/operator.Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f images/server.Dockerfile -t "$SERVER_IMAGE" .
fi
step "loading the images into the kind nodes"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$SERVER_IMAGE"
# The routers' nginx comes from Docker Hub. Loading it once spares every node a pull (and
# Docker Hub's rate limit); when that fails, the nodes pull it themselves.
if docker pull --quiet "$ROUTER_IMAGE" >/dev/null && kind load docker-image --name "$CLUSTER" "$ROUTER_IMAGE"; then
  echo "loaded $ROUTER_IMAGE"
else
  echo "kind-up: warning: could not preload $ROUTER_IMAGE; the nodes will pull it" >&2
fi

# 4. The chart, pointed at the loaded images (IfNotPresent: the nodes have them). Both
#    namespaces enforce the restricted Pod Security Standard, so the API server itself refuses
#    any pod of the operator, the model servers or the routers that would not meet it.
step "installing the chart (release $RELEASE in $RELEASE_NAMESPACE)"
for ns in "$RELEASE_NAMESPACE" "$NAMESPACE"; do
  kubectl --context "$CONTEXT" create namespace "$ns" --dry-run=client -o yaml \
    | kubectl --context "$CONTEXT" apply -f - >/dev/null
  kubectl --context "$CONTEXT" label namespace "$ns" --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
done
helm --kube-context "$CONTEXT" upgrade --install "$RELEASE" charts/kubeserve \
  --namespace "$RELEASE_NAMESPACE" --create-namespace \
  --set image.repository=kubeserve-operator --set-string image.tag="$TAG" \
  --set image.pullPolicy=IfNotPresent \
  --set serverImage.repository=kubeserve-server --set-string serverImage.tag="$TAG" \
  --set operator.logFormat=plain \
  --set routerImage.repository="${ROUTER_IMAGE%:*}" --set-string routerImage.tag="${ROUTER_IMAGE##*:}" \
  --wait --timeout 5m
kubectl --context "$CONTEXT" -n "$RELEASE_NAMESPACE" rollout status deploy/"$RELEASE" --timeout=120s

# 5. The InferenceService, and its Ready condition.
step "applying $EXAMPLE in namespace $NAMESPACE"
applied="$(kubectl --context "$CONTEXT" -n "$NAMESPACE" apply -f "$EXAMPLE" -o name)"
echo "$applied"
name="${applied##*/}"
step "waiting for inferenceservice/$name to be Ready"
kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=Ready "inferenceservice/$name" --timeout=300s
kubectl --context "$CONTEXT" -n "$NAMESPACE" get inferenceservice "$name"
kubectl --context "$CONTEXT" -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$name" -o wide

# 6. The split, seen from a client pod through the stable Service (its ClusterIP, via DNS).
# The client runs in the server image (already on the nodes, has Python): nothing to pull.
url="http://$name.$NAMESPACE.svc.cluster.local/v1/models/$name:predict"
step "calling $url $REQUESTS times from a pod"
client="kubeserve-split-check"
kubectl --context "$CONTEXT" -n "$NAMESPACE" delete pod "$client" --ignore-not-found --wait=true >/dev/null
# The restricted profile applies to this pod too.
restricted='{"apiVersion": "v1", "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "'"$client"'", "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}}]}}'
kubectl --context "$CONTEXT" -n "$NAMESPACE" run "$client" --image="$SERVER_IMAGE" \
  --image-pull-policy=IfNotPresent --restart=Never --labels=app.kubernetes.io/name=kubeserve-split-check \
  --override-type=strategic --overrides="$restricted" \
  --env=URL="$url" --env=REQUESTS="$REQUESTS" --command -- python -c '
import collections, json, os, urllib.request
url, n = os.environ["URL"], int(os.environ["REQUESTS"])
body = json.dumps({"instances": [[0.0] * 64]}).encode()
def call(headers):
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return resp.headers.get("x-kubeserve-variant", "?")
live = collections.Counter(call({}) for _ in range(n))
forced = collections.Counter(call({"x-kubeserve-variant": "v2"}) for _ in range(20))
print("kubeserve-split: " + json.dumps({"live": dict(sorted(live.items())), "forced": dict(forced), "requests": n}))
'
phase=""
for _ in $(seq 90); do
  phase="$(kubectl --context "$CONTEXT" -n "$NAMESPACE" get pod "$client" -o jsonpath='{.status.phase}')"
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 2
done
if [ "$phase" != Succeeded ]; then
  kubectl --context "$CONTEXT" -n "$NAMESPACE" logs "pod/$client" >&2 || true
  die "the client pod $client ended in phase '${phase:-unknown}'"
fi
result="$(kubectl --context "$CONTEXT" -n "$NAMESPACE" logs "pod/$client" | grep '^kubeserve-split: ')"
kubectl --context "$CONTEXT" -n "$NAMESPACE" delete pod "$client" --wait=false >/dev/null
trap - ERR

step "done: $name serves through service/$name in namespace $NAMESPACE"
cat <<EOF
Responses by the variant that served them (x-kubeserve-variant), $REQUESTS live requests, then
20 with the request header 'x-kubeserve-variant: v2':
  $(printf '%s' "${result#kubeserve-split: }")
Try it yourself:
  kubectl --context $CONTEXT -n $NAMESPACE port-forward service/$name 8080:80 &
  curl -si localhost:8080/v1/models/$name:predict -H 'content-type: application/json' -d '{"instances": [[$(printf '0,%.0s' {1..63})0]]}'
Tear down: scripts/kind-down.sh (make kind-down)
EOF
echo "$result"
