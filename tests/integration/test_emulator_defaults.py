"""The emulator defaults, normalises and records writes as kube-apiserver does.

Each rule names its Kubernetes source in operator/kubeserve/testing/emulator/: a client of
the emulator must read back what a client of a real API server reads back.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import requests

from kubeserve.testing.emulator import EmulatorThread
from kubeserve.testing.emulator.quantity import MILLI, QuantityError, canonical
from kubeserve.testing.emulator.store import ApiError, Store
from support.emulator_kinds import (
    CM,
    DEP,
    HPA,
    ISVC,
    JSON_PATCH,
    MERGE,
    NS,
    PDB,
    POD,
    ROUTE,
    SVC,
    store_with_namespace,
)


@pytest.fixture()
def store() -> Store:
    return store_with_namespace()


def deployment(name: str = "d", **pod_spec: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": "registry.example/app:1.0"}], **pod_spec}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def isvc(**spec: Any) -> dict[str, Any]:
    variant = {"name": "v1", "model": {"format": "onnx", "storageUri": "file:///m/v1"}}
    return {"metadata": {"name": "m"}, "spec": {"variants": [variant], **spec}}


# Deployments


def test_deployment_gets_the_apps_v1_defaults(store: Store) -> None:
    spec = store.create(DEP, "ns", deployment())["spec"]
    assert spec["replicas"] == 1
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }


def test_deployment_defaults_leave_given_values_alone(store: Store) -> None:
    body = deployment()
    body["spec"] |= {"replicas": 0, "revisionHistoryLimit": 3, "strategy": {"type": "Recreate"}}
    spec = store.create(DEP, "ns", body)["spec"]
    assert spec["replicas"] == 0, "a pointer field set to zero is not unset"
    assert spec["revisionHistoryLimit"] == 3
    assert spec["strategy"] == {"type": "Recreate"}, "only a rolling update gets its limits"


def test_pod_template_gets_the_pod_spec_defaults_but_not_the_pod_only_ones(store: Store) -> None:
    spec = pod_spec_of(store.create(DEP, "ns", deployment()))
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert "enableServiceLinks" not in spec, "SetDefaults_Pod does not apply to templates"


def test_containers_get_the_container_and_probe_defaults(store: Store) -> None:
    container = {
        "name": "app",
        "image": "app:1.0",
        "ports": [{"name": "http", "containerPort": 8080}],
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "readinessProbe": {"httpGet": {"port": "http"}, "timeoutSeconds": 0},
        "livenessProbe": {"grpc": {"port": 9000}, "periodSeconds": 7},
        "lifecycle": {"preStop": {"httpGet": {"port": 8080, "path": "/stop"}}},
    }
    obj = store.create(DEP, "ns", deployment(containers=[container]))
    got = pod_spec_of(obj)["containers"][0]
    assert got["terminationMessagePath"] == "/dev/termination-log"
    assert got["terminationMessagePolicy"] == "File"
    assert got["imagePullPolicy"] == "IfNotPresent"
    assert got["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert got["env"][0]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.name",
        "apiVersion": "v1",
    }
    assert got["readinessProbe"] == {
        "httpGet": {"port": "http", "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,  # zero is unset for an int32
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert got["livenessProbe"]["grpc"] == {"port": 9000, "service": ""}
    assert got["livenessProbe"]["periodSeconds"] == 7
    assert got["lifecycle"]["preStop"]["httpGet"] == {
        "port": 8080,
        "path": "/stop",
        "scheme": "HTTP",
    }


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("localhost:5000/nginx", "Always"),
        ("localhost:5000/nginx:1.27", "IfNotPresent"),
        ("nginx@sha256:" + "0" * 64, "IfNotPresent"),
    ],
)
def test_image_pull_policy_follows_the_tag(store: Store, image: str, policy: str) -> None:
    obj = store.create(DEP, "ns", deployment(containers=[{"name": "app", "image": image}]))
    assert pod_spec_of(obj)["containers"][0]["imagePullPolicy"] == policy


def test_volumes_get_their_defaults(store: Store) -> None:
    volumes = [
        {"name": "bare"},
        {"name": "config", "configMap": {"name": "c"}},
        {"name": "secret", "secret": {"secretName": "s", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "0.5Gi"}},
    ]
    got = pod_spec_of(store.create(DEP, "ns", deployment(volumes=volumes)))["volumes"]
    assert got == [
        {"name": "bare", "emptyDir": {}},
        {"name": "config", "configMap": {"name": "c", "defaultMode": 420}},
        {"name": "secret", "secret": {"secretName": "s", "defaultMode": 256}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "512Mi"}},
    ]


def test_projections_and_resource_field_divisors_get_their_defaults(store: Store) -> None:
    token = {"serviceAccountToken": {"path": "token"}}
    downward = {
        "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}
    }
    volumes = [{"name": "p", "projected": {"sources": [token, downward]}}]
    divisor = {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1024Ki"}}
    container = {"name": "app", "image": "app:1", "env": [{"name": "MEM", "valueFrom": divisor}]}
    spec = pod_spec_of(store.create(DEP, "ns", deployment(volumes=volumes, containers=[container])))
    projected = spec["volumes"][0]["projected"]
    assert projected["defaultMode"] == 420
    assert projected["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 3600
    assert projected["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"
    assert spec["containers"][0]["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"] == "1Mi"


def test_zero_values_of_omitempty_fields_are_not_written(store: Store) -> None:
    container = {
        "name": "app",
        "image": "app:1.0",
        "args": [],
        "env": [],
        "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": False}],
    }
    body = deployment(containers=[container], automountServiceAccountToken=False, hostNetwork=False)
    body["metadata"]["annotations"] = {}
    obj = store.create(DEP, "ns", body)
    spec = pod_spec_of(obj)
    assert "annotations" not in obj["metadata"]
    assert "hostNetwork" not in spec
    assert spec["automountServiceAccountToken"] is False, "a pointer keeps its false"
    assert spec["containers"][0]["volumeMounts"] == [{"name": "v", "mountPath": "/v"}]
    assert "args" not in spec["containers"][0] and "env" not in spec["containers"][0]


def test_a_deployment_keeps_its_selector(store: Store) -> None:
    store.create(DEP, "ns", deployment())
    with pytest.raises(ApiError) as info:
        store.patch(
            DEP,
            "ns",
            "d",
            {"spec": {"selector": {"matchLabels": {"app": "e"}}}},
            content_type=MERGE,
        )
    assert info.value.status == 422 and "spec.selector" in info.value.message


# Pods


def test_pods_request_their_limits_and_link_services(store: Store) -> None:
    container = {
        "name": "app",
        "image": "app:1",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    }
    obj = store.create(POD, "ns", {"metadata": {"name": "p"}, "spec": {"containers": [container]}})
    resources = obj["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert obj["spec"]["enableServiceLinks"] is True
    assert obj["spec"]["restartPolicy"] == "Always"


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        ({}, "BestEffort"),
        ({"requests": {"cpu": "100m"}}, "Burstable"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
        (
            {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
            "Burstable",
        ),
    ],
)
def test_a_new_pod_is_pending_with_its_qos_class(
    store: Store, resources: dict[str, Any], qos: str
) -> None:
    container = {"name": "app", "image": "app:1", "resources": resources}
    obj = store.create(POD, "ns", {"metadata": {"name": "p"}, "spec": {"containers": [container]}})
    assert obj["status"] == {"phase": "Pending", "qosClass": qos}


# Services


def test_service_gets_its_defaults_and_a_cluster_ip(store: Store) -> None:
    body = {"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}
    obj = store.create(SVC, "ns", body)
    spec = obj["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert ipaddress.ip_address(spec["clusterIP"]) in ipaddress.ip_network("10.96.0.0/12")
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert obj["status"] == {"loadBalancer": {}}
    assert "generation" not in obj["metadata"], "Services have no generation"
    other = store.create(SVC, "ns", body | {"metadata": {"name": "t"}})
    assert other["spec"]["clusterIP"] != spec["clusterIP"]


def test_service_keeps_its_cluster_ip_and_refuses_a_new_one(store: Store) -> None:
    created = store.create(
        SVC, "ns", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    )
    ip = created["spec"]["clusterIP"]
    replaced = store.replace(
        SVC, "ns", "s", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 81}]}}
    )
    assert replaced["spec"]["clusterIP"] == ip and replaced["spec"]["clusterIPs"] == [ip]
    with pytest.raises(ApiError) as info:
        store.patch(SVC, "ns", "s", {"spec": {"clusterIP": "10.96.9.9"}}, content_type=MERGE)
    assert info.value.status == 422 and "may not change" in info.value.message


def test_headless_services_get_no_address_and_selectorless_ones_both_families(store: Store) -> None:
    headless = {"clusterIP": "None", "ports": [{"port": 80}]}
    with_selector = store.create(
        SVC, "ns", {"metadata": {"name": "a"}, "spec": headless | {"selector": {"app": "a"}}}
    )["spec"]
    assert with_selector["clusterIPs"] == ["None"]
    assert with_selector["ipFamilyPolicy"] == "SingleStack"
    without = store.create(SVC, "ns", {"metadata": {"name": "b"}, "spec": headless})["spec"]
    assert without["ipFamilyPolicy"] == "RequireDualStack"
    assert without["ipFamilies"] == ["IPv4", "IPv6"]


def test_client_ip_affinity_gets_its_timeout_and_none_drops_the_config(store: Store) -> None:
    sticky = store.create(
        SVC, "ns", {"metadata": {"name": "a"}, "spec": {"sessionAffinity": "ClientIP"}}
    )["spec"]
    assert sticky["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    config = {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}
    plain = store.create(SVC, "ns", {"metadata": {"name": "b"}, "spec": config})["spec"]
    assert "sessionAffinityConfig" not in plain


# HorizontalPodAutoscalers, PodDisruptionBudgets, ConfigMaps, Namespaces


def test_autoscaler_gets_min_replicas_cpu_target_and_full_behavior(store: Store) -> None:
    body = {
        "metadata": {"name": "h"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "maxReplicas": 5,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
    }
    obj = store.create(HPA, "ns", body)
    spec = obj["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    assert spec["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert obj["status"] == {"desiredReplicas": 0}


def test_autoscaler_without_behavior_gets_none_and_its_targets_are_canonical(store: Store) -> None:
    metric = {
        "type": "Resource",
        "resource": {
            "name": "memory",
            "target": {"type": "AverageValue", "averageValue": "1024Mi"},
        },
    }
    body = {"metadata": {"name": "h"}, "spec": {"maxReplicas": 2, "metrics": [metric]}}
    spec = store.create(HPA, "ns", body)["spec"]
    assert "behavior" not in spec
    assert spec["metrics"][0]["resource"]["target"]["averageValue"] == "1Gi"


def test_disruption_budget_and_config_map_are_stored_as_sent(store: Store) -> None:
    budget = {
        "metadata": {"name": "b"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}},
    }
    created = store.create(PDB, "ns", budget)
    assert created["spec"] == budget["spec"]
    assert created["status"] == {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    }
    config = store.create(CM, "ns", {"metadata": {"name": "c"}, "data": {"k": "v"}})
    assert config["data"] == {"k": "v"} and "status" not in config
    empty = store.create(CM, "ns", {"metadata": {"name": "e"}, "data": {}})
    assert "data" not in empty, "an empty map is omitempty"


def test_namespaces_are_labelled_with_their_name_and_active(store: Store) -> None:
    obj = store.get(NS, None, "ns")
    assert obj["metadata"]["labels"] == {"kubernetes.io/metadata.name": "ns"}
    assert obj["status"] == {"phase": "Active"}


# Custom resources


def test_http_route_gets_the_gateway_api_crd_defaults(store: Store) -> None:
    body = {
        "metadata": {"name": "r"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"backendRefs": [{"name": "s", "port": 80}]},
                {"matches": [{"headers": [{"name": "x", "value": "y"}]}]},
            ],
        },
    }
    spec = store.create(ROUTE, "ns", body)["spec"]
    assert spec["parentRefs"] == [
        {"name": "gw", "group": "gateway.networking.k8s.io", "kind": "Gateway"}
    ]
    first, second = spec["rules"]
    assert first["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert first["backendRefs"] == [
        {"name": "s", "port": 80, "group": "", "kind": "Service", "weight": 1}
    ]
    assert second["matches"] == [
        {
            "headers": [{"name": "x", "value": "y", "type": "Exact"}],
            "path": {"type": "PathPrefix", "value": "/"},
        }
    ]
    bare = store.create(ROUTE, "ns", {"metadata": {"name": "bare"}, "spec": {}})["spec"]
    assert bare["rules"] == [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]


def test_inference_service_gets_its_crd_defaults_and_loses_unknown_fields(store: Store) -> None:
    body = isvc(routing={"router": {}, "mirror": {"variant": "v1"}}, bogus=True)
    body["spec"]["variants"][0] |= {"autoscaling": {"maxReplicas": 3}, "gpu": {}, "typo": 1}
    spec = store.create(ISVC, "ns", body)["spec"]
    assert "bogus" not in spec and "typo" not in spec["variants"][0]
    assert spec["routing"]["mode"] == "nginx"
    assert spec["routing"]["router"] == {"replicas": 2, "workers": 2}
    assert spec["routing"]["mirror"] == {"variant": "v1", "percent": 100}
    variant = spec["variants"][0]
    assert variant["autoscaling"] == {
        "maxReplicas": 3,
        "minReplicas": 1,
        "targetCPUUtilizationPercentage": 80,
    }
    assert variant["gpu"] == {"count": 1}


def test_inference_service_nulls_are_dropped_or_defaulted(store: Store) -> None:
    spec = store.create(ISVC, "ns", isvc(routing={"mode": None, "mirror": None}))["spec"]
    assert spec["routing"] == {"mode": "nginx"}, "a null is no value: defaulted, else dropped"


def test_inference_service_status_is_pruned_and_defaulted_too(store: Store) -> None:
    store.create(ISVC, "ns", isvc())
    status = {"variants": {"v1": {"storageUri": "file:///m/v1"}}, "invented": "x"}
    got = store.patch(ISVC, "ns", "m", {"status": status}, content_type=MERGE, subresource="status")
    assert "invented" not in got["status"]
    assert got["status"]["variants"]["v1"] == {
        "storageUri": "file:///m/v1",
        "replicas": 0,
        "readyReplicas": 0,
        "weight": 0,
        "ready": False,
    }


# Every write is defaulted


def test_updates_are_defaulted_as_creates_are(store: Store) -> None:
    created = store.create(DEP, "ns", deployment())
    bare = [{"name": "app", "image": "registry.example/app:1.0"}]
    patch = {"spec": {"template": {"spec": {"containers": bare}}}}
    again = store.patch(DEP, "ns", "d", patch, content_type=MERGE)
    assert again == created, "a patch that sends back what the defaults fill in changes nothing"
    replaced = store.replace(DEP, "ns", "d", deployment())
    assert replaced["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    changed = store.patch(DEP, "ns", "d", {"spec": {"strategy": None}}, content_type=MERGE)
    assert changed["spec"]["strategy"] == created["spec"]["strategy"], (
        "a removed default comes back"
    )
    assert changed["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# Quantities


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("0.5", "500m"),
        (0.5, "500m"),
        (2, "2"),
        ("1000m", "1"),
        ("1500m", "1500m"),
        ("1.5", "1500m"),
        ("1000", "1k"),
        ("1500", "1500"),
        ("120000", "120k"),
        ("1000M", "1G"),
        ("1024Mi", "1Gi"),
        ("1048576Ki", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1536Ki", "1536Ki"),
        ("0.5Ki", "512"),
        ("1.1Ki", "1126400m"),
        ("1Ki", "1Ki"),
        ("0", "0"),
        ("0Mi", "0"),
        ("0.0", "0"),
        ("-1.5", "-1500m"),
        ("-2Ki", "-2Ki"),
        ("1e3", "1e3"),
        ("1.5e3", "1500"),
        ("2e4", "20e3"),
        ("0.1m", "100u"),
        ("0.0000000001", "1n"),
        ("+5", "+5"),
        ("05", "05"),
    ],
)
def test_quantities_are_written_in_canonical_form(sent: str | float, stored: str) -> None:
    assert canonical(sent) == stored


@pytest.mark.parametrize(
    ("sent", "stored"), [("0.1m", "1m"), ("1u", "1m"), ("1.0001", "1001m"), ("250m", "250m")]
)
def test_resource_lists_are_rounded_up_to_milli(sent: str, stored: str) -> None:
    assert canonical(sent, round_to=MILLI) == stored


@pytest.mark.parametrize("sent", ["", "abc", "1Qi", "1.2.3", " 1", "1e"])
def test_malformed_quantities_are_refused(sent: str) -> None:
    with pytest.raises(QuantityError):
        canonical(sent)


def test_container_resources_come_back_canonical_and_bad_ones_are_a_400(store: Store) -> None:
    resources = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": "0.1m"}}
    container = {"name": "app", "image": "app:1", "resources": resources}
    obj = store.create(DEP, "ns", deployment(containers=[container]))
    assert pod_spec_of(obj)["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1m"},
    }
    resources["requests"]["cpu"] = "half"
    with pytest.raises(ApiError) as info:
        store.create(DEP, "ns", deployment("e", containers=[container]))
    assert info.value.status == 400


# managedFields


def fields_of(obj: dict[str, Any], manager: str, subresource: str | None = None) -> dict[str, Any]:
    entries = [
        e
        for e in obj["metadata"]["managedFields"]
        if e["manager"] == manager and e.get("subresource") == subresource
    ]
    assert len(entries) == 1, obj["metadata"]["managedFields"]
    return dict(entries[0])


def test_create_records_its_manager_with_every_field_it_set(store: Store) -> None:
    obj = store.create(
        CM,
        "ns",
        {"metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}},
        manager="me",
    )
    entry = fields_of(obj, "me")
    assert entry["operation"] == "Update" and entry["apiVersion"] == "v1"
    assert entry["fieldsType"] == "FieldsV1" and entry["time"]
    assert entry["fieldsV1"] == {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}


def test_keyed_list_items_are_named_by_their_keys(store: Store) -> None:
    obj = store.create(DEP, "ns", deployment(), manager="me")
    containers = fields_of(obj, "me")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    item = containers['k:{"name":"app"}']
    assert item["."] == {} and "f:image" in item and "f:imagePullPolicy" in item


def test_fields_move_to_the_last_writer_and_each_manager_keeps_one_entry(store: Store) -> None:
    store.create(CM, "ns", {"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}, manager="one")
    store.patch(CM, "ns", "c", {"data": {"b": "3"}}, content_type=MERGE, manager="two")
    obj = store.patch(CM, "ns", "c", {"data": {"c": "4"}}, content_type=MERGE, manager="two")
    assert fields_of(obj, "one")["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert fields_of(obj, "two")["fieldsV1"] == {"f:data": {"f:b": {}, "f:c": {}}}
    gone = store.patch(CM, "ns", "c", {"data": {"a": None}}, content_type=MERGE, manager="two")
    assert [e["manager"] for e in gone["metadata"]["managedFields"]] == ["two"], (
        "an entry left with no field is dropped"
    )


def test_a_write_that_changes_nothing_records_nothing(store: Store) -> None:
    created = store.create(CM, "ns", {"metadata": {"name": "c"}, "data": {"a": "1"}}, manager="one")
    same = store.patch(CM, "ns", "c", {"data": {"a": "1"}}, content_type=MERGE, manager="two")
    assert same["metadata"]["managedFields"] == created["metadata"]["managedFields"]


def test_status_writes_are_recorded_apart_from_the_main_resource(store: Store) -> None:
    store.create(DEP, "ns", deployment(), manager="creator")
    obj = store.patch(
        DEP,
        "ns",
        "d",
        {"status": {"replicas": 1}},
        content_type=MERGE,
        subresource="status",
        manager="controller",
    )
    assert fields_of(obj, "controller", "status")["fieldsV1"] == {"f:status": {"f:replicas": {}}}
    assert "f:status" not in fields_of(obj, "creator")["fieldsV1"]


def test_the_manager_is_the_field_manager_parameter_or_the_user_agent() -> None:
    with EmulatorThread() as em:
        url = f"{em.url}/api/v1/namespaces/default/configmaps"
        headers = {"User-Agent": "kubectl/v1.30.0 (linux/amd64)"}
        requests.post(
            url, json={"metadata": {"name": "a"}, "data": {"k": "v"}}, headers=headers, timeout=5
        )
        requests.post(
            url,
            params={"fieldManager": "kubeserve"},
            json={"metadata": {"name": "b"}, "data": {"k": "v"}},
            timeout=5,
        )
        managers = {
            o["metadata"]["name"]: [e["manager"] for e in o["metadata"]["managedFields"]]
            for o in requests.get(url, timeout=5).json()["items"]
        }
        assert managers == {"a": ["kubectl"], "b": ["kubeserve"]}


# The status subresource


def test_a_status_write_changes_the_status_only(store: Store) -> None:
    store.create(ISVC, "ns", isvc())
    got = store.patch(
        ISVC,
        "ns",
        "m",
        {
            "metadata": {"labels": {"x": "y"}},
            "spec": {"routing": {"mode": "gateway-api"}},
            "status": {"url": "u"},
        },
        content_type=MERGE,
        subresource="status",
    )
    assert got["status"] == {"url": "u"}
    assert "routing" not in got["spec"] and "labels" not in got["metadata"]
    assert got["metadata"]["generation"] == 1


def test_a_main_write_leaves_the_status_alone(store: Store) -> None:
    store.create(ISVC, "ns", isvc())
    store.patch(ISVC, "ns", "m", {"status": {"url": "u"}}, content_type=MERGE, subresource="status")
    got = store.patch(
        ISVC,
        "ns",
        "m",
        {"status": {"url": "other"}, "metadata": {"labels": {"a": "b"}}},
        content_type=MERGE,
    )
    assert got["status"] == {"url": "u"} and got["metadata"]["labels"] == {"a": "b"}


def test_kinds_without_a_status_subresource_serve_no_status(store: Store) -> None:
    store.create(CM, "ns", {"metadata": {"name": "c"}})
    with pytest.raises(ApiError) as info:
        store.patch(CM, "ns", "c", {"data": {"a": "b"}}, content_type=MERGE, subresource="status")
    assert info.value.status == 404


# metadata.generation


def test_generation_is_one_at_create_for_kinds_that_have_it(store: Store) -> None:
    assert store.create(DEP, "ns", deployment())["metadata"]["generation"] == 1
    assert store.create(ISVC, "ns", isvc())["metadata"]["generation"] == 1
    assert "generation" not in store.create(CM, "ns", {"metadata": {"name": "c"}})["metadata"]
    assert "generation" not in store.get(NS, None, "ns")["metadata"]


def test_deployment_generation_follows_spec_and_annotations_not_labels(store: Store) -> None:
    store.create(DEP, "ns", deployment())
    labels = store.patch(DEP, "ns", "d", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    assert labels["metadata"]["generation"] == 1
    annotated = store.patch(
        DEP, "ns", "d", {"metadata": {"annotations": {"a": "b"}}}, content_type=MERGE
    )
    assert annotated["metadata"]["generation"] == 2, "annotations are copied to ReplicaSets"
    scaled = store.patch(DEP, "ns", "d", {"spec": {"replicas": 3}}, content_type=MERGE)
    assert scaled["metadata"]["generation"] == 3


def test_custom_resource_generation_ignores_metadata_and_status(store: Store) -> None:
    store.create(ISVC, "ns", isvc())
    store.patch(ISVC, "ns", "m", {"metadata": {"annotations": {"a": "b"}}}, content_type=MERGE)
    store.patch(ISVC, "ns", "m", {"status": {"url": "u"}}, content_type=MERGE, subresource="status")
    assert store.get(ISVC, "ns", "m")["metadata"]["generation"] == 1
    changed = store.patch(
        ISVC, "ns", "m", {"spec": {"routing": {"overrideHeader": "x-v"}}}, content_type=MERGE
    )
    assert changed["metadata"]["generation"] == 2


# resourceVersion preconditions


def test_every_write_with_a_stale_resource_version_is_a_conflict(store: Store) -> None:
    stale = store.create(ISVC, "ns", isvc())["metadata"]["resourceVersion"]
    fresh = store.patch(
        ISVC, "ns", "m", {"spec": {"routing": {"overrideHeader": "x-v"}}}, content_type=MERGE
    )
    body = fresh | {"metadata": fresh["metadata"] | {"resourceVersion": stale}}
    attempts = [
        lambda: store.replace(ISVC, "ns", "m", body),
        lambda: store.patch(
            ISVC, "ns", "m", {"metadata": {"resourceVersion": stale}}, content_type=MERGE
        ),
        lambda: store.patch(
            ISVC,
            "ns",
            "m",
            [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}],
            content_type=JSON_PATCH,
        ),
        lambda: store.patch(
            ISVC,
            "ns",
            "m",
            {"metadata": {"resourceVersion": stale}, "status": {}},
            content_type=MERGE,
            subresource="status",
        ),
    ]
    for attempt in attempts:
        with pytest.raises(ApiError) as info:
            attempt()
        assert info.value.status == 409 and info.value.reason == "Conflict"
    current = store.get(ISVC, "ns", "m")
    assert current["metadata"]["resourceVersion"] == fresh["metadata"]["resourceVersion"]


def test_an_update_of_a_custom_resource_must_name_its_resource_version(store: Store) -> None:
    created = store.create(ISVC, "ns", isvc())
    unconditional = {"metadata": {"name": "m"}, "spec": created["spec"]}
    with pytest.raises(ApiError) as info:
        store.replace(ISVC, "ns", "m", unconditional)
    assert info.value.status == 422
    store.create(CM, "ns", {"metadata": {"name": "c"}})
    replaced = store.replace(CM, "ns", "c", {"metadata": {"name": "c"}, "data": {"a": "b"}})
    assert replaced["data"] == {"a": "b"}, "built-in kinds allow an unconditional update"
