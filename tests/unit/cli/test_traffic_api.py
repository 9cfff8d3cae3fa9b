"""The traffic commands through `cluster.Cluster` and the real client, against a stand-in API.

The stand-in speaks just enough of the API for the two calls: GET of one InferenceService and
PATCH with `application/json-patch+json`, applying the patch (test operations included) and
answering a failed test as the API server does: 422, a general message, the reason in a cause.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import kubernetes
import pytest
import yaml

from kubeserve import cli, cluster, traffic, traffic_cli
from support.traffic_cases import apply_json_patch, three

PATH = "/apis/serving.kubeserve.dev/v1alpha1/namespaces/default/inferenceservices/digits"


class StandIn(BaseHTTPRequestHandler):
    obj: ClassVar[dict[str, Any]] = {}
    content_types: ClassVar[list[str]] = []

    def log_message(self, *_: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != PATH:
            self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return
        self._send(200, StandIn.obj)

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        StandIn.content_types.append(self.headers["Content-Type"])
        try:
            new = apply_json_patch(StandIn.obj, body)
        except ValueError:
            # What the API server (k8s.io/apiserver, patch.go) answers to a failed `test`.
            self._send(
                422,
                {
                    "kind": "Status",
                    "code": 422,
                    "reason": "Invalid",
                    "message": "the server rejected our request due to an error in our request",
                    "details": {
                        "causes": [
                            {
                                "reason": "UnexpectedServerResponse",
                                "message": "testing value /metadata/resourceVersion failed: "
                                "test failed",
                            }
                        ]
                    },
                },
            )
            return
        new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
        StandIn.obj = new
        self._send(200, new)


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[StandIn]]:
    StandIn.obj, StandIn.content_types = three(), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "ctx", "context": {"cluster": "c", "user": "u"}},
            {"name": "ml", "context": {"cluster": "c", "user": "u", "namespace": "ml"}},
        ],
        "current-context": "ctx",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield StandIn
    server.shutdown()


def test_commands_patch_through_the_cluster_module(
    api_server: type[StandIn], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["traffic", "digits", "v1=50,v2=50"]) == 0
    assert traffic.summary(api_server.obj) == "v1=50,v2=50,v3=mirror20%"
    assert api_server.content_types == [cluster.JSON_PATCH]
    assert cli.main(["rollback", "digits"]) == 0
    assert traffic.summary(api_server.obj) == "v1=90,v2=10,v3=mirror20%"
    assert "v1=50,v2=50,v3=mirror20% -> v1=90,v2=10,v3=mirror20%" in capsys.readouterr().out


def test_a_failed_test_operation_is_a_conflict(api_server: type[StandIn]) -> None:
    client = cluster.Cluster.from_environment()
    obj = client.get(cluster.INFERENCE_SERVICE, "default", "digits")
    assert obj is not None
    stale = copy.deepcopy(obj)
    stale["metadata"]["resourceVersion"] = "1"
    ops = traffic.json_patch(stale, traffic.promote(stale, "v2"))
    with pytest.raises(cluster.Conflict) as info:
        client.json_patch(cluster.INFERENCE_SERVICE, "default", "digits", ops)
    assert "testing value /metadata/resourceVersion failed" in str(info.value)
    with pytest.raises(traffic_cli.ConflictError):
        traffic_cli.ClusterApi(client).patch("default", "digits", ops)
    assert traffic.summary(api_server.obj) == "v1=90,v2=10,v3=mirror20%"


def test_a_missing_object_says_not_found(
    api_server: type[StandIn], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["promote", "nope", "v2"]) == 1
    assert "kubeserve promote: nope: not found in namespace 'default'" in capsys.readouterr().err


def test_the_namespace_defaults_to_the_contexts(
    api_server: type[StandIn], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cluster.Cluster.from_environment().default_namespace == "default"
    assert cluster.Cluster.from_environment(context="ml").default_namespace == "ml"
    # The stand-in only has default/digits, so the context's namespace shows in the error.
    assert cli.main(["promote", "digits", "v2", "--context", "ml"]) == 1
    assert "not found in namespace 'ml'" in capsys.readouterr().err


def test_in_a_pod_the_namespace_is_the_pods_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "ca.crt").write_text("not checked before a call")
    (account / "namespace").write_text("team-a\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    incluster = kubernetes.config.incluster_config
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_NAMESPACE", str(account / "namespace"))
    assert cluster.Cluster.from_environment().default_namespace == "team-a"
    (account / "namespace").unlink()
    assert cluster.Cluster.from_environment().default_namespace == "default"


def test_no_cluster_configured_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["rollback", "digits"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubeserve rollback: digits: no cluster configured:")
    assert "Traceback" not in err
