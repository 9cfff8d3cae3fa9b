"""Fetch a model (a directory or one file) from a storage URI into a local directory.

The operator runs this as the init container ``kubeserve fetch <storageUri> /mnt/models/<v>``.
Everything is written into a hidden temporary directory beside the destination and renamed
into place at the end, so a crash or a kill mid-download never leaves a directory that looks
complete (rename within one filesystem is atomic). A destination that already exists is
taken as a finished earlier fetch: init containers re-run after pod restarts. Leftovers of a
killed earlier run (``.<dir>.fetch-*``) are removed first: they would count against the
volume's size limit.

Schemes: local paths and ``file://``; ``http(s)://`` with the standard library (one file;
``.tar.gz``/``.tgz``/``.tar``/``.zip`` archives are unpacked); anything else fsspec knows
(``s3://`` with s3fs, ``gs://`` with gcsfs, ...), file or directory.

The servers and archives may be hostile, so every fetch is bounded:

- ``max_bytes`` caps what the download writes and, separately, what an archive unpacks to.
  Both are counted while writing (a Content-Length above the cap is refused before reading;
  zip headers only give an early refusal, never the final word).
- ``deadline`` bounds the whole fetch: a SIGALRM interrupts whatever blocks (the main thread
  only; elsewhere it is checked between reads, so a fetch may run one ``timeout`` over).
  ``timeout`` is the most one network read may wait.
- Credentials (``KUBESERVE_FETCH_BEARER_TOKEN``, or ``user:password@`` in the URI, sent as
  Basic) go to the origin named in the URI only: a redirect to another scheme, host or port
  is followed without them. A redirect from https to http is refused, with or without
  credentials: the plain-text leg would let anyone on the path swap the model, and a model is
  code the server runs (a storage URI that says http:// is the owner's own choice).
- Every URI that reaches a message goes through `redact` first.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import glob
import hashlib
import http.client
import os
import pathlib
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO, TextIO

from kubeserve import redaction

CHUNK = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * 2**30  # the operator's default model.maxSize, 10Gi
DEFAULT_TIMEOUT = 60.0
DEFAULT_DEADLINE = 30 * 60.0
BEARER_TOKEN_ENV = "KUBESERVE_FETCH_BEARER_TOKEN"
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


class _DeadlinePassed(BaseException):
    """Raised by the deadline's alarm; a BaseException so that no library swallows it."""


# --- redaction: kubeserve.redaction (the operator's status messages use it too) ---------

REDACTED = redaction.REDACTED
redact = redaction.redact


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- limits ---------------------------------------------------------------------------------


