"""Fetch a model (a directory or one file) from a storage URI into a local directory.

The operator runs this as the init container ``kubeserve fetch <storageUri> /mnt/models/<v>``.
Everything is written into a hidden temporary directory beside the destination and renamed
into place at the end, so a crash or a kill mid-download never leaves a directory that looks
complete (rename within one filesystem is atomic). A destination that already exists is
taken as a finished earlier fetch: init containers re-run after pod restarts.

Schemes: local paths and ``file://``; ``http(s)://`` with the standard library (one file;
``.tar.gz``/``.tgz``/``.zip`` archives are unpacked); anything else fsspec knows
(``s3://`` with s3fs, ``gs://`` with gcsfs, ...), file or directory.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

CHUNK = 1024 * 1024
# fsspec protocols and the package each needs; named in the error when it is missing.
_FSSPEC_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "hf": "huggingface_hub",
}


class FetchError(Exception):
    """The model could not be fetched; the message says why in one line."""


def fetch(
    uri: str,
    dest: pathlib.Path,
    *,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Fetch ``uri`` into directory ``dest`` atomically and return ``dest``."""
    if dest.exists() and not force:
        if dest.is_dir() and any(dest.iterdir()):
            return dest  # a completed earlier fetch (the rename makes it all or nothing)
        if not dest.is_dir():
            raise FetchError(f"{dest} exists and is not a directory")
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=parent))
    except OSError as exc:
        raise FetchError(f"cannot create {parent}: {exc.strerror}") from None
    try:
        parsed = urllib.parse.urlsplit(uri)
        scheme = parsed.scheme.lower()
        if scheme in ("", "file"):
            _copy_local(_local_path(uri, parsed), staging, sha256)
        elif scheme in ("http", "https"):
            _download_http(uri, staging, sha256, timeout=timeout)
        else:
            _fetch_fsspec(uri, scheme, staging, sha256)
        if dest.exists():  # --force, or an empty directory someone created
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _local_path(uri: str, parsed: urllib.parse.SplitResult) -> pathlib.Path:
    if parsed.scheme == "":
        return pathlib.Path(uri)
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(f"{uri}: file:// URIs name a local path (file:///path)")
    return pathlib.Path(urllib.parse.unquote(parsed.path))


def _copy_local(source: pathlib.Path, staging: pathlib.Path, sha256: str | None) -> None:
    if not source.exists():
        raise FetchError(f"{source}: no such file or directory")
    try:
        if source.is_dir():
            _no_checksum_for_directories(sha256)
            shutil.copytree(source, staging, dirs_exist_ok=True)
        else:
            _place_file(source, staging, source.name, sha256)
    except OSError as exc:
        raise FetchError(f"cannot copy {source}: {exc}") from None


def _no_checksum_for_directories(sha256: str | None) -> None:
    if sha256:
        raise FetchError("--sha256 checks a single file (or archive), not a directory")


def _place_file(path: pathlib.Path, staging: pathlib.Path, name: str, sha256: str | None) -> None:
    """Check one fetched file, then put it into staging, unpacking archives."""
    if sha256:
        _verify(path, name, sha256)
    lowered = name.lower()
    if lowered.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path) as tar:
                if not hasattr(tarfile, "data_filter"):  # Python < 3.11.4
                    raise FetchError(
                        f"{name}: unpacking tar archives safely needs Python 3.11.4 or newer"
                    )
                tar.extractall(staging, filter="data")  # "data" refuses ../ and links out
        except (tarfile.TarError, OSError) as exc:
            raise FetchError(f"{name}: cannot unpack tar archive: {exc}") from None
    elif lowered.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    target = (staging / member).resolve()
                    if not target.is_relative_to(staging.resolve()):
                        raise FetchError(f"{name}: archive member {member!r} escapes the directory")
                zf.extractall(staging)
        except (zipfile.BadZipFile, OSError) as exc:
            raise FetchError(f"{name}: cannot unpack zip archive: {exc}") from None
    else:
        shutil.copyfile(path, staging / name)


def _download_http(uri: str, staging: pathlib.Path, sha256: str | None, *, timeout: float) -> None:
    name = pathlib.PurePosixPath(urllib.parse.urlsplit(uri).path).name or "model"
    request = urllib.request.Request(uri, headers={"User-Agent": "kubeserve-fetch"})
    token = os.environ.get("KUBESERVE_FETCH_BEARER_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    part = staging / (".download-" + name)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
            expected = response.headers.get("Content-Length")
            got = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
        if expected is not None and got != int(expected):
            raise FetchError(f"{uri}: connection closed after {got} of {expected} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise FetchError(
                f"{uri}: access denied (HTTP {exc.code}); set KUBESERVE_FETCH_BEARER_TOKEN or "
                "check the credentials"
            ) from None
        if exc.code == 404:
            raise FetchError(f"{uri}: not found (HTTP 404)") from None
        raise FetchError(f"{uri}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{uri}: cannot connect: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise FetchError(f"{uri}: network error: {exc}") from None
    try:
        _place_file(part, staging, name, sha256)
    finally:
        part.unlink(missing_ok=True)


def _fetch_fsspec(uri: str, scheme: str, staging: pathlib.Path, sha256: str | None) -> None:
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise FetchError(f"{uri}: scheme '{scheme}://' needs fsspec (pip install fsspec)") from None
    if scheme not in known_implementations:
        raise FetchError(
            f"{uri}: unknown scheme '{scheme}://'; supported: file://, http(s)://, s3://, gs://, "
            "and other fsspec protocols"
        )
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError:
        package = _FSSPEC_PACKAGES.get(scheme, "the fsspec backend")
        raise FetchError(f"{uri}: scheme '{scheme}://' needs {package} installed") from None
    try:
        if fs.isdir(path):
            _no_checksum_for_directories(sha256)
            fs.get(path.rstrip("/") + "/", str(staging), recursive=True)
        elif fs.exists(path):
            name = pathlib.PurePosixPath(path).name
            local = staging / (".download-" + name)
            fs.get(path, str(local))
            try:
                _place_file(local, staging, name, sha256)
            finally:
                local.unlink(missing_ok=True)
        else:
            raise FetchError(f"{uri}: not found")
    except FetchError:
        raise
    except PermissionError as exc:
        raise FetchError(f"{uri}: access denied: {exc}") from None
    except FileNotFoundError:
        raise FetchError(f"{uri}: not found") from None
    except Exception as exc:  # backends raise their own error types (botocore, ...)
        raise FetchError(f"{uri}: {type(exc).__name__}: {exc}") from None


def _verify(path: pathlib.Path, name: str, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected.strip().lower():
        raise FetchError(
            f"checksum mismatch for {name}: expected {expected}, got {digest.hexdigest()}"
        )
