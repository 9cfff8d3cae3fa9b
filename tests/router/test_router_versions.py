"""Version-aware routing on real nginx: a path that names a version reaches that variant.

`/v2/models/{m}/versions/{v}/...` and `/v1/models/{m}/versions/{v}[:predict]` go to the
variant named `v` whatever the weights (the override header still comes first); a version no
variant has is answered 404 by the router itself, with the versions it has; requests without
a version follow the sticky key, so metadata and inference agree for one user. Each test runs
the rendered config on Debian's nginx in front of stand-ins that echo the target they got.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubeserve.api import spec, validation
from kubeserve.builders import nginx_config
from kubeserve.testing import nginx as dataplane
from support import specs, split_model
from support.nginx import requires_nginx

pytestmark = requires_nginx
OVERRIDE = "x-kubeserve-variant"
STICKY = "x-user-id"


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


def three_variants(**routing: Any) -> spec.InferenceService:
    """v1 takes all live traffic; v2 and dark get none (0%)."""
    return parse(
        specs.isvc(
            specs.variant("v1", 100),
            specs.variant("v2", 0),
            specs.variant("dark", 0),
            routing=routing,
        )
    )


def versioned_paths(version: str) -> list[tuple[str, str]]:
    """Give every (method, path) of both protocols that names `version` of model digits."""
    v2 = f"/v2/models/digits/versions/{version}"
    v1 = f"/v1/models/digits/versions/{version}"
    return [
        ("POST", f"{v2}/infer"),
        ("GET", v2),
        ("GET", f"{v2}/"),
        ("GET", f"{v2}/ready"),
        ("POST", f"{v2}/infer?trace=1"),
        ("POST", f"{v1}:predict"),
        ("GET", v1),
        ("GET", f"{v1}?x=1"),
    ]


def test_a_path_that_names_a_version_reaches_that_variant_at_any_weight(tmp_path: Path) -> None:
    isvc = three_variants(sticky={"header": STICKY})
    with dataplane.running_router(isvc, tmp_path) as (_, upstreams, port):
        client = dataplane.Client(port)
        for version in ("v2", "dark", "v1"):
            for method, path in versioned_paths(version):
                for i in range(25):
                    # Sticky keys that the split sends to v1 do not move a versioned request.
                    answer = client.request(method, path, headers={STICKY: f"user-{i}"})
                    assert (answer.status, answer.served_by, answer.body) == (200, version, version)
                    # The variant gets the target exactly as the client sent it.
                    assert answer.target == path
        counts = upstreams.counts()
    n = len(versioned_paths("v")) * 25
    assert counts == {"v1": n, "v2": n, "dark": n}


def test_the_split_still_decides_for_paths_that_name_no_version(tmp_path: Path) -> None:
    isvc = three_variants()
    with dataplane.running_router(isvc, tmp_path) as (_, _ups, port):
        client = dataplane.Client(port)
        for method, path in [
            ("POST", "/v2/models/digits/infer"),
            ("GET", "/v2/models/digits"),
            ("GET", "/v2/models/digits/ready"),
            ("POST", "/v1/models/digits:predict"),
            ("GET", "/v2/health/ready"),
            # Not a version: the word must be the segment after the model.
            ("GET", "/v2/models/digits/infer/versions/v2"),
            ("GET", "/v3/models/digits/versions/v2"),
        ]:
            answers = Counter(client.request(method, path).served_by for _ in range(20))
            assert answers == {"v1": 20}, path


def test_the_override_header_outranks_the_version_in_the_path(tmp_path: Path) -> None:
    isvc = three_variants(overrideHeader=OVERRIDE)
    with dataplane.running_router(isvc, tmp_path) as (_, _ups, port):
        client = dataplane.Client(port)
        for forced in ("v1", "v2", "dark"):
            for method, path in [*versioned_paths("v2"), *versioned_paths("nope")]:
                answer = client.request(method, path, headers={OVERRIDE: forced})
                assert (answer.served_by, answer.target) == (forced, path)
        # An override that names no variant is ignored: the path's version decides.
        answer = client.request("POST", "/v2/models/digits/versions/dark/infer", {OVERRIDE: "x"})
        assert answer.served_by == "dark"


def unknown_version_error(shown: str) -> dict[str, str]:
    return {"error": f"unknown model version {shown}: versions are v1, v2, dark"}


@pytest.mark.parametrize("version", ["v9", "V2", "v2-", "Dark", "v1.0", "nope"])
def test_an_unknown_version_gets_404_from_the_router_with_the_versions(
    tmp_path: Path, version: str
) -> None:
    isvc = three_variants(sticky={"header": STICKY}, overrideHeader=OVERRIDE)
    with dataplane.running_router(isvc, tmp_path) as (_, upstreams, port):
        client = dataplane.Client(port)
        for method, path in versioned_paths(version):
            answer = client.request(method, path, headers={STICKY: "alice"})
            assert answer.status == 404, path
            assert answer.content_type == "application/json"
            assert json.loads(answer.body) == unknown_version_error(f"'{version}'")
            # No variant served it: no served-by header, and no variant saw the request.
            assert (answer.served_by, answer.target) == ("", "")
        counts = upstreams.counts()
    assert counts == {}


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/v2/models/digits/versions/v1%2F..%2Fv2/infer", "'v1%2F..%2Fv2'"),
        ("/v2/models/digits/versions/%76%32/infer", "'%76%32'"),
        ("/v2/models/digits/versions/../versions/v2/infer", "'..'"),
        ("/v2/models/digits/versions/%2E%2E/v2/infer", "'%2E%2E'"),
        ("/v2/models/digits/versions/v2;v1/infer", "(not a plain name, not shown)"),
        ('/v2/models/digits/versions/v2"}/infer', "(not a plain name, not shown)"),
        ("/v2/models/digits/versions/v2\\/infer", "(not a plain name, not shown)"),
        ("/v2/models/digits/versions/" + "v2" * 2000 + "/infer", "(not a plain name, not shown)"),
        ("/v2/models/digits/versions//infer", "''"),
        ("/v2/models/digits/versions/", "''"),
        ("/v1/models/digits/versions/:predict", "''"),
        ("/v1/models/digits/versions/v2/../v1:predict", "''"),
        ("/v1/models/digits/versions/v2/x", "''"),
    ],
    ids=lambda p: p[:40] if len(p) > 40 else p,
)
def test_hostile_versions_get_404_and_reach_no_variant(
    tmp_path: Path, path: str, shown: str
) -> None:
    isvc = three_variants(sticky={"header": STICKY})
    with dataplane.running_router(isvc, tmp_path) as (_, upstreams, port):
        client = dataplane.Client(port)
        for method in ("GET", "POST"):
            answer = client.request(method, path, headers={STICKY: "alice"})
            assert (answer.status, answer.served_by, answer.target) == (404, "", ""), answer
            # Whatever the client sent, the body stays one JSON object that lists the versions.
            assert json.loads(answer.body) == unknown_version_error(shown)
        counts = upstreams.counts()
    assert counts == {}


def test_dot_segments_after_a_version_reach_the_variant_the_server_reads(tmp_path: Path) -> None:
    # nginx resolves '..' in $uri ("v2/../v1" reads as v1) but sends the target as it came,
    # in which the variant's server reads version v2: the router follows the server's reading.
    isvc = three_variants()
    path = "/v2/models/digits/versions/v2/../v1/infer"
    with dataplane.running_router(isvc, tmp_path) as (_, _ups, port):
        answer = dataplane.Client(port).request("POST", path)
    assert (answer.served_by, answer.target) == ("v2", path)


@pytest.mark.parametrize(
    ("sticky", "header"),
    [
        ({"header": STICKY}, (STICKY, "{key}")),
        ({"cookie": "ab-user"}, ("Cookie", "theme=dark; ab-user={key}")),
    ],
    ids=["header", "cookie"],
)
def test_with_a_sticky_key_metadata_readiness_and_inference_reach_the_same_variant(
    tmp_path: Path, sticky: dict[str, str], header: tuple[str, str]
) -> None:
    weights = [("v1", 50), ("v2", 30), ("v3", 20)]
    isvc = parse(specs.isvc(*(specs.variant(v, w) for v, w in weights), routing={"sticky": sticky}))
    unversioned = [
        ("GET", "/v2/models/digits"),
        ("GET", "/v2/models/digits/ready"),
        ("POST", "/v2/models/digits/infer"),
        ("GET", "/v1/models/digits"),
        ("POST", "/v1/models/digits:predict"),
    ]
    keys = [f"user-{i}" for i in range(200)]
    reached: dict[str, set[str]] = {}
    with dataplane.running_router(isvc, tmp_path) as (_, _ups, port):
        client = dataplane.Client(port)
        for key in keys:
            for method, path in unversioned:
                answer = client.request(
                    method, path, headers={header[0]: header[1].format(key=key)}
                )
                assert answer.status == 200
                reached.setdefault(key, set()).add(answer.served_by)
    # One variant per key, whatever the method and path: the one the split gives the key.
    assert reached == {k: {split_model.variant_for(f"digits/{k}", weights)} for k in keys}
    assert set(Counter(next(iter(v)) for v in reached.values())) == {"v1", "v2", "v3"}


def test_the_unknown_version_location_is_not_reachable_from_outside(tmp_path: Path) -> None:
    isvc = three_variants()
    with dataplane.running_router(isvc, tmp_path) as (_, upstreams, port):
        answer = dataplane.Client(port).request("GET", nginx_config.UNKNOWN_VERSION_LOCATION)
        counts = upstreams.counts()
    # Internal: nginx's own 404, not the unknown-version answer, and no variant saw it.
    assert answer.status == 404
    assert "unknown model version" not in answer.body
    assert counts == {}