class _Clock:
    """The fetch's overall deadline, checked between reads and enforced by an alarm."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def problem(self) -> str:
        return f"not finished within --deadline {self.seconds:g} s"

    def check(self) -> None:
        if time.monotonic() >= self.ends:
            raise FetchError(self.problem())

    def read_timeout(self, per_read: float) -> float:
        """Give the socket timeout for the next wait: the per-read one, or less near the end."""
        self.check()
        return max(0.001, min(per_read, self.ends - time.monotonic()))

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        """Interrupt whatever blocks at the deadline (main thread, no other timer only)."""
        if (
            threading.current_thread() is not threading.main_thread()
            or not hasattr(signal, "setitimer")
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0
        ):
            yield
            return
        armed = True

        def ring(_signum: int, _frame: FrameType | None) -> None:
            if armed:
                raise _DeadlinePassed

        previous = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.ends - time.monotonic()))
        try:
            yield
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@dataclasses.dataclass(kw_only=True)
class _Meter:
    """Count the bytes written for one purpose against --max-bytes, and time against the clock."""

    limit: int
    clock: _Clock
    what: str  # "the download", "model.tar.gz unpacks to"
    written: int = 0

    def add(self, count: int) -> None:
        """Count ``count`` bytes about to be written; refuse them past the cap."""
        self.written += count
        if self.written > self.limit:
            raise FetchError(f"{self.what} more than {_max_bytes_text(self.limit)}")
        self.clock.check()


def _max_bytes_text(limit: int) -> str:
    return f"--max-bytes ({limit} bytes; an InferenceService sets it with model.maxSize)"


def _create(target: pathlib.Path) -> IO[bytes]:
    """Open a new file for writing; never write through a link or into an existing file."""
    try:
        if target.is_symlink() or target.is_file():
            target.unlink()  # a later archive member of the same name replaces the earlier
        return target.open("xb")
    except OSError as exc:
        raise FetchError(f"cannot write {target.name}: {exc.strerror or exc}") from None


def _stream(read: Callable[[int], bytes], target: pathlib.Path, meter: _Meter) -> None:
    """Copy from ``read`` into a new file ``target``, counting every chunk before writing it."""
    with _create(target) as out:
        while chunk := read(CHUNK):
            meter.add(len(chunk))
            try:
                out.write(chunk)
            except OSError as exc:  # disk full, file too large
                raise FetchError(f"cannot write {target.name}: {exc.strerror or exc}") from None


def _inside(root: pathlib.Path, name: str, *, what: str) -> pathlib.Path:
    """Give ``root / name``, refusing a name that could lead out of ``root``.

    Lexical (no absolute name, no ``..``) and on disk: no directory on the way may be a
    symbolic link, so a write never passes through one, whatever earlier entries made.
    """
    relative = pathlib.PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise FetchError(f"{what} {name!r} escapes the directory")
    current = root
    for part in relative.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise FetchError(f"{what} {name!r} goes through a symbolic link")
    return root.joinpath(*relative.parts)


# --- the command ----------------------------------------------------------------------------


def run(
    uri: str,
    dest: pathlib.Path,
    *,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float = DEFAULT_DEADLINE,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``kubeserve fetch``: one redacted line on success or failure, the exit code back.

    Exit code 2 for unusable limits, 1 for a failed fetch, 0 when ``dest`` holds the model.
    """
    out, err = stdout or sys.stdout, stderr or sys.stderr
    problems = []
    if max_bytes < 1:
        problems.append("--max-bytes must be at least 1")
    if timeout <= 0 or deadline <= 0:
        problems.append("--timeout and --deadline must be positive")
    if problems:
        print("kubeserve fetch: error: " + "; ".join(problems), file=err)
        return 2
    try:
        where = fetch(
            uri,
            dest,
            sha256=sha256,
            force=force,
            timeout=timeout,
            max_bytes=max_bytes,
            deadline=deadline,
        )
    except FetchError as exc:
        print(f"kubeserve fetch: error: {exc}", file=err)
        return 1
    except Exception as exc:  # a bug: still one line, and no secret in a traceback
        problem = _one_line(redact(f"{uri}: unexpected {type(exc).__name__}: {exc}"))
        print(f"kubeserve fetch: error: {problem} (a bug in kubeserve fetch)", file=err)
        return 1
    print(f"fetched {redact(uri)} -> {where}", file=out)
    return 0


def fetch(
    uri: str,
    dest: pathlib.Path,
    *,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float = DEFAULT_DEADLINE,
) -> pathlib.Path:
    """Fetch ``uri`` into directory ``dest`` atomically and return ``dest``.

    Every expected failure is a `FetchError` whose one-line message starts with the redacted
    URI; ``dest`` is then left as it was.
    """
    if max_bytes < 1 or timeout <= 0 or deadline <= 0:
        raise ValueError("max_bytes, timeout and deadline must be positive")
    clock = _Clock(deadline)
    try:
        with clock.alarm():
            _fetch(
                uri,
                dest,
                sha256=sha256,
                force=force,
                timeout=timeout,
                max_bytes=max_bytes,
                clock=clock,
            )
    except _DeadlinePassed:
        raise FetchError(_one_line(redact(f"{uri}: {clock.problem()}"))) from None
    except FetchError as exc:
        raise FetchError(_one_line(redact(f"{uri}: {exc}"))) from None
    except OSError as exc:  # the destination's filesystem: permissions, disk full
        problem = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else exc
        raise FetchError(_one_line(redact(f"{uri}: {problem}"))) from None
    return dest


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Job:
    """One fetch's inputs, passed down to whichever source reads the URI."""

    staging: pathlib.Path
    sha256: str | None
    timeout: float
    max_bytes: int
    clock: _Clock

    def meter(self, what: str) -> _Meter:
        return _Meter(limit=self.max_bytes, clock=self.clock, what=what)

    def part(self) -> pathlib.Path:
        """Give a new temporary file beside the staging directory, for a download."""
        fd, name = tempfile.mkstemp(
            prefix=self.staging.name + "-", suffix=".part", dir=self.staging.parent
        )
        os.close(fd)
        return pathlib.Path(name)


