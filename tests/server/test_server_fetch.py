"""``kubeserve fetch``: local and HTTP sources, archives, checksums, atomicity, errors."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import pathlib
import tarfile
import threading
from collections.abc import Iterator

import pytest

from kubeserve.server import cli, fetch


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /secret/* answers 403; /broken/* promises more bytes than it sends."""

    def do_GET(self) -> None:
        if self.path.startswith("/secret/"):
            self.send_error(403)
            return
        if self.path.startswith("/broken/"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    """A local HTTP server over a directory; yields its base URL and the directory."""
    root = tmp_path_factory.mktemp("web")
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _leftovers(parent: pathlib.Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_http_single_file_with_checksum(web, tmp_path: pathlib.Path) -> None:
    base, root = web
    (root / "model.onnx").write_bytes(b"onnx-bytes")
    digest = hashlib.sha256(b"onnx-bytes").hexdigest()
    dest = tmp_path / "models" / "v1"
    assert fetch.fetch(f"{base}/model.onnx", dest, sha256=digest) == dest
    assert (dest / "model.onnx").read_bytes() == b"onnx-bytes"
    assert _leftovers(dest.parent) == []
    assert [p.name for p in dest.iterdir()] == ["model.onnx"]


def test_http_archive_is_unpacked(web, tmp_path: pathlib.Path) -> None:
    base, root = web
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("1/model.onnx", b"a"), ("2/model.onnx", b"b")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "bundle.tar.gz").write_bytes(buf.getvalue())
    dest = tmp_path / "m"
    fetch.fetch(f"{base}/bundle.tar.gz", dest)
    assert (dest / "1" / "model.onnx").read_bytes() == b"a"
    assert (dest / "2" / "model.onnx").read_bytes() == b"b"


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/missing.onnx", "not found (HTTP 404)"),
        ("/secret/model.onnx", "access denied (HTTP 403)"),
        ("/broken/model.onnx", "closed after 10 of 1000 bytes"),
    ],
)
def test_http_errors_leave_nothing_behind(
    web, tmp_path: pathlib.Path, path: str, needle: str
) -> None:
    base, _ = web
    dest = tmp_path / "v1"
    with pytest.raises(fetch.FetchError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        fetch.fetch(base + path, dest)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []  # no half-written staging directory either


def test_checksum_mismatch_fails_and_leaves_nothing(web, tmp_path: pathlib.Path) -> None:
    base, root = web
    (root / "m2.onnx").write_bytes(b"something")
    with pytest.raises(fetch.FetchError, match="checksum mismatch"):
        fetch.fetch(f"{base}/m2.onnx", tmp_path / "v", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_local_directory_and_file_uris(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1" / "model.skops").write_bytes(b"x")
    fetch.fetch(f"file://{src}", tmp_path / "a")
    assert (tmp_path / "a" / "1" / "model.skops").exists()
    fetch.fetch(str(src / "1" / "model.skops"), tmp_path / "b")
    assert (tmp_path / "b" / "model.skops").exists()


def test_existing_destination_is_kept_unless_forced(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src.onnx"
    src.write_bytes(b"new")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"old")
    fetch.fetch(str(src), dest)  # an init container re-run: already complete
    assert (dest / "model.onnx").read_bytes() == b"old"
    fetch.fetch(str(src), dest, force=True)
    assert (dest / "src.onnx").read_bytes() == b"new"
    assert not (dest / "model.onnx").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("ftp2://host/model.onnx", "unknown scheme 'ftp2://'"),
        ("file:///definitely/not/here", "no such file or directory"),
        ("file://otherhost/x", "local path"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], uri: str, needle: str
) -> None:
    assert cli.main(["fetch", uri, str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_success(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.onnx").write_bytes(b"m")
    assert cli.main(["fetch", f"file://{tmp_path}/model.onnx", str(tmp_path / "out")]) == 0
    assert "fetched" in capsys.readouterr().out


def test_s3_without_s3fs_names_the_package(tmp_path: pathlib.Path) -> None:
    with contextlib.suppress(ImportError):
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed; this checks the message when it is not")
    with pytest.raises(fetch.FetchError, match="needs s3fs"):
        fetch.fetch("s3://bucket/model.onnx", tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_archives_cannot_write_outside_the_destination(tmp_path: pathlib.Path) -> None:
    import zipfile

    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    for archive in (evil_tar, evil_zip):
        dest = tmp_path / "out" / archive.stem
        with pytest.raises(fetch.FetchError, match=r"cannot unpack|escapes"):
            fetch.fetch(str(archive), dest)
        assert not dest.exists()
    assert not (tmp_path / "out" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
