"""One driver per run: a lease object in the run's storage, renewed by a heartbeat thread.

A driver takes ``<run>/LEASE.json`` before it writes or deletes anything of the run, renews it every
``heartbeat_s`` and deletes it when it ends. The object names its holder (host, pid, start, last
beat), so a second driver is refused at once with a line saying who holds the run (``LeaseHeld``).

Every change is a compare-and-swap on the object's version, so two drivers never both hold it:

- S3: PutObject with ``If-None-Match: *`` (take a free lease) or ``If-Match: <ETag>`` (renew, take
  over), DeleteObject with ``If-Match`` (release). AWS S3 has honoured these since 2024; SeaweedFS
  4.48 honours all three (412 PreconditionFailed; of 8 concurrent creates exactly one won, in each
  of 5 trials, measured). A race lost to an S3 retry of our own write is recognised by re-reading.
- Local disk: the same operations under an exclusive ``flock`` of the run's folder, the new object
  written beside the old and renamed over it, so a reader never sees half a lease.

A lease is stale once it is older than the timeout its holder wrote into it, measured by the
store's own clock (S3: the response's Date minus the object's Last-Modified; local: now minus the
file's mtime), so the clocks of different hosts are never compared. A stale lease is taken over,
and so is, at once, one whose holder was a process of this very machine that no longer exists
(a killed driver rerun on the same host need not wait out the timeout).

A holder that cannot renew for half its timeout, or finds its lease taken over, has lost the run:
another driver may already be deleting what it writes. It stops at once (``on_lost``; by default
the process exits with code 3), as a killed driver would, which every committed stage survives.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from dfa_ray import storage
from dfa_ray.storage import StorageError

LOST_EXIT_CODE = 3


class LeaseHeld(RuntimeError):
    """Another live driver holds the run; the message names it and when it last beat."""


@dataclass(frozen=True)
class Seen:
    """A lease as read: its body, its version (what a conditional write must match) and its age in
    seconds by the store's clock."""

    body: dict[str, Any]
    version: str
    age_s: float


class _Store(Protocol):
    def read(self) -> Seen | None: ...

    def swap(self, data: bytes | None, expect: str | None) -> str | None:
        """Write ``data`` (None: delete) if the lease is at version ``expect`` (None: there is none);
        the new version ("" after a delete), or None if the lease was not at ``expect``."""
        ...


class _S3Store:
    """The lease as one S3 object, changed only by conditional requests."""

    def __init__(self, uri: str, request_timeout: float) -> None:
        self.uri = uri
        self.bucket, self.key = storage.split_s3(uri)
        self.settings = storage.S3Settings.from_env()
        # One try per call, bounded in time: the heartbeat loop is the retry, and a renewal must never
        # hang past the point where the holder has to give the run up.
        self.client = storage.s3_client(
            dataclasses.replace(
                self.settings,
                connect_timeout=request_timeout,
                request_timeout=max(1, math.ceil(request_timeout)),
                max_attempts=1,
            )
        )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not {action} {self.uri}: {self.settings.scrub(str(exc))}") from None

    def read(self) -> Seen | None:
        from botocore.exceptions import ClientError

        with self._errors("read"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            data = response["Body"].read()
        now = parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        return Seen(_parse(data), response["ETag"], (now - response["LastModified"]).total_seconds())

    def swap(self, data: bytes | None, expect: str | None) -> str | None:
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        with self._errors("write" if data is not None else "delete"):
            try:
                if data is None:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, **condition)
                    return ""
                written = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)
                return written["ETag"]
            except ClientError as exc:
                # 412: the version changed. AWS answers 409 to a conditional write racing another,
                # and 404 to If-Match on an object that is gone.
                if exc.response.get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey",
                ):  # fmt: skip
                    return None
                raise


class _LocalStore:
    """The lease as one file; a swap holds an exclusive flock of the run's folder while it compares
    and writes (an flock goes with the process, so a killed driver never leaves the folder locked)."""

    def __init__(self, path: str) -> None:
        self.uri = path
        self.path = Path(storage.resolve(path)[1])

    def read(self) -> Seen | None:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
                mtime = os.fstat(handle.fileno()).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None  # no lease (and, below a file, none possible: the write says why)
        except OSError as exc:
            raise StorageError(f"could not read {self.uri}: {exc.strerror}") from None
        return Seen(_parse(data), hashlib.sha256(data).hexdigest(), time.time() - mtime)

    def swap(self, data: bytes | None, expect: str | None) -> str | None:
        storage.makedirs(str(self.path.parent))
        try:
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                fcntl.flock(folder, fcntl.LOCK_EX)
                current = self.read()
                if (current.version if current else None) != expect:
                    return None
                if data is None:
                    self.path.unlink()
                    return ""
                staged = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                staged.write_bytes(data)
                os.replace(staged, self.path)
                return hashlib.sha256(data).hexdigest()
            finally:
                os.close(folder)  # releases the flock
        except OSError as exc:
            raise StorageError(f"could not write {self.uri}: {exc.strerror}") from None


def _parse(data: bytes) -> dict[str, Any]:
    """The lease's body; an unreadable one (a foreign or damaged object) reads as anonymous, so it
    is judged by its age alone."""
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _process_key(pid: int) -> str | None:
    """``boot id/pid namespace/pid/start time`` of a live process of this machine, None if there is
    none (or no /proc). Equal keys mean the same process: a reused pid has another start time, and
    another machine or container another boot id or pid namespace."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22, counted after the command name, which is in parentheses and may hold spaces.
    start = stat.rpartition(")")[2].split()[19]
    return f"{boot}/{namespace}/{pid}/{start}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_now(message: str) -> None:
    """The default ``on_lost``: say why in one line, then leave at once (no cleanup that could write)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(LOST_EXIT_CODE)