def _fetch(
    uri: str,
    dest: pathlib.Path,
    *,
    sha256: str | None,
    force: bool,
    timeout: float,
    max_bytes: int,
    clock: _Clock,
) -> None:
    if dest.exists() and not force:
        if dest.is_dir() and any(dest.iterdir()):
            return  # a completed earlier fetch (the rename makes it all or nothing)
        if not dest.is_dir():
            raise FetchError(f"{dest} exists and is not a directory")
    try:
        parsed = urllib.parse.urlsplit(uri)
    except ValueError as exc:
        raise FetchError(f"not a valid URI: {exc}") from None
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(dest)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=parent))
    except OSError as exc:
        raise FetchError(f"cannot create {parent}: {exc.strerror}") from None
    job = _Job(staging=staging, sha256=sha256, timeout=timeout, max_bytes=max_bytes, clock=clock)
    try:
        scheme = parsed.scheme.lower()
        if scheme in ("", "file"):
            _copy_local(_local_path(uri, parsed), job)
        elif scheme in ("http", "https"):
            _download_http(parsed, job)
        else:
            _fetch_fsspec(uri, scheme, job)
        if dest.exists():  # --force, or an empty directory someone created
            old = dest.with_name(f".{dest.name}.fetch-old-{os.getpid()}")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for part in parent.glob(f"{glob.escape(staging.name)}-*.part"):
            part.unlink(missing_ok=True)


