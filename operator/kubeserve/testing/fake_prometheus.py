"""A stand-in Prometheus for tests: it keeps the samples a test scrapes into it and answers
`/api/v1/query` for the one query shape the operator sends.

`sum by (<labels>) (increase|delta(<metric>{<matchers>}[<N>s]))`, evaluated as Prometheus
does on the samples in the window, counter resets included, with two differences stated
here because a real Prometheus was not available to compare with: no extrapolation to the
window's edges, and a sample exactly at the window's start is inside it (Prometheus 3's
windows are open on the left).
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import socketserver
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from prometheus_client import parser

Series = tuple[tuple[str, str], ...]  # sorted labels, __name__ included
_QUERY = re.compile(
    r"^sum by \((?P<by>[\w, ]+)\) \((?P<fn>increase|delta)\((?P<name>\w+)"
    r"\{(?P<matchers>.*)\}\[(?P<window>\d+)s\]\)\)$"
)
_MATCHER = re.compile(r'(\w+)(=~|=)"((?:[^"\\]|\\.)*)"')


class FakePrometheus:
    """Samples by series, and an HTTP server answering instant queries over them."""

    def __init__(self) -> None:
        self.samples: dict[Series, list[tuple[float, float]]] = {}
        self.lock = threading.Lock()
        self.queries: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                args = urllib.parse.parse_qs(url.query)
                try:
                    result = owner.evaluate(args["query"][0], float(args["time"][0]))
                    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                    code = 200
                except (KeyError, ValueError) as exc:
                    body = {"status": "error", "errorType": "bad_data", "error": str(exc)}
                    code = 400
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePrometheus:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def scrape(self, text: str, target: Mapping[str, str], at: float) -> None:
        """Keep every sample of a /metrics text, with the target's labels (namespace ...)."""
        with self.lock:
            for family in parser.text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = {**sample.labels, **target, "__name__": sample.name}
                    series = tuple(sorted(labels.items()))
                    self.samples.setdefault(series, []).append((at, float(sample.value)))

    def evaluate(self, query: str, at: float) -> list[dict[str, Any]]:
        """Give the instant vector of one query at time `at`."""
        self.queries.append(query)
        match = _QUERY.match(query)
        if match is None:
            raise ValueError(f"the stand-in does not know this query: {query}")
        by = [label.strip() for label in match["by"].split(",")]
        matchers = [(m[0], m[1], m[2]) for m in _MATCHER.findall(match["matchers"])]
        start = at - int(match["window"])
        sums: dict[tuple[str, ...], float] = {}
        with self.lock:
            for series, points in self.samples.items():
                labels = dict(series)
                if labels["__name__"] != match["name"] or not all(
                    (labels.get(k, "") == v) if op == "=" else re.fullmatch(v, labels.get(k, ""))
                    for k, op, v in matchers
                ):
                    continue
                inside = [v for t, v in points if start <= t <= at]
                if len(inside) < 2:
                    continue  # Prometheus too needs two samples for a rate
                if match["fn"] == "delta":
                    value = inside[-1] - inside[0]
                else:
                    value = sum(b - a if b >= a else b for a, b in itertools.pairwise(inside))
                key = tuple(labels.get(label, "") for label in by)
                sums[key] = sums.get(key, 0.0) + value
        return [
            {"metric": dict(zip(by, key, strict=True)), "value": [at, repr(value)]}
            for key, value in sorted(sums.items())
        ]
