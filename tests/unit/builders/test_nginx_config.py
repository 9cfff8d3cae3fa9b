"""The router's nginx.conf: what it says, where a placement moves it, and no spec can inject."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import spec, validation
from kubeserve.builders import nginx_config
from kubeserve.builders.config import BuildConfig
from support import specs


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


LOCAL_UPSTREAMS = {
    "v1": "127.0.0.1:1001",
    "v2": "127.0.0.1:1002",
    "v3": "127.0.0.1:1003",
    "shadow": "localhost:1004",
}
LOCAL_GRPC_UPSTREAMS = {
    "v1": "127.0.0.1:2001",
    "v2": "127.0.0.1:2002",
    "v3": "127.0.0.1:2003",
    "shadow": "localhost:2004",
}
LOCAL = nginx_config.Placement(
    host="127.0.0.1",
    port=3333,
    health_port=4444,
    upstreams=LOCAL_UPSTREAMS,
    grpc_port=5555,
    grpc_upstreams=LOCAL_GRPC_UPSTREAMS,
    temp_dir="/srv/kubeserve-up/",
)


def test_nginx_writes_only_under_tmp() -> None:
    text = nginx_config.render_config(parse(specs.sticky_ab()))
    assert "pid /tmp/nginx.pid;" in text
    for directive in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{directive}_temp_path /tmp/" in text
    # Logs go to the container's streams, not to files.
    assert "error_log stderr" in text
    assert "access_log /dev/stdout" in text


def test_upstream_connections_are_kept_and_access_log_lines_stay_whole() -> None:
    text = nginx_config.render_config(parse(specs.sticky_ab()))
    # One idle pool per variant, protocol (HTTP, gRPC) and worker, large enough for the
    # benchmark's 64 connections.
    assert text.count(f"keepalive {nginx_config.UPSTREAM_KEEPALIVE};") == 2 * 4
    assert nginx_config.UPSTREAM_KEEPALIVE >= 64
    # Buffered writes no larger than PIPE_BUF are atomic on the container's stdout pipe.
    assert "access_log /dev/stdout kubeserve buffer=4k flush=1s;" in text


def test_split_leaves_zero_weight_variants_out_and_lets_the_last_take_the_rest() -> None:
    text = nginx_config.render_config(parse(specs.sticky_ab()))
    split = text.split('split_clients "digits/$kubeserve_key" $kubeserve_split {')[1].split("}")[0]
    assert [line.strip() for line in split.strip().splitlines()] == ["50% v1;", "30% v2;", "* v3;"]
    # ...but every variant has an upstream, so the override header reaches it.
    for v in ("v1", "v2", "v3", "shadow"):
        assert f"upstream {v} {{" in text
        assert f'"{v}" {v};' in text


def test_single_variant_takes_everything() -> None:
    text = nginx_config.render_config(parse(specs.isvc()))
    assert 'split_clients "digits/$request_id" $kubeserve_split {\n        * v1;\n    }' in text


def test_upstreams_are_the_variant_services_by_cluster_dns() -> None:
    text = nginx_config.render_config(
        parse(specs.canary()), BuildConfig(cluster_domain="k8s.example")
    )
    assert "server digits-v1.default.svc.k8s.example:80;" in text
    text = nginx_config.render_config(parse(specs.isvc(namespace=None)))
    assert "server digits-v1:80;" in text


def test_cookie_names_with_dashes_and_dots_are_matched_on_the_raw_cookie_header() -> None:
    obj = specs.isvc(
        specs.variant("v1", 50),
        specs.variant("v2", 50),
        routing={"sticky": {"cookie": "ab.user-id"}},
    )
    text = nginx_config.render_config(parse(obj))
    assert r'"~(?:^|;\\s*)ab\\.user\\-id=([^;]*)" $1;' in text
    assert "map $cookie_" not in text


@pytest.mark.parametrize(
    "hostile",
    [
        'x"; return 200 "pwned',
        "x;\n    return 200 pwned;",
        "x-$host",
        "x}",
        "x y",
        "x\\",
    ],
)
@pytest.mark.parametrize("where", ["sticky-header", "sticky-cookie", "override", "variant", "name"])
def test_hostile_values_never_reach_the_config(hostile: str, where: str) -> None:
    # The API refuses these; build a spec past it to check the builder's own defence.
    isvc = parse(
        specs.isvc(
            specs.variant("v1", 50),
            specs.variant("v2", 50),
            routing={"sticky": {"header": "x-user-id"}, "overrideHeader": "x-variant"},
        )
    )
    routing = isvc.spec.routing
    assert routing.sticky is not None
    if where == "sticky-header":
        routing.sticky.__dict__["header"] = hostile
    elif where == "sticky-cookie":
        routing.sticky.__dict__.update(header=None, cookie=hostile)
    elif where == "override":
        routing.__dict__["override_header"] = hostile
    elif where == "variant":
        isvc.spec.variants[1].__dict__["name"] = hostile
    else:
        isvc.metadata.__dict__["name"] = hostile
    with pytest.raises(nginx_config.UnsafeValueError):
        nginx_config.render_config(isvc)


def test_quote_escapes_quotes_and_backslashes_and_refuses_variables() -> None:
    assert nginx_config.quote('a"b\\c') == '"a\\"b\\\\c"'
    for bad in ("$host", "a\nb", "a\x00"):
        with pytest.raises(nginx_config.UnsafeValueError):
            nginx_config.quote(bad)


def test_a_placement_changes_only_the_listen_upstream_and_file_lines() -> None:
    isvc = parse(specs.sticky_ab())
    cluster = nginx_config.render_config(isvc).splitlines()
    local = nginx_config.render_config(isvc, placement=LOCAL).splitlines()
    changed = [(c.strip(), p.strip()) for c, p in zip(cluster, local, strict=True) if c != p]
    temp = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    assert changed == [
        ("pid /tmp/nginx.pid;", "pid /srv/kubeserve-up/nginx.pid;"),
        *[(f"{d}_temp_path /tmp/{d};", f"{d}_temp_path /srv/kubeserve-up/{d};") for d in temp],
        *[
            (f"server digits-{v}.default.svc.cluster.local:80;", f"server {address};")
            for v, address in LOCAL_UPSTREAMS.items()
        ],
        *[
            (f"server digits-{v}.default.svc.cluster.local:8081;", f"server {address};")
            for v, address in LOCAL_GRPC_UPSTREAMS.items()
        ],
        ("listen 8080;", "listen 127.0.0.1:3333;"),
        ("listen 8082 http2;", "listen 127.0.0.1:5555 http2;"),
        ("listen 8081;", "listen 127.0.0.1:4444;"),
    ]


def test_the_default_placement_is_a_router_pods() -> None:
    isvc = parse(specs.sticky_ab())
    assert nginx_config.render_config(isvc) == nginx_config.render_config(
        isvc, placement=nginx_config.Placement()
    )
    text = nginx_config.render_config(isvc)
    assert f"listen {nginx_config.ROUTER_PORT};" in text
    assert f"listen {nginx_config.HEALTH_PORT};" in text


@pytest.mark.parametrize(
    "upstreams",
    [
        {"v1": "127.0.0.1:1", "v2": "127.0.0.1:2", "v3": "127.0.0.1:3"},
        {n: "127.0.0.1:1" for n in ("v1", "v2", "v3", "shadow", "v9")},
    ],
    ids=["one-missing", "one-unknown"],
)
def test_placed_upstreams_name_every_variant_and_no_other(upstreams: dict[str, str]) -> None:
    placement = nginx_config.Placement(upstreams=upstreams)
    with pytest.raises(ValueError, match="the variants are"):
        nginx_config.render_config(parse(specs.sticky_ab()), placement=placement)


@pytest.mark.parametrize(
    "placement",
    [
        nginx_config.Placement(upstreams={"v1": "127.0.0.1:1; return 200 pwned"}),
        nginx_config.Placement(upstreams={"v1": "unix:/run/x.sock"}),
        nginx_config.Placement(host="127.0.0.1 default_server"),
        nginx_config.Placement(temp_dir="/srv/$host"),
        nginx_config.Placement(temp_dir="/srv/x\n    return 200"),
    ],
    ids=["upstream", "upstream-socket", "host", "temp-variable", "temp-newline"],
)
def test_hostile_placements_never_reach_the_config(placement: nginx_config.Placement) -> None:
    with pytest.raises(nginx_config.UnsafeValueError):
        nginx_config.render_config(parse(specs.isvc()), placement=placement)


def test_a_temp_dir_that_is_not_one_word_is_quoted() -> None:
    placement = nginx_config.Placement(temp_dir='/srv/my "work" dir')
    text = nginx_config.render_config(parse(specs.isvc()), placement=placement)
    assert 'pid "/srv/my \\"work\\" dir/nginx.pid";' in text
    assert 'proxy_temp_path "/srv/my \\"work\\" dir/proxy";' in text


def test_the_upstream_keepalive_can_be_rendered_otherwise_for_the_benchmark() -> None:
    text = nginx_config.render_config(parse(specs.sticky_ab()), upstream_keepalive=8)
    assert text.count("keepalive 8;") == 2 * 4
    assert f"keepalive {nginx_config.UPSTREAM_KEEPALIVE};" not in text


def test_the_unknown_version_answer_lists_every_variant_and_shows_the_version_by_variable() -> None:
    body = nginx_config.unknown_version_body(["v1", "v2", "dark"])
    assert body == (
        '"{\\"error\\": \\"unknown model version ${kubeserve_version_shown}: '
        'versions are v1, v2, dark\\"}"'
    )
    text = nginx_config.render_config(parse(specs.sticky_ab()))
    assert "return 404 " + nginx_config.unknown_version_body(["v1", "v2", "v3", "shadow"]) in text


def test_a_version_reaches_a_variant_only_by_its_exact_case_sensitive_name() -> None:
    # A regex key, not a plain one: nginx compares plain map keys regardless of case.
    assert nginx_config.version_pattern("v1-b") == "~^v1\\-b\\z"
    text = nginx_config.render_config(parse(specs.canary()))
    assert '"~^v1\\\\z" v1;' in text
    assert '"~^v2\\\\z" v2;' in text
    for hostile in ("V1", "v1$", "a.b", "v1\\z"):
        with pytest.raises(nginx_config.UnsafeValueError):
            nginx_config.version_pattern(hostile)