def _remove_leftovers(dest: pathlib.Path) -> None:
    """Remove what a killed earlier fetch of ``dest`` left: staging directories and parts.

    Only one fetch of a directory runs at a time (an init container); a second one started
    by hand beside it would lose its staging directory and fail, never leave a mix.
    """
    for leftover in dest.parent.glob(f".{glob.escape(dest.name)}.fetch-*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


# --- local sources --------------------------------------------------------------------------


def _local_path(uri: str, parsed: urllib.parse.SplitResult) -> pathlib.Path:
    if parsed.scheme == "":
        return pathlib.Path(uri)
    if parsed.netloc not in ("", "localhost"):
        raise FetchError("file:// URIs name a local path (file:///path)")
    return pathlib.Path(urllib.parse.unquote(parsed.path))


def _copy_local(source: pathlib.Path, job: _Job) -> None:
    if not source.exists():
        raise FetchError("no such file or directory")
    if source.is_dir():
        _no_checksum_for_directories(job.sha256)
        meter = job.meter("the model directory holds")

        def copy(src: str, dst: str) -> None:
            with open(src, "rb") as f:
                _stream(f.read, pathlib.Path(dst), meter)

        try:
            shutil.copytree(source, job.staging, dirs_exist_ok=True, copy_function=copy)
        except shutil.Error as exc:  # copytree gathers (source, target, why) per file
            problems = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
            first = f"{problems[0][0]}: {problems[0][2]}" if problems else str(exc)
            raise FetchError(f"cannot copy {first}") from None
    else:
        _place_file(source, source.name, job, owned=False)


def _no_checksum_for_directories(sha256: str | None) -> None:
    if sha256:
        raise FetchError("--sha256 checks a single file (or archive), not a directory")


# --- one fetched file: check it, then keep it or unpack it ----------------------------------


def _place_file(path: pathlib.Path, name: str, job: _Job, *, owned: bool) -> None:
    """Check one fetched file, then put it into staging, unpacking archives.

    ``owned`` says ``path`` is our own temporary download, which is moved rather than copied.
    """
    if job.sha256:
        _verify(path, name, job.sha256)
    lowered = name.lower()
    if lowered.endswith((".tar.gz", ".tgz", ".tar")):
        _unpack_tar(path, name, job)
    elif lowered.endswith(".zip"):
        _unpack_zip(path, name, job)
    elif owned:
        path.rename(job.staging / name)
    else:
        with path.open("rb") as f:
            _stream(f.read, job.staging / name, job.meter(f"{name} is"))


def _unpack_tar(path: pathlib.Path, name: str, job: _Job) -> None:
    """Unpack member by member: the "data" filter's rules, our own byte count while writing."""
    meter = job.meter(f"{name} unpacks to")
    staging = job.staging
    member_of = f"{name}: archive member"
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                job.clock.check()
                try:
                    safe = tarfile.data_filter(member, str(staging))
                except tarfile.FilterError as exc:
                    raise FetchError(f"{member_of} {member.name!r} {_refusal(exc)}") from None
                target = _inside(staging, safe.name, what=member_of)
                if safe.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if safe.isreg():
                    source = tar.extractfile(member)
                    if source is None:
                        raise FetchError(f"{name}: archive member {member.name!r} has no data")
                    with source:
                        _stream(source.read, target, meter)
                    if safe.mode is not None:
                        target.chmod(safe.mode)
                elif safe.issym():
                    target.unlink(missing_ok=True)
                    target.symlink_to(safe.linkname)
                elif safe.islnk():  # a second name for a file already unpacked: no new bytes
                    linked = _inside(staging, safe.linkname, what=member_of)
                    if not linked.is_file():
                        raise FetchError(
                            f"{name}: archive member {member.name!r} links to a missing file"
                        )
                    target.unlink(missing_ok=True)
                    os.link(linked, target, follow_symlinks=False)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise FetchError(f"{name}: cannot unpack tar archive: {exc}") from None


def _refusal(exc: tarfile.FilterError) -> str:
    """Say why tarfile's data filter refused a member, without the filter's absolute paths."""
    if isinstance(exc, tarfile.OutsideDestinationError | tarfile.AbsolutePathError):
        return "escapes the directory"
    if isinstance(exc, tarfile.LinkOutsideDestinationError | tarfile.AbsoluteLinkError):
        return "links outside the directory"
    if isinstance(exc, tarfile.SpecialFileError):
        return "is a device or a pipe, not a file"
    return f"is refused: {exc}"


def _unpack_zip(path: pathlib.Path, name: str, job: _Job) -> None:
    """Unpack entry by entry, refusing early on the sizes the headers declare (which can lie)."""
    meter = job.meter(f"{name} unpacks to")
    staging = job.staging
    member_of = f"{name}: archive member"
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
            declared = sum(entry.file_size for entry in entries)
            if declared > job.max_bytes:
                raise FetchError(
                    f"{name} unpacks to {declared} bytes, more than {_max_bytes_text(job.max_bytes)}"
                )
            for entry in entries:  # all names checked before anything is written
                _inside(staging, entry.filename, what=member_of)
            for entry in entries:
                job.clock.check()
                target = _inside(staging, entry.filename, what=member_of)
                if entry.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(entry) as source:
                    _stream(source.read, target, meter)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        OSError,
    ) as exc:
        # RuntimeError: encrypted entries; NotImplementedError: unknown compression
        raise FetchError(f"{name}: cannot unpack zip archive: {exc}") from None


