"""The router's gRPC listener on real nginx: split, stickiness, override, served-by, shadow.

Each test renders the config the operator renders, with its gRPC listener, runs it on Debian's
nginx on loopback ports in front of stand-in variants that speak gRPC (grpc_upstream.py) and
HTTP (upstream.py), and calls `inference.GRPCInferenceService/ModelInfer` with grpcio over
HTTP/2 cleartext. Shares are checked against the binomial 99.9% acceptance interval of their
weight, as for HTTP.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubeserve.api import spec, validation
from kubeserve.testing import nginx as dataplane
from support import specs, split_model
from support.nginx import requires_nginx

pytestmark = requires_nginx
OVERRIDE = "x-kubeserve-variant"
STICKY = "x-user-id"


def parse(obj: dict[str, Any]) -> spec.InferenceService:
    return validation.parse(obj)


def test_calls_are_split_by_weight_and_say_who_served_them(tmp_path: Path) -> None:
    isvc = parse(
        specs.isvc(specs.variant("v1", 90), specs.variant("v2", 10), specs.variant("dark", 0))
    )
    n = 2_000
    with dataplane.running_grpc_router(isvc, tmp_path) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        seen: Counter[str] = Counter()
        request_ids = set()
        for _ in range(n):
            answer = client.infer()
            assert answer.code == grpc.StatusCode.OK
            # Served-by is initial metadata, the router's own choice (the stand-in's value,
            # "upstream-<name>", is replaced), and names the variant that answered.
            assert answer.initial[OVERRIDE] == answer.variant
            # The variant's trailing metadata passes through.
            assert answer.trailing["x-stand-in"] == answer.variant
            request_ids.add(answer.received["x-request-id"])
            seen[answer.variant] += 1
        client.close()
        assert router.grpc_upstreams.counts() == dict(seen)
        # gRPC calls never reach the HTTP ports.
        assert router.upstreams.counts() == {}
    assert seen["dark"] == 0, "a 0% variant got live calls"
    for variant, weight in (("v1", 90), ("v2", 10)):
        low, high = split_model.interval(n, weight)
        assert low <= seen[variant] <= high, (variant, seen[variant], (low, high))
    # Every call carries a request id of its own, as HTTP requests do.
    assert len(request_ids) == n


def test_a_sticky_key_reaches_the_same_variant_over_grpc_as_over_http(tmp_path: Path) -> None:
    weights = [("v1", 50), ("v2", 30), ("v3", 20)]
    isvc = parse(
        specs.isvc(
            *(specs.variant(v, w) for v, w in weights), routing={"sticky": {"header": STICKY}}
        )
    )
    keys = [f"user-{i}" for i in range(400)]
    with dataplane.running_grpc_router(isvc, tmp_path) as router:
        grpc_client = dataplane.GrpcClient(router.grpc_port)
        http_client = dataplane.Client(router.port)
        for _ in range(2):
            for key in keys:
                # The sticky header as gRPC metadata; nginx's split_clients, predicted key by
                # key, is the same for both protocols.
                expected = split_model.variant_for(f"digits/{key}", weights)
                answer = grpc_client.infer({STICKY: key})
                assert (answer.code, answer.variant) == (grpc.StatusCode.OK, expected), key
                assert answer.received[STICKY] == key
                assert http_client.get(headers={STICKY: key})[1] == expected, key
        grpc_client.close()
        http_client.close()


def test_override_metadata_wins_for_every_variant_and_unknown_names_are_ignored(
    tmp_path: Path,
) -> None:
    isvc = parse(
        specs.isvc(
            specs.variant("v1", 90),
            specs.variant("v2", 10),
            specs.variant("dark", 0),
            routing={"overrideHeader": OVERRIDE, "sticky": {"header": STICKY}},
        )
    )
    with dataplane.running_grpc_router(isvc, tmp_path) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        # The override metadata is how a gRPC client reaches a version: the version in a
        # ModelInfer request is inside its protobuf body, which the router cannot read.
        for target in ("v2", "dark", "v1"):
            got = Counter(
                client.infer({OVERRIDE: target, STICKY: f"u{i}"}).variant for i in range(200)
            )
            assert got == {target: 200}
        got = Counter(client.infer({OVERRIDE: "nope"}).variant for _ in range(300))
        assert set(got) <= {"v1", "v2"}
        assert got["v1"] > got["v2"]
        client.close()


def test_a_dead_variant_answers_unavailable_at_once_with_its_name(tmp_path: Path) -> None:
    isvc = parse(
        specs.isvc(
            specs.variant("v1", 90), specs.variant("v2", 10), routing={"overrideHeader": OVERRIDE}
        )
    )
    with dataplane.running_grpc_router(isvc, tmp_path, dead=("v2",)) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        start = time.perf_counter()
        answer = client.infer({OVERRIDE: "v2"}, timeout=10)
        elapsed = time.perf_counter() - start
        # A trailers-only answer from the router: UNAVAILABLE (which clients may retry), a
        # message that names the variant, and served-by with the status.
        assert answer.code == grpc.StatusCode.UNAVAILABLE
        assert answer.details == "variant v2 is unavailable"
        assert answer.served_by == "v2"
        assert elapsed < 2, elapsed
        # The live variant still answers on the same connection.
        assert client.infer({OVERRIDE: "v1"}).variant == "v1"
        client.close()


def test_served_by_rides_with_the_status_of_an_error_the_variant_answers(tmp_path: Path) -> None:
    # A model server answers NOT_FOUND for a version it does not have, before any message:
    # a trailers-only answer, where the served-by metadata travels with the status.
    isvc = parse(specs.isvc(specs.variant("v1", 100)))
    with dataplane.running_grpc_router(isvc, tmp_path, grpc_modes={"v1": "not-found"}) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        answer = client.infer()
        client.close()
    assert answer.code == grpc.StatusCode.NOT_FOUND
    assert answer.details == "v1 has no such version"
    assert answer.trailing[OVERRIDE] == "v1"


def test_a_path_that_imitates_an_unknown_version_is_no_method(tmp_path: Path) -> None:
    # The version maps read HTTP paths; on the gRPC listener a path shaped like one names no
    # method, and the router answers as a server would, without asking a variant.
    isvc = parse(specs.isvc(specs.variant("v1", 100)))
    with dataplane.running_grpc_router(isvc, tmp_path) as router:
        with grpc.insecure_channel(
            f"127.0.0.1:{router.grpc_port}", options=dataplane.GRPC_CHANNEL_OPTIONS
        ) as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/v2/models/digits/versions/nope/infer"
            )
            with pytest.raises(grpc.RpcError) as caught:
                call(b"", timeout=5)
        counts = router.grpc_upstreams.counts()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert counts == {}


def test_mirror_copies_its_share_of_calls_and_the_client_sees_only_primary_answers(
    tmp_path: Path,
) -> None:
    isvc = parse(
        specs.isvc(
            specs.variant("v1", 70),
            specs.variant("v2", 30),
            specs.variant("shadow", 0),
            routing={"mirror": {"variant": "shadow", "percent": 20}},
        )
    )
    n = 2_000
    with dataplane.running_grpc_router(isvc, tmp_path) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        answers = Counter(client.infer().variant for _ in range(n))
        client.close()
        counts = router.grpc_upstreams.settled_counts()
    assert set(answers) == {"v1", "v2"}
    assert "shadow" not in counts  # no live call reached it
    low, high = split_model.interval(n, 20)
    assert low <= counts["shadow/mirror"] <= high, (counts, (low, high))


def test_a_hung_shadow_does_not_delay_calls_on_the_same_connection(tmp_path: Path) -> None:
    # Over HTTP/1.1 a hung shadow delays a keep-alive client's next request up to the mirror
    # timeout; over HTTP/2 a copy holds only its own stream.
    isvc = parse(
        specs.isvc(
            specs.variant("v1", 100),
            specs.variant("shadow", 0),
            routing={"mirror": {"variant": "shadow", "percent": 100}},
        )
    )
    with dataplane.running_grpc_router(isvc, tmp_path, grpc_modes={"shadow": "hang"}) as router:
        client = dataplane.GrpcClient(router.grpc_port)
        client.infer()  # connected
        took = []
        for _ in range(5):
            start = time.perf_counter()
            assert client.infer().variant == "v1"
            took.append(time.perf_counter() - start)
        client.close()
    assert max(took) < 0.5, took