class RunLease:
    """``with RunLease(run.lease, log=print): ...`` holds the run's lease for the block.

    ``acquire`` raises LeaseHeld naming a live holder, and takes a stale lease over (logged).
    ``timeout_s`` is written into the lease: others may take it over after that long without a beat.
    ``on_lost(message)`` runs, from the heartbeat thread, if the lease is lost while held.
    """

    def __init__(
        self,
        uri: str,
        timeout_s: float = 120.0,
        heartbeat_s: float = 15.0,
        log: Callable[[str], None] = print,
        on_lost: Callable[[str], None] = _exit_now,
    ) -> None:
        if not 0 < 6 * heartbeat_s <= timeout_s:
            # The holder gives up once half the timeout has passed since its last renewal, checking
            # after each try: up to a beat's wait plus a try of up to two beats (connect and read
            # timeouts) later. That must still come before anyone may call the lease stale.
            raise ValueError(f"lease timeout {timeout_s} s must be at least 6 heartbeats of {heartbeat_s} s")
        self.uri, self.timeout_s, self.heartbeat_s = uri, timeout_s, heartbeat_s
        self.log, self.on_lost = log, on_lost
        self._store: _Store = _S3Store(uri, heartbeat_s) if storage.is_s3(uri) else _LocalStore(uri)
        self.owner = uuid.uuid4().hex
        self._started = _now()
        self._beats = 0
        self._version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    @property
    def held(self) -> bool:
        """Whether this driver holds the lease now."""
        return self._version is not None and not self._lost

    def _body(self) -> bytes:
        pid = os.getpid()
        return json.dumps({
            "owner": self.owner, "host": socket.gethostname(), "pid": pid, "process": _process_key(pid),
            "started": self._started, "beat": _now(), "beats": self._beats, "timeout_s": self.timeout_s,
        }).encode()  # fmt: skip

    def _ours(self, seen: Seen | None) -> bool:
        """Whether ``seen`` is this driver's lease. After a refused renewal it can be: a renewal whose
        answer was lost (a timeout) may have gone through, and then the next one's If-Match fails."""
        return seen is not None and seen.body.get("owner") == self.owner

    def _timeout(self, seen: Seen) -> float:
        """The timeout the holder of ``seen`` wrote into it (ours, for a foreign or damaged object)."""
        timeout = seen.body.get("timeout_s")
        return timeout if isinstance(timeout, (int, float)) else self.timeout_s

    def _takeover_reason(self, seen: Seen) -> str | None:
        """Why the lease ``seen`` may be taken over, or None while its holder may be alive."""
        if seen.age_s > self._timeout(seen):
            return f"no heartbeat for {seen.age_s:.0f} s, past its {self._timeout(seen):.0f} s timeout"
        key, pid, mine = seen.body.get("process"), seen.body.get("pid"), _process_key(os.getpid())
        same_machine = isinstance(key, str) and mine and key.rsplit("/", 2)[0] == mine.rsplit("/", 2)[0]
        if same_machine and isinstance(pid, int) and _process_key(pid) != key:
            return f"its process {pid} on this machine is gone"
        return None

    def describe(self, seen: Seen) -> str:
        """The holder of ``seen`` and its last beat, for one line."""
        body = seen.body
        who = f"host {body.get('host', '?')} pid {body.get('pid', '?')}"
        return f"{who} (started {body.get('started', '?')}), last heartbeat {seen.age_s:.0f} s ago"

    def acquire(self) -> None:
        """Take the lease (a free or a stale one) and start the heartbeat; LeaseHeld if it is live."""
        run = self.uri.rpartition("/")[0]
        for _ in range(3):  # a race lost to another starter ends in the next read's LeaseHeld
            seen = self._store.read()
            reason = None if seen is None else self._takeover_reason(seen)
            if seen is not None and reason is None:
                raise LeaseHeld(
                    f"run {run} is held by another driver: {self.describe(seen)}; wait for it to end or stop "
                    f"it (a lease with no heartbeat for {self._timeout(seen):.0f} s is taken over)"
                )
            self._version = self._store.swap(self._body(), None if seen is None else seen.version)
            if self._version is not None:
                if seen is not None:
                    self.log(f"took over the lease of run {run} from {self.describe(seen)}: {reason}")
                self._thread = threading.Thread(target=self._heartbeat, name="run-lease", daemon=True)
                self._thread.start()
                return
        raise LeaseHeld(f"run {run}: three attempts to take its lease each lost a race to another driver")

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()  # when the last renewal that went through was sent
        while not self._stop.wait(self.heartbeat_s):
            sent = time.monotonic()
            self._beats += 1
            try:
                version = self._store.swap(self._body(), self._version)
                if version is None:
                    seen = self._store.read()
                    if not self._ours(seen):
                        self._give_up(f"the lease {self.uri} was taken over by another driver")
                        return
                    self._version = seen.version  # our previous renewal went through unseen
                    continue
            except StorageError as exc:
                silent = time.monotonic() - last_ok
                if silent > self.timeout_s / 2:
                    self._give_up(f"could not renew the lease {self.uri} for {silent:.0f} s: {exc}")
                    return
                continue
            self._version, last_ok = version, sent

    def _give_up(self, why: str) -> None:
        self._lost = True
        self.on_lost(f"{why}; stopping at once so as not to write beside it")

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours. A store that cannot be reached
        is logged, not raised: the lease then goes stale after its timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        version, self._version = self._version, None
        if version is None or self._lost:
            return
        try:
            self._store.swap(None, version)
        except StorageError as exc:
            self.log(f"could not release the lease ({exc}); it goes stale in {self.timeout_s:.0f} s")

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