def _verify(path: pathlib.Path, name: str, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected.strip().lower():
        raise FetchError(
            f"checksum mismatch for {name}: expected {expected}, got {digest.hexdigest()}"
        )


def _file_name(path: str) -> str:
    """Name the file a URL's path ends in; refuse a path that ends in no usable name."""
    name = pathlib.PurePosixPath(path).name or "model"
    if name in (".", ".."):
        raise FetchError("the URL's path does not end in a file name")
    return name


# --- http(s) --------------------------------------------------------------------------------


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, keeping the credentials for the origin they were meant for."""

    max_redirections = 10

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new.scheme.lower() not in ("http", "https"):
            raise FetchError(f"redirected (HTTP {code}) to {newurl}, which is not http(s)")
        if old.scheme.lower() == "https" and new.scheme.lower() == "http":
            raise FetchError(
                f"refusing the redirect (HTTP {code}) from https to {newurl}: plain http "
                "would let anyone on the path change the model"
            )
        if new.username is not None or new.password is not None:
            raise FetchError(
                f"refusing the redirect (HTTP {code}) to {newurl}: it carries credentials"
            )
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and _origin(old) != _origin(new):
            follow.remove_header("Authorization")  # another origin: no token, no password
        return follow


def _authorization(parsed: urllib.parse.SplitResult) -> str | None:
    token = os.environ.get(BEARER_TOKEN_ENV)
    if token:
        return f"Bearer {token}"
    if parsed.username is not None or parsed.password is not None:
        user = urllib.parse.unquote(parsed.username or "")
        password = urllib.parse.unquote(parsed.password or "")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return None


def _declared_length(response: http.client.HTTPResponse) -> int | None:
    """Give the body length the server announced, if it announced one that counts."""
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        return None  # Content-Length beside chunked means nothing (RFC 9112 6.3)
    raw = response.headers.get("Content-Length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _download_http(parsed: urllib.parse.SplitResult, job: _Job) -> None:
    name = _file_name(parsed.path)
    authorization = _authorization(parsed)
    # Credentials travel in the header only: urllib cannot use userinfo, and it would show.
    netloc = parsed.netloc.rpartition("@")[2]
    url = urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    request = urllib.request.Request(url, headers={"User-Agent": "kubeserve-fetch"})
    if authorization:
        request.add_header("Authorization", authorization)
    opener = urllib.request.build_opener(_Redirects())
    part = job.part()
    try:
        with opener.open(request, timeout=job.clock.read_timeout(job.timeout)) as response:
            declared = _declared_length(response)
            if declared is not None and declared > job.max_bytes:
                raise FetchError(
                    f"the server announces {declared} bytes, more than "
                    f"{_max_bytes_text(job.max_bytes)}"
                )
            meter = job.meter("the download is")
            _stream(response.read1, part, meter)
        if declared is not None and meter.written != declared:
            raise FetchError(f"connection closed after {meter.written} of {declared} bytes")
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (401, 403):
            raise FetchError(
                f"access denied (HTTP {exc.code}); set {BEARER_TOKEN_ENV} or check the credentials"
            ) from None
        if exc.code == 404:
            raise FetchError("not found (HTTP 404)") from None
        raise FetchError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise FetchError(f"no answer within {job.timeout:g} s (--timeout)") from None
        raise FetchError(f"cannot connect: {exc.reason}") from None
    except TimeoutError:
        raise FetchError(f"no data for {job.timeout:g} s (--timeout)") from None
    except (http.client.InvalidURL, ValueError) as exc:
        raise FetchError(f"not a valid URL: {exc}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"network error: {type(exc).__name__}: {exc}") from None
    _place_file(part, name, job, owned=True)


# --- fsspec (s3, gs, ...) -------------------------------------------------------------------


def _fetch_fsspec(uri: str, scheme: str, job: _Job) -> None:
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise FetchError(f"scheme '{scheme}://' needs fsspec (pip install fsspec)") from None
    if scheme not in known_implementations:
        raise FetchError(
            f"unknown scheme '{scheme}://'; supported: file://, http(s)://, s3://, gs://, "
            "and other fsspec protocols"
        )
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError:
        package = _FSSPEC_PACKAGES.get(scheme, "the fsspec backend")
        raise FetchError(f"scheme '{scheme}://' needs {package} installed") from None
    except Exception as exc:  # some backends connect here (ftp): their own error types
        raise FetchError(f"cannot connect: {type(exc).__name__}: {exc}") from None
    try:
        if fs.isdir(path):
            _no_checksum_for_directories(job.sha256)
            prefix = path.rstrip("/") + "/"
            meter = job.meter("the model directory holds")
            for remote in sorted(fs.find(path)):
                if not remote.startswith(prefix):
                    continue
                target = _inside(job.staging, remote[len(prefix) :], what="object")
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open(remote, "rb") as source:
                    _stream(source.read, target, meter)
        elif fs.exists(path):
            name = _file_name(path)
            part = job.part()
            with fs.open(path, "rb") as source:
                _stream(source.read, part, job.meter("the download is"))
            _place_file(part, name, job, owned=True)
        else:
            raise FetchError("not found")
    except FetchError:
        raise
    except PermissionError as exc:
        raise FetchError(f"access denied: {exc}") from None
    except FileNotFoundError:
        raise FetchError("not found") from None
    except Exception as exc:  # backends raise their own error types (botocore, ...)
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
