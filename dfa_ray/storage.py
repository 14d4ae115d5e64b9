"""One filesystem layer for local paths and ``s3://bucket/prefix`` URIs.

``resolve(uri)`` turns a URI into a ``(pyarrow.fs.FileSystem, path)`` pair, which pyarrow's Parquet
reader/writer and ``ray.data.read_parquet(path, filesystem=fs)`` take directly. S3 settings come from
the standard AWS environment variables:

- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` (optional)
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (``us-east-1`` when an endpoint is given without one)
- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: ``http://host:port`` selects plain HTTP
- ``AWS_MAX_ATTEMPTS`` (default 7): tries per request, with exponential backoff between them (a random
  wait below 1, 2, 4, 8, 16, then 20 s before each retry: ~30 s in all at 7, at most 51 s). It
  bounds how long a job waits out an unreachable store before failing.
- ``DFA_S3_CONNECT_TIMEOUT`` (seconds, default 5): how long one try waits for a TCP connection.
- ``DFA_S3_REQUEST_TIMEOUT`` (whole seconds, default 10): how long one try waits while no byte
  arrives. It is an idle timeout, so a large transfer that keeps moving is never cut. A store that
  accepts connections but never answers (a frozen server) costs each request
  ``AWS_MAX_ATTEMPTS x DFA_S3_REQUEST_TIMEOUT`` plus the backoff: about two minutes at the defaults.

Both clients, pyarrow's (every read and write) and boto3's (bucket creation), take these settings.
A request that fails raises a StorageError naming the URI, the endpoint and the operation, on one line.

Without an access key pyarrow falls back to its own credential chain (config files, instance
metadata). Credentials never appear in exceptions, logs or reprs: every storage failure is re-raised
as ``StorageError`` naming the URI, with any credential value scrubbed from the message.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

S3_SCHEME = "s3://"
_DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_ATTEMPTS = 7
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 10


class StorageError(OSError):
    """A storage operation failed; the message names the URI and never a credential."""


@dataclass(frozen=True)
class S3Settings:
    """S3 connection settings; the secret and session token are kept out of ``repr``."""

    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    endpoint: str | None = None  # host:port, no scheme
    scheme: str = "https"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # seconds per try to connect
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT  # seconds per try without a byte received

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Read the standard AWS_* variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        endpoint_url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        endpoint, scheme = None, "https"
        if endpoint_url:
            parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise StorageError(f"S3 endpoint URL {endpoint_url!r} must look like http(s)://host:port")
            endpoint, scheme = parts.netloc, parts.scheme
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        if region is None and endpoint is not None:
            # A custom endpoint has no region to discover; asking AWS for one would just time out.
            region = _DEFAULT_REGION
        return cls(
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=region,
            endpoint=endpoint,
            scheme=scheme,
            max_attempts=_whole_number(env, "AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
            connect_timeout=_seconds(env, "DFA_S3_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            # curl, under pyarrow, counts this timeout in whole seconds and takes 0 as "wait forever".
            request_timeout=_whole_number(env, "DFA_S3_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT),
        )

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as a URL (``scheme://host:port``), or None for AWS itself."""
        return None if self.endpoint is None else f"{self.scheme}://{self.endpoint}"

    @property
    def endpoint_name(self) -> str:
        """The endpoint as errors name it: its URL, or AWS S3 and the region."""
        return self.endpoint_url or f"AWS S3 ({self.region or 'default region'})"

    def scrub(self, text: str) -> str:
        """Replace every credential value in ``text`` with ``***``."""
        for secret in (self.secret_key, self.session_token, self.access_key):
            if secret:
                text = text.replace(secret, "***")
        return text


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    """The whole number >= 1 that variable ``name`` holds (``default`` when unset or empty)."""
    text = env.get(name) or str(default)
    if not text.isdigit() or int(text) < 1:
        raise StorageError(f"{name}={text!r} must be a whole number >= 1")
    return int(text)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """The positive number of seconds that variable ``name`` holds (``default`` when unset or empty)."""
    text = env.get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise StorageError(f"{name}={text!r} must be a number of seconds > 0")
    return value


def is_s3(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"S3 URI {uri!r} names no bucket")
    return bucket, key.strip("/")


