"""Hostile servers, URIs and archives against ``kubeserve fetch``: it stays bounded and quiet.

Regression suite for issue 11 (fetch items 9-12): credentials sent across a redirect to
another origin or down to http, secrets of pre-signed URLs printed, no size cap or overall
deadline, tracebacks for expected failures. Every server here is a ``http.server`` on
loopback, in a thread, misbehaving on purpose.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import os
import pathlib
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http import server as http_server

import pytest

from kubeserve.server import cli, fetch

Route = Callable[[http_server.BaseHTTPRequestHandler], None]
MiB = 2**20
TOKEN = "s3cret-bearer"


@dataclasses.dataclass
class Loopback:
    """A running test server: its base URL and the requests it saw (path, Authorization)."""

    base: str
    seen: list[tuple[str, str | None]]


@contextlib.contextmanager
def serving(routes: dict[str, Route], *, tls: ssl.SSLContext | None = None) -> Iterator[Loopback]:
    """Serve ``routes`` (path -> handler) on a free loopback port; 404 for anything else."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http_server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            route = routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            with contextlib.suppress(OSError):  # the client gave up: that is the point
                route(self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield Loopback(f"{scheme}://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()


def body(data: bytes) -> Route:
    def route(h: http_server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def redirect(location: str, code: int = 302) -> Route:
    def route(h: http_server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def endless(*, announce: int | None = None, chunked: bool = False, total: int = 300 * MiB) -> Route:
    """Send up to ``total`` bytes, announcing ``announce`` (a lie, or a refusal's reason)."""

    def route(h: http_server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if announce is not None:
            h.send_header("Content-Length", str(announce))
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        block = b"\0" * (64 * 1024)
        for _ in range(total // len(block)):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)

    return route


def drip(*, every: float, count: int = 1000, headers_too: bool = False) -> Route:
    """Send one byte every ``every`` seconds: of the body, or of the status line itself."""

    def route(h: http_server.BaseHTTPRequestHandler) -> None:
        if headers_too:
            head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * count
            for i in range(len(head)):
                h.wfile.write(head[i : i + 1])
                time.sleep(every)
            return
        h.send_response(200)
        h.send_header("Content-Length", str(count))
        h.end_headers()
        for _ in range(count):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(every)

    return route


def leftovers(parent: pathlib.Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def run(uri: str, dest: pathlib.Path, **options: object) -> tuple[int, str, str]:
    """Run the command's function as the CLI does; give the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = fetch.run(uri, dest, stdout=out, stderr=err, **options)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.startswith("kubeserve fetch: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def gzip_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- 9: credentials stay with their origin --------------------------------------------------


def test_bearer_token_is_not_sent_to_another_port_after_a_redirect(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESERVE_FETCH_BEARER_TOKEN", TOKEN)
    with (
        serving({"/model.onnx": body(b"onnx")}) as other,
        serving({"/model.onnx": redirect(f"{other.base}/model.onnx")}) as first,
    ):
        fetch.fetch(f"{first.base}/model.onnx", tmp_path / "v1")
    assert (tmp_path / "v1" / "model.onnx").read_bytes() == b"onnx"
    assert first.seen == [("/model.onnx", f"Bearer {TOKEN}")]
    assert other.seen == [("/model.onnx", None)]


def test_bearer_token_follows_a_redirect_on_the_same_origin(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBESERVE_FETCH_BEARER_TOKEN", TOKEN)
    with serving({"/old.onnx": redirect("/new.onnx", 301), "/new.onnx": body(b"m")}) as origin:
        fetch.fetch(f"{origin.base}/old.onnx", tmp_path / "v1")
    assert origin.seen == [("/old.onnx", f"Bearer {TOKEN}"), ("/new.onnx", f"Bearer {TOKEN}")]


def test_password_in_the_uri_is_sent_as_basic_auth_and_not_across_origins(
    tmp_path: pathlib.Path,
) -> None:
    with (
        serving({"/m.onnx": body(b"m")}) as other,
        serving({"/m.onnx": redirect(f"{other.base}/m.onnx", 307)}) as first,
    ):
        uri = first.base.replace("://", "://alice:pa%40ss@") + "/m.onnx"
        code, out, err = run(uri, tmp_path / "v1")
    assert code == 0, err
    basic = "Basic " + base64.b64encode(b"alice:pa@ss").decode()
    assert first.seen == [("/m.onnx", basic)]
    assert other.seen == [("/m.onnx", None)]
    assert "alice" not in out and "pa%40ss" not in out


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, pathlib.Path]:
    """A server TLS context for 127.0.0.1 and the self-signed certificate clients trust."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def test_a_redirect_from_https_down_to_http_is_refused(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    tls: tuple[ssl.SSLContext, pathlib.Path],
) -> None:
    context, cert = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("KUBESERVE_FETCH_BEARER_TOKEN", TOKEN)
    with (
        serving({"/m.onnx": body(b"m")}) as plain,
        serving({"/m.onnx": redirect(f"{plain.base}/m.onnx")}, tls=context) as secure,
        serving({"/ok.onnx": body(b"ok")}, tls=context) as fine,
    ):
        code, _, err = run(f"{secure.base}/m.onnx", tmp_path / "v1")
        # The same client over https alone works: the refusal is the downgrade's.
        assert fetch.fetch(f"{fine.base}/ok.onnx", tmp_path / "v2") == tmp_path / "v2"
    assert code == 1
    assert_one_line_error(err, f"{secure.base}/m.onnx", "refusing the redirect", "from https")
    assert secure.seen == [("/m.onnx", f"Bearer {TOKEN}")]
    assert plain.seen == []
    assert not (tmp_path / "v1").exists()


def test_a_redirect_to_another_scheme_is_refused(tmp_path: pathlib.Path) -> None:
    with serving({"/m.onnx": redirect("ftp://127.0.0.1:1/model.onnx")}) as origin:
        code, _, err = run(f"{origin.base}/m.onnx", tmp_path / "v1")
    assert code == 1
    assert_one_line_error(err, "not http(s)")


# --- 10: no secret in any output ------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:hunter2@host/m.onnx", "https://REDACTED@host/m.onnx"),
        ("https://u:p@ss@host/m.onnx", "https://REDACTED@host/m.onnx"),
        (
            "https://b.s3.amazonaws.com/m.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20240101&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
            "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok&X-Amz-Signature=abc123",
            "https://b.s3.amazonaws.com/m.onnx?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=REDACTED&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
            "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED",
        ),
        (
            "https://storage.googleapis.com/b/m?X-Goog-Credential=sa%40p&X-Goog-Signature=f00",
            "https://storage.googleapis.com/b/m?X-Goog-Credential=REDACTED"
            "&X-Goog-Signature=REDACTED",
        ),
        (
            "https://a.blob.core.windows.net/c/m?sv=2022-11-02&se=2030&sig=c2ln",
            "https://a.blob.core.windows.net/c/m?sv=2022-11-02&se=2030&sig=REDACTED",
        ),
        (
            "https://h/m?AWSAccessKeyId=AKIA&Expires=1&Signature=x",
            "https://h/m?AWSAccessKeyId=REDACTED&Expires=1&Signature=REDACTED",
        ),
        ("https://h/m?TOKEN=a&access_token=b", "https://h/m?TOKEN=REDACTED&access_token=REDACTED"),
        ("https://h/m?x-amz-signature=abc", "https://h/m?x-amz-signature=REDACTED"),
        ("https://h/m?version=3&name=model", "https://h/m?version=3&name=model"),
        ("s3://bucket/models/v1", "s3://bucket/models/v1"),
        ("/models/v1/model.onnx", "/models/v1/model.onnx"),
        (
            "HTTP 403 for https://u:p@h/x?sig=1 (see https://docs/)",
            "HTTP 403 for https://REDACTED@h/x?sig=REDACTED (see https://docs/)",
        ),
    ],
)
def test_redact_hides_userinfo_and_signature_parameters(uri: str, shown: str) -> None:
    assert fetch.redact(uri) == shown


@pytest.mark.parametrize("status", ["/missing", "/forbidden", "/ok"])
def test_no_output_shows_a_signature_or_a_password(tmp_path: pathlib.Path, status: str) -> None:
    def forbidden(h: http_server.BaseHTTPRequestHandler) -> None:
        h.send_error(403)

    secrets = ("hunter2", "abc123sig", "AKIAXYZ", "tok3n")
    with serving({"/ok": body(b"m"), "/forbidden": forbidden}) as origin:
        uri = (
            origin.base.replace("://", "://alice:hunter2@")
            + status
            + "?X-Amz-Credential=AKIAXYZ&X-Amz-Signature=abc123sig&X-Amz-Security-Token=tok3n"
        )
        code, out, err = run(uri, tmp_path / "v1")
    assert code == (0 if status == "/ok" else 1), err
    for secret in secrets:
        assert secret not in out + err
    assert "X-Amz-Signature=REDACTED" in out + err


def test_a_refused_connection_names_the_uri_without_its_password(tmp_path: pathlib.Path) -> None:
    port = _closed_port()
    code, _, err = run(f"http://bob:hunter2@127.0.0.1:{port}/m.onnx?sig=zzz", tmp_path / "v1")
    assert code == 1
    assert_one_line_error(err, f"http://REDACTED@127.0.0.1:{port}/m.onnx?sig=REDACTED", "connect")
    assert "hunter2" not in err and "zzz" not in err


def test_an_unexpected_error_is_one_redacted_line(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom at https://u:hunter2@h/x?sig=zzz")

    monkeypatch.setattr(fetch, "_download_http", broken)
    code, _, err = run("https://u:hunter2@h/x?sig=zzz", tmp_path / "v1")
    assert code == 1
    assert_one_line_error(err, "RuntimeError", "a bug in kubeserve fetch")
    assert "hunter2" not in err and "zzz" not in err


def test_the_command_line_passes_the_limits_and_redacts_success(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"x" * 100)
    assert cli.main(["fetch", str(source), str(tmp_path / "a"), "--max-bytes", "10"]) == 1
    assert "--max-bytes (10 bytes" in capsys.readouterr().err
    with serving({"/m.onnx": body(b"m")}) as origin:
        uri = origin.base.replace("://", "://u:hunter2@") + "/m.onnx"
        assert cli.main(["fetch", uri, str(tmp_path / "b"), "--deadline", "30"]) == 0
    assert "hunter2" not in capsys.readouterr().out


# --- 11: bounded in bytes and in time -------------------------------------------------------


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: pathlib.Path) -> None:
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(zipped({"a.bin": b"\0" * (8 * MiB), "b.bin": b"\0" * (8 * MiB)}))
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(fetch.FetchError, match="unpacks to 16777216 bytes, more than --max-bytes"):
        fetch.fetch(str(bomb), tmp_path / "out" / "v1", max_bytes=MiB)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_tar_bomb_is_stopped_while_writing(tmp_path: pathlib.Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip_tar({f"{i}.bin": b"\0" * (2 * MiB) for i in range(4)}))
    with pytest.raises(fetch.FetchError, match=r"bomb.tar.gz unpacks to more than --max-bytes"):
        fetch.fetch(str(bomb), tmp_path / "out" / "v1", max_bytes=3 * MiB)
    assert list((tmp_path / "out").iterdir()) == []
    # Under the cap it unpacks: the cap counts what is written, not the archive's size.
    fetch.fetch(str(bomb), tmp_path / "out" / "v2", max_bytes=8 * MiB)
    assert sum(p.stat().st_size for p in (tmp_path / "out" / "v2").iterdir()) == 8 * MiB


def test_a_content_length_above_the_cap_is_refused_before_reading(tmp_path: pathlib.Path) -> None:
    with serving({"/big.onnx": endless(announce=300 * MiB)}) as origin:
        started = time.monotonic()
        code, _, err = run(f"{origin.base}/big.onnx", tmp_path / "v1", max_bytes=MiB)
    assert code == 1
    assert_one_line_error(err, "announces 314572800 bytes, more than --max-bytes (1048576 bytes")
    assert time.monotonic() - started < 5
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "route",
    [endless(), endless(announce=100, chunked=True)],
    ids=["no-content-length", "content-length-lies-beside-chunked"],
)
def test_a_stream_is_cut_at_the_cap_while_reading(tmp_path: pathlib.Path, route: Route) -> None:
    with serving({"/stream.onnx": route}) as origin:
        code, _, err = run(f"{origin.base}/stream.onnx", tmp_path / "v1", max_bytes=2 * MiB)
    assert code == 1
    assert_one_line_error(err, "the download is more than --max-bytes (2097152 bytes")
    assert leftovers(tmp_path) == []


def test_a_slow_drip_is_stopped_by_the_deadline_not_the_read_timeout(
    tmp_path: pathlib.Path,
) -> None:
    with serving({"/slow.onnx": drip(every=0.2)}) as origin:
        started = time.monotonic()
        code, _, err = run(f"{origin.base}/slow.onnx", tmp_path / "v1", timeout=3, deadline=1)
    assert code == 1
    assert_one_line_error(err, "not finished within --deadline 1 s")
    assert time.monotonic() - started < 3
    assert leftovers(tmp_path) == []


def test_status_line_drip_is_stopped_by_the_deadline(tmp_path: pathlib.Path) -> None:
    with serving({"/slow.onnx": drip(every=0.2, headers_too=True)}) as origin:
        started = time.monotonic()
        code, _, err = run(f"{origin.base}/slow.onnx", tmp_path / "v1", timeout=3, deadline=1)
    assert code == 1
    assert_one_line_error(err, "not finished within --deadline 1 s")
    assert time.monotonic() - started < 3


def test_off_the_main_thread_the_deadline_is_checked_between_reads(tmp_path: pathlib.Path) -> None:
    outcome: list[BaseException] = []

    def attempt(base: str) -> None:
        try:
            fetch.fetch(f"{base}/slow.onnx", tmp_path / "v1", timeout=3, deadline=1)
        except BaseException as exc:
            outcome.append(exc)

    with serving({"/slow.onnx": drip(every=0.2)}) as origin:
        worker = threading.Thread(target=attempt, args=(origin.base,))
        started = time.monotonic()
        worker.start()
        worker.join(timeout=10)
    assert time.monotonic() - started < 3
    assert len(outcome) == 1 and isinstance(outcome[0], fetch.FetchError)
    assert "--deadline 1 s" in str(outcome[0])


def test_a_local_directory_counts_against_the_cap(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "src"
    (source / "1").mkdir(parents=True)
    for i in range(3):
        (source / "1" / f"part{i}").write_bytes(b"x" * 1000)
    with pytest.raises(fetch.FetchError, match="the model directory holds more than --max-bytes"):
        fetch.fetch(f"file://{source}", tmp_path / "v1", max_bytes=2500)
    assert not (tmp_path / "v1").exists()
    fetch.fetch(f"file://{source}", tmp_path / "v2", max_bytes=3000)


def test_an_fsspec_directory_counts_against_the_cap(tmp_path: pathlib.Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/capped/m/a.bin", b"x" * 1000)
    memory.pipe("/capped/m/b.bin", b"x" * 1000)
    with pytest.raises(fetch.FetchError, match="more than --max-bytes"):
        fetch.fetch("memory://capped/m", tmp_path / "v1", max_bytes=1500)
    fetch.fetch("memory://capped/m", tmp_path / "v2", max_bytes=2000)
    assert sorted(p.name for p in (tmp_path / "v2").iterdir()) == ["a.bin", "b.bin"]


# --- 12: one line, exit code 1, for every expected failure ---------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _error_routes() -> dict[str, Route]:
    def fail(h: http_server.BaseHTTPRequestHandler) -> None:
        h.send_error(503)

    return {
        "/bad.zip": body(b"PK not really a zip"),
        "/bad.tar.gz": body(b"\x1f\x8b not really gzip"),
        "/m.onnx": body(b"model"),
        "/unavailable.onnx": fail,
    }


@pytest.mark.parametrize(
    ("path", "needle", "options"),
    [
        ("/dotdot/..", "does not end in a file name", {}),
        ("/bad.zip", "cannot unpack zip archive", {}),
        ("/bad.tar.gz", "cannot unpack tar archive", {}),
        ("/m.onnx", "checksum mismatch", {"sha256": "0" * 64}),
        ("/unavailable.onnx", "HTTP 503", {}),
        ("/missing.onnx", "not found (HTTP 404)", {}),
    ],
)
def test_http_failures_are_one_line_naming_the_uri(
    tmp_path: pathlib.Path, path: str, needle: str, options: dict[str, object]
) -> None:
    with serving(_error_routes()) as origin:
        code, out, err = run(f"{origin.base}{path}", tmp_path / "v1", **options)
    assert (code, out) == (1, "")
    assert_one_line_error(err, f"{origin.base}{path}: ", needle)
    assert leftovers(tmp_path) == [] and not (tmp_path / "v1").exists()


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("ftp://127.0.0.1:{closed}/model.onnx", "cannot connect"),
        ("http://127.0.0.1:{closed}/model.onnx", "cannot connect"),
        ("http://[::1/model.onnx", "not a valid URI"),
        ("http://127.0.0.1:abc/model.onnx", "not a valid URL"),
        ("http://127.0.0.1/a model.onnx?sig=x", "not a valid URL"),
        ("gopher://host/model.onnx", "unknown scheme 'gopher://'"),
    ],
)
def test_uri_failures_through_the_cli_are_one_line_and_exit_1(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], uri: str, needle: str
) -> None:
    uri = uri.replace("{closed}", str(_closed_port()))
    assert cli.main(["fetch", uri, str(tmp_path / "d")]) == 1
    assert_one_line_error(capsys.readouterr().err, fetch.redact(uri) + ": ", needle)


def test_a_write_error_like_a_full_disk_is_one_line(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x" * MiB)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = subprocess.run(
        [sys.executable, "-m", "kubeserve.server", "fetch", str(source), str(tmp_path / "v1")],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_files,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, str(source), "cannot write model.bin: File too large")
    assert leftovers(tmp_path) == [] and not (tmp_path / "v1").exists()


# --- atomicity and containment --------------------------------------------------------------


def test_a_killed_fetch_leaves_no_model_and_the_retry_completes(tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "models" / "v1"
    with serving({"/m.onnx": drip(every=0.05, count=10_000), "/ok.onnx": body(b"ok")}) as origin:
        child = subprocess.Popen(
            [sys.executable, "-m", "kubeserve.server", "fetch", f"{origin.base}/m.onnx", str(dest)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while not list(dest.parent.glob(".v1.fetch-*.part")):
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            time.sleep(0.2)  # some bytes in
        finally:
            child.kill()
            child.wait()
        assert not dest.exists()
        assert leftovers(dest.parent) != []  # what a SIGKILL leaves
        fetch.fetch(f"{origin.base}/ok.onnx", dest)
    assert [p.name for p in dest.iterdir()] == ["ok.onnx"]
    assert leftovers(dest.parent) == []


def _tar_with(*members: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("archive", "needle"),
    [
        (_tar_with(_member("../up.txt")), "escapes the directory"),
        (_tar_with(_member("out", tarfile.SYMTYPE, "../..")), "links outside the directory"),
        (_tar_with(_member("out", tarfile.SYMTYPE, "/tmp")), "links outside the directory"),
        (_tar_with(_member("hard", tarfile.LNKTYPE, "../../x")), "links outside the directory"),
        (
            _tar_with(_member("d", tarfile.SYMTYPE, "."), _member("d/../../up.txt")),
            "escapes the directory",
        ),
        (_tar_with(_member("fifo", tarfile.FIFOTYPE)), "is a device or a pipe"),
        (zipped({"../up.txt": b"x"}), "escapes the directory"),
        (zipped({"/abs/up.txt": b"x"}), "escapes the directory"),
        (zipped({"ok.txt": b"x", "a/../../up.txt": b"x"}), "escapes the directory"),
    ],
    ids=[
        "tar-dotdot",
        "tar-symlink-up",
        "tar-symlink-absolute",
        "tar-hardlink-up",
        "tar-through-own-symlink",
        "tar-fifo",
        "zip-dotdot",
        "zip-absolute",
        "zip-nested-dotdot",
    ],
)
def test_archives_write_into_the_directory_only(
    tmp_path: pathlib.Path, archive: bytes, needle: str
) -> None:
    suffix = ".zip" if archive.startswith(b"PK") else ".tar"
    source = tmp_path / "in" / f"evil{suffix}"
    source.parent.mkdir()
    source.write_bytes(archive)
    dest = tmp_path / "a" / "b" / "v1"
    with pytest.raises(fetch.FetchError, match=needle):
        fetch.fetch(str(source), dest)
    assert not dest.exists()
    everything = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert everything == ["a", "a/b", "in", f"in/evil{suffix}"]


def test_links_inside_the_archive_are_kept(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "ok.tar"
    source.write_bytes(
        _tar_with(
            _member("blobs/abc"),
            _member("1", tarfile.DIRTYPE),
            _member("1/model.onnx", tarfile.SYMTYPE, "../blobs/abc"),
            _member("2", tarfile.DIRTYPE),
            _member("2/model.onnx", tarfile.LNKTYPE, "blobs/abc"),
        )
    )
    fetch.fetch(str(source), tmp_path / "v1")
    assert (tmp_path / "v1" / "1" / "model.onnx").read_bytes() == b"x"
    assert (tmp_path / "v1" / "2" / "model.onnx").read_bytes() == b"x"


def test_absolute_tar_members_land_inside_the_directory(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "abs.tar"
    source.write_bytes(_tar_with(_member("/etc/model.onnx")))  # tar's rule: drop the leading /
    fetch.fetch(str(source), tmp_path / "v1")
    assert (tmp_path / "v1" / "etc" / "model.onnx").read_bytes() == b"x"


def test_object_keys_cannot_leave_the_directory(tmp_path: pathlib.Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/keys/m/ok.bin", b"x")
    memory.pipe("/keys/m/../../up.bin", b"x")
    with pytest.raises(fetch.FetchError, match=r"object '\.\./\.\./up\.bin' escapes the directory"):
        fetch.fetch("memory://keys/m", tmp_path / "a" / "v1")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a"]