def _check_components(parts: list[str], what: str) -> None:
    """Reject empty, ``.`` and ``..`` path components, which would escape or alias a prefix."""
    for part in parts:
        if part in ("", ".", ".."):
            raise StorageError(f"{what}: path component {part!r} is not allowed")


def join(uri: str | os.PathLike, *parts: str) -> str:
    """Append relative key parts to a local path or S3 URI, refusing ``..`` and absolute parts."""
    base = str(uri)
    for part in parts:
        if not isinstance(part, str) or not part:
            raise StorageError(f"cannot join {part!r} onto {base!r}: parts must be non-empty strings")
        if part.startswith("/") or "\\" in part or (len(part) > 1 and part[1] == ":"):
            raise StorageError(f"cannot join {part!r} onto {base!r}: parts must be relative keys")
        _check_components(part.split("/"), f"cannot join {part!r} onto {base!r}")
    return "/".join([base.rstrip("/"), *parts]) if parts else base


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        session_token=settings.session_token,
        region=settings.region,
        endpoint_override=settings.endpoint,
        scheme=settings.scheme,
        connect_timeout=settings.connect_timeout,
        request_timeout=settings.request_timeout,
        # S3-compatible stores answer 503/SlowDown under load; retry with backoff rather than fail a job.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=settings.max_attempts),
    )


def s3_filesystem(settings: S3Settings | None = None) -> pafs.S3FileSystem:
    """A pyarrow S3FileSystem for ``settings`` (default: from the environment); cached per settings."""
    return _s3_filesystem(settings or S3Settings.from_env())


def resolve(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """Map a local path, ``file://`` URI or ``s3://bucket/prefix`` to ``(filesystem, path)``."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        if key:
            _check_components(key.split("/"), f"S3 URI {text!r}")
        return s3_filesystem(), f"{bucket}/{key}" if key else bucket
    if "://" in text and not text.startswith("file://"):
        raise StorageError(f"unsupported URI scheme in {text!r}: use a local path or s3://bucket/prefix")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return pafs.LocalFileSystem(), str(Path(text).expanduser().absolute())


def to_uri(filesystem: pafs.FileSystem, path: str) -> str:
    """Inverse of ``resolve``: the URI of ``path`` on ``filesystem``."""
    return S3_SCHEME + path if filesystem.type_name == "s3" else path


@contextmanager
def storage_errors(uri: str | os.PathLike, action: str) -> Iterator[None]:
    """Re-raise pyarrow/OS errors as one-line ``StorageError``s naming the URI (and, on S3, the
    endpoint), with credentials scrubbed."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        # A Ray task's error carries the remote traceback; its last line is the error itself.
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        where = ""
        if is_s3(uri):
            settings = S3Settings.from_env()
            where = f" at {settings.endpoint_name}"
            reason = settings.scrub(reason)
            if "Timeout was reached" in reason:  # curl's words for a connect or read timeout
                # Say which settings bounded the wait, so an operator knows what to raise.
                reason += (
                    f" (each of AWS_MAX_ATTEMPTS={settings.max_attempts} tries timed out; "
                    f"DFA_S3_CONNECT_TIMEOUT={settings.connect_timeout:g} s, "
                    f"DFA_S3_REQUEST_TIMEOUT={settings.request_timeout} s)"
                )
        # `from None`: the original exception text is already carried (scrubbed) in our message.
        raise StorageError(f"could not {action} {uri}{where}: {reason}") from None


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file or directory/prefix exists at ``uri``."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "check"):
        return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def is_file(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` is an existing file (object)."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "check"):
        return filesystem.get_file_info(path).type == pafs.FileType.File


def makedirs(uri: str | os.PathLike) -> None:
    """Create a local directory (and parents); a no-op on S3, where prefixes need no creation."""
    filesystem, path = resolve(uri)
    if filesystem.type_name != "s3":
        with storage_errors(uri, "create directory"):
            filesystem.create_dir(path, recursive=True)


@contextmanager
def open_output(uri: str | os.PathLike) -> Iterator[pa.NativeFile]:
    """Open ``uri`` for writing (creating local parent directories); on error the partial file is removed."""
    filesystem, path = resolve(uri)
    parent = str(uri).rstrip("/").rpartition("/")[0]
    if parent and not is_s3(uri):
        makedirs(parent)
    with storage_errors(uri, "write"):
        stream = filesystem.open_output_stream(path)
    try:
        yield stream
    except BaseException:
        # pyarrow cannot abort an upload, so finish it and remove the partial file: no half-written
        # file is ever left behind for a reader to trust.
        try:
            stream.close()
            filesystem.delete_file(path)
        except (OSError, pa.ArrowException):
            pass
        raise
    with storage_errors(uri, "finish writing"):
        stream.close()


def open_input(uri: str | os.PathLike) -> pa.NativeFile:
    """Open ``uri`` for random-access reading; errors name the URI."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "open"):
        return filesystem.open_input_file(path)


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing any existing file."""
    with open_output(uri) as stream, storage_errors(uri, "write"):
        stream.write(data)


def read_bytes(uri: str | os.PathLike) -> bytes:
    """Read the whole file at ``uri``."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "read"):
        with filesystem.open_input_stream(path) as stream:
            return stream.read()


def delete(uri: str | os.PathLike) -> None:
    """Delete the file at ``uri``."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "delete"):
        filesystem.delete_file(path)


def remove_tree(uri: str | os.PathLike) -> None:
    """Delete a directory or prefix and everything below it; a missing one is fine."""
    filesystem, path = resolve(uri)
    with storage_errors(uri, "delete"):
        try:
            info = filesystem.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                filesystem.delete_dir_contents(path, missing_dir_ok=True)
                filesystem.delete_dir(path)
            elif filesystem.type_name == "s3":
                # An S3 "directory" without a marker object reports NotFound yet may hold keys.
                filesystem.delete_dir_contents(path, missing_dir_ok=True)
        except FileNotFoundError:
            # Gone between the listing and the delete: S3 stores drop a prefix whose last key went
            # (measured: a resume after a driver kill failed here). What counts is checked next.
            pass
        left = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    if left:
        raise StorageError(f"could not delete {uri}: {len(left)} object(s) remain, e.g. {left[0].path}")


def list_files(uri: str | os.PathLike, suffix: str = "", recursive: bool = False) -> list[str]:
    """Sorted URIs of the files under directory/prefix ``uri`` whose names end with ``suffix``."""
    filesystem, path = resolve(uri)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    with storage_errors(uri, "list"):
        infos = filesystem.get_file_info(selector)
    return sorted(
        to_uri(filesystem, info.path)
        for info in infos
        if info.type == pafs.FileType.File and info.base_name.endswith(suffix)
    )


def check_bucket(uri: str | os.PathLike) -> None:
    """Raise StorageError naming ``uri`` when it is on S3 and its bucket does not exist.

    Some S3 servers (SeaweedFS) create a missing bucket on the first write, so a misspelt bucket
    would quietly become a new one. A bucket that cannot be looked at (no permission for HeadBucket)
    passes: the first write is the real test of access. Local paths pass (directories are created).
    """
    if not is_s3(uri):
        return
    bucket = S3_SCHEME + split_s3(str(uri))[0]
    try:
        if exists(bucket):
            return
    except StorageError:
        return
    raise StorageError(f"storage {uri}: bucket {bucket} does not exist; create it first")


def s3_client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client for operations pyarrow lacks (bucket creation, conditional writes), with the
    same timeouts and tries as the pyarrow filesystem; settings default to the environment."""
    import boto3  # boto3 is slow to import and only needed for bucket management
    from botocore.config import Config

    settings = settings or S3Settings.from_env()
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
        region_name=settings.region or _DEFAULT_REGION,
        config=Config(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.request_timeout,
            # total_max_attempts counts every try, as AWS_MAX_ATTEMPTS does (botocore's max_attempts
            # counts retries only).
            retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def ensure_bucket(bucket: str, settings: S3Settings | None = None) -> None:
    """Create ``bucket`` (a bare name or ``s3://bucket``) unless it exists and is ours."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = split_s3(bucket)[0] if is_s3(bucket) else bucket
    settings = settings or S3Settings.from_env()
    try:
        s3_client(settings).create_bucket(Bucket=name)
    except (BotoCoreError, ClientError) as exc:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code != "BucketAlreadyOwnedByYou":
            reason = settings.scrub(str(exc))
            raise StorageError(
                f"could not create bucket s3://{name} at {settings.endpoint_name}: {reason}"
            ) from None
