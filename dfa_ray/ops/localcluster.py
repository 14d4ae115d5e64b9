"""A private multi-node Ray cluster on one machine, driven through the Ray CLI: for the demo, the tests,
and anyone who wants to see the pipeline spread over nodes and survive losing one without a cloud.

``LocalRay`` runs ``ray start --head --block`` on free ports and, with ``worker_nodes=N``, N more
``ray start --address=... --block`` processes: each a separate Ray node (its own raylet, object
store, CPUs and custom resources) that Ray schedules onto as it would onto a cloud VM. The dashboard
and job API listen on 127.0.0.1 only; Ray's GCS, raylets and agents listen on every interface, as
they always do, behind token authentication.
``kill_node(i)`` SIGKILLs one node's whole process group, as a spot preemption would. ``stop()``
stops the workers, then the head, and nothing else (``ray stop`` would kill every Ray process on
the machine). Jobs go through ``ray job submit`` exactly as on a real cluster, with token
authentication on: the CLI sends the head's token when ``RAY_AUTH_MODE=token`` is in its
environment. Job states, job logs and the node list, which tests poll, are read from the head's HTTP
API with that token instead. Every node gets the same environment, which is how the S3 credentials reach the
driver and every task and actor without appearing on a command line.

CLI: the embedded S3 and a head with 0 CPUs plus 2 worker nodes of 2 CPUs each, until Ctrl-C::

    python -m dfa_ray.ops.localcluster --workers 2 --worker-cpus 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dfa_ray.ops.objectstore import EmbeddedS3, free_ports

# A port Ray defaults to a fixed number (the dashboard agent's 52365), or picks once and caches in
# the session directory that every raylet on this machine shares, clashes as soon as a second node
# or another Ray cluster runs here: the node starts, but its agent never does. Every node gets its
# own free ports for all of them instead.
_AGENT_PORT_FLAGS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)
# What `ray start` prints when its raylet did not register in time (ray._private.node, Ray 2.60).
_STARTUP_TIMEOUT = "timed out during startup"
_NODE_PORT_FLAGS = ("node-manager-port", "object-manager-port", *_AGENT_PORT_FLAGS)


@dataclass
class Job:
    """A submitted job: its id, and once followed to the end, its status and driver output."""

    job_id: str
    status: str | None = None
    logs: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the job ended with SUCCEEDED."""
        return self.status == "SUCCEEDED"


@dataclass
class WorkerNode:
    """One worker node of a LocalRay: a ``ray start --address ... --block`` process group."""

    name: str
    num_cpus: int
    resources: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    node_id: str | None = None  # Ray's id, known once the node has registered

    @property
    def running(self) -> bool:
        """Whether the node's ``ray start`` process is alive (False once stopped or killed)."""
        return self.process is not None and self.process.poll() is None


def _terminate(processes: Sequence[subprocess.Popen], timeout: float = 30.0) -> None:
    """Stop ``ray start --block`` processes together: SIGTERM to each (it takes its raylet and agents
    down in a few seconds), then SIGKILL to the process group of any still running after ``timeout``.
    Only those groups are touched: never another Ray on the machine."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class LocalRay:
    """``with LocalRay(num_cpus=2, env=s3.env()) as ray_head: ray_head.submit([...])``.

    ``worker_nodes=N`` adds N worker nodes of ``worker_cpus`` logical CPUs and ``worker_resources``
    each; the head then gets 0 CPUs unless ``num_cpus`` says otherwise, as on a cloud cluster, so
    every task and actor that asks for a CPU lands on a worker node. ``object_store_memory`` (bytes,
    per node) defaults to Ray's 30 % of memory, too much for several nodes on one machine. Each
    ``ray start``'s own output goes to ``log_dir`` (default: a temporary folder that stop() removes),
    and start-up errors quote it; Ray's logs are in its session folder as usual.
    """

    def __init__(
        self,
        num_cpus: int | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 90.0,
        worker_nodes: int = 0,
        worker_cpus: int = 1,
        worker_resources: Mapping[str, float] | None = None,
        object_store_memory: int | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        self.num_cpus = 0 if worker_nodes and num_cpus is None else num_cpus
        self.start_timeout = start_timeout
        self.object_store_memory = object_store_memory
        # stop() removes a folder made here: start-up errors quote what matters in it.
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="dfa-localray-"))
        self._worker_spec = (worker_nodes, worker_cpus, dict(worker_resources or {}))
        self.workers: list[WorkerNode] = []
        ports = free_ports(3 + len(_AGENT_PORT_FLAGS))
        self.gcs_port, self.dashboard_port, self.client_port = ports[:3]
        self.agent_ports = dict(zip(_AGENT_PORT_FLAGS, ports[3:]))
        self.env = dict(os.environ)
        self.env.update(env or {})
        # The job's `python` is the first on the head's PATH: make it this interpreter's environment.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.update({"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"})
        # On SIGTERM a Ray 2.60 node first drains, up to 30 s, until every lease on it is returned; the
        # detached actors Ray Data leaves on the head never return theirs, so each stop() took the full
        # 30 s (measured). A cluster being stopped as a whole has nothing to drain for.
        self.env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        self._process: subprocess.Popen | None = None
        self._token: str | None = None  # the head's, for its HTTP API; never printed

    @property
    def dashboard_url(self) -> str:
        """The job API's address (the dashboard's HTTP server)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def running(self) -> bool:
        """Whether the head's ``ray start`` process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def address(self) -> str:
        """The GCS address, for ``ray.init(address=...)`` and ``ray status --address``."""
        return f"127.0.0.1:{self.gcs_port}"

    def _ray(
        self, *args: str, capture: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "ray"), *args],
            env=self.env,
            capture_output=capture,
            text=True,
            timeout=timeout,
        )

    def _spawn(self, name: str, *flags: str) -> subprocess.Popen:
        """``ray start --block`` with the flags every node shares, in a process group of its own; its
        output goes to ``<log_dir>/<name>.log`` (Ray's own logs are in its session folder)."""
        command = [
            str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            # Workers bind ports the OS picks: every raylet here would otherwise hand out the same
            # default range 10002-19999 to its own workers, unaware of the others'.
            "--min-worker-port=0", "--max-worker-port=0",
            *flags,
        ]  # fmt: skip
        if self.object_store_memory is not None:
            command.append(f"--object-store-memory={self.object_store_memory}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the group kill_node and stop() signal, never the caller's
            )

    def _log_tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> LocalRay:
        """Start the head, wait until the job API answers, then start the worker nodes (if any) and
        wait until each has registered with the head."""
        flags = [
            "--head", f"--port={self.gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={self.client_port}",
            *(f"--{flag}={port}" for flag, port in self.agent_ports.items()),
        ]  # fmt: skip
        if self.num_cpus is not None:
            flags.append(f"--num-cpus={self.num_cpus}")
        try:
            # `ray start --head` with token auth refuses to start without a token and, unlike
            # ray.init, does not make one: on a fresh machine (no ~/.ray/auth_token) it exits 1.
            token = self._ray("get-auth-token", "--generate", timeout=60)
            token.check_returncode()
            self._token = token.stdout.strip()
            self._process = self._spawn("head", *flags)
            self._wait_for_dashboard()
            count, cpus, resources = self._worker_spec
            for _ in range(count):
                self.add_node(cpus, resources)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_dashboard(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"ray start --head exited with code {self._process.returncode}:\n{self._log_tail('head')}"
                )
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # 401 without the token: the server is up and enforcing auth
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        raise TimeoutError(
            f"the Ray head did not answer at {self.dashboard_url} within {self.start_timeout:.0f} s:\n"
            f"{self._log_tail('head')}"
        )

    def add_node(self, num_cpus: int = 1, resources: Mapping[str, float] | None = None) -> WorkerNode:
        """Start one more worker node (as an autoscaler would, e.g. to replace a killed one) and return
        once it has registered with the head.

        Nodes start one at a time: a raylet names its socket files after those it finds in the session
        folder all nodes of this machine share, so two starting together can pick the same name, and
        one of them dies with "Address already in use" (measured). A start that Ray gives up on
        because its raylet did not register in time (a loaded machine: seen once in a CI run on 2
        cores) is stopped and made once more, as ``raystart`` does for a local head.
        """
        if self._process is None:
            raise RuntimeError("start the head first")
        name = f"worker-{len(self.workers) + 1}"
        try:
            return self._start_node(name, num_cpus, resources)
        except RuntimeError as error:
            if _STARTUP_TIMEOUT not in str(error):
                raise
        return self._start_node(name, num_cpus, resources)

    def _start_node(self, name: str, num_cpus: int, resources: Mapping[str, float] | None) -> WorkerNode:
        node = WorkerNode(name, num_cpus, dict(resources or {}))
        ports = dict(zip(_NODE_PORT_FLAGS, free_ports(len(_NODE_PORT_FLAGS))))
        flags = [
            f"--address={self.address}", f"--num-cpus={num_cpus}",
            # The name is how _wait_until_joined finds this node's id among the others.
            f"--node-name={node.name}",
            # One log monitor per machine: the head's already follows the session's shared log folder.
            "--include-log-monitor=false",
            *(f"--{flag}={port}" for flag, port in ports.items()),
        ]  # fmt: skip
        if node.resources:
            flags.append(f"--resources={json.dumps(node.resources)}")
        node.process = self._spawn(node.name, *flags)
        self.workers.append(node)
        try:
            self._wait_until_joined(node)
        except RuntimeError:
            # `ray start` has exited; its raylet or agents may not have: stop its whole group, and
            # the node is no longer one of the cluster's.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            self.workers.remove(node)
            raise
        return node

    def _get(self, path: str) -> dict:
        """GET the head's HTTP API (job and state APIs) with its token. Tests poll job states and
        node lists every second or two; a ``ray`` CLI process per poll cost about a core-second,
        which on 2 cores slowed the very jobs being waited for (measured)."""
        request = urllib.request.Request(
            f"{self.dashboard_url}{path}", headers={"Authorization": f"Bearer {self._token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def alive_nodes(self) -> dict[str, str]:
        """Node name -> node id of every node the head reports ALIVE (the head's name is its IP)."""
        query = "filter_keys=state&filter_predicates=%3D&filter_values=ALIVE&limit=10000"
        answer = self._get(f"/api/v0/nodes?{query}")
        if not answer.get("result"):
            raise RuntimeError(f"the head's node list failed: {str(answer.get('msg'))[-500:]}")
        return {node["node_name"]: node["node_id"] for node in answer["data"]["result"]["result"]}

    def _wait_until_joined(self, node: WorkerNode) -> None:
        """Wait until the head reports ``node`` ALIVE; record its node id."""
        deadline = time.monotonic() + self.start_timeout
        while node.node_id is None:
            if not node.running:
                raise RuntimeError(
                    f"ray start for {node.name} exited with code {node.process.poll()}:\n"
                    f"{self._log_tail(node.name)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{node.name} did not join in {self.start_timeout:.0f} s:\n{self._log_tail(node.name)}"
                )
            try:
                node.node_id = self.alive_nodes().get(node.name)
            except (RuntimeError, OSError, json.JSONDecodeError):
                pass  # the state API can lag the dashboard by a moment after start-up
            if node.node_id is None:
                time.sleep(1)

    def kill_node(self, index: int) -> WorkerNode:
        """SIGKILL worker node ``index``'s process group (its raylet, with the object store, and its
        agents) at once, with no chance to clean up, as when a machine is preempted or crashes; the
        node's task and actor processes exit as their raylet goes. Ray notices within ~15 s."""
        node = self.workers[index]
        if not node.running:
            raise RuntimeError(f"{node.name} is not running")
        os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait()
        return node

    def stop(self) -> None:
        """Stop the worker nodes, then the head (and the Ray processes they started), never anyone else's."""
        _terminate([node.process for node in self.workers if node.process is not None])
        if self._process is not None:
            _terminate([self._process])
        self._process = None
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> LocalRay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(
        self,
        entrypoint: Sequence[str],
        working_dir: str | os.PathLike,
        wait: bool = True,
        job_id: str | None = None,
        capture: bool = True,
    ) -> Job:
        """``ray job submit`` the entrypoint. With ``wait``, follow its logs (streamed to this process's
        output unless ``capture``) until it ends; the returned Job has its final status and the logs."""
        args = [
            "job",
            "submit",
            "--no-wait",
            f"--address={self.dashboard_url}",
            f"--working-dir={working_dir}",
        ]
        if job_id:
            args.append(f"--submission-id={job_id}")
        # Right after start-up (or on a loaded machine) the head can answer before its job agent is up;
        # the server then refuses with "No available agent ... try again later", before running anything.
        deadline = time.monotonic() + self.start_timeout
        while True:
            done = self._ray(*args, "--", *entrypoint)
            output = done.stdout + done.stderr
            if "No available agent" not in output or time.monotonic() > deadline:
                break
            time.sleep(2)
        match = re.search(r"Job '([^']+)' submitted successfully", output)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"ray job submit failed: {output.strip()[-1000:]}")
        job = Job(match[1])
        if wait:
            follow = ["job", "logs", "--follow", f"--address={self.dashboard_url}", job.job_id]
            job.logs = self._ray(*follow, capture=capture).stdout or ""
            job.status = self.job_status(job.job_id)
        return job

    def job_status(self, job_id: str) -> str:
        """``PENDING``, ``RUNNING``, ``STOPPED``, ``SUCCEEDED`` or ``FAILED``."""
        return self._get(f"/api/jobs/{job_id}")["status"]

    def stop_job(self, job_id: str) -> None:
        """``ray job stop``: kill the job's driver."""
        self._ray("job", "stop", f"--address={self.dashboard_url}", job_id, timeout=120)

    def logs(self, job_id: str) -> str:
        """The job's driver output."""
        return self._get(f"/api/jobs/{job_id}/logs")["logs"]


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop as cleanly as on Ctrl-C (a supervisor's stop must not orphan the nodes)."""
    raise KeyboardInterrupt


def instructions(cluster: LocalRay, s3: EmbeddedS3) -> str:
    """What to paste into another shell to use the cluster. The S3 secret is read there from the
    server's 0600 identities file, so it is never printed."""
    read_secret = (
        'import json,sys; print(json.load(open(sys.argv[1]))["identities"][0]["credentials"][0]["secretKey"])'
    )
    secret = f"{shlex.quote(sys.executable)} -c {shlex.quote(read_secret)} {shlex.quote(str(s3.config_path))}"
    exports = {
        "PATH": f'{shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',  # this environment's ray
        "RAY_AUTH_MODE": "token",  # the ray CLI sends ~/.ray/auth_token only with this
        "RAY_ADDRESS": cluster.address,  # ray status, ray.init()
        "RAY_API_SERVER_ADDRESS": cluster.dashboard_url,  # ray job ..., ray list ...
        **{k: shlex.quote(v) for k, v in s3.env().items() if k != "AWS_SECRET_ACCESS_KEY"},
        "AWS_SECRET_ACCESS_KEY": f'"$({secret})"',
    }
    head_cpus = "all" if cluster.num_cpus is None else cluster.num_cpus
    nodes = ", ".join(f"{w.name} ({w.num_cpus} CPUs)" for w in cluster.workers) or "none"
    actors = max(len(cluster.workers), 1)
    return "\n".join(
        [
            f"Ray dashboard:  {cluster.dashboard_url}",
            f"Ray nodes:      head ({head_cpus} CPUs); workers: {nodes}",
            f"S3 endpoint:    {s3.endpoint_url}  (bucket s3://{s3.bucket}, data in {s3.data_dir})",
            "",
            "In another shell, from the repository root:",
            *(f"  export {key}={value}" for key, value in exports.items()),
            "",
            "Submit (the job gets the S3 settings from the nodes; the exports above are for you):",
            "  ray job submit --working-dir . -- python jobs/self_train.py --config configs/smoke.yaml \\",
            f"    --storage {s3.uri('runs')} --num-workers {actors} --label-actors {actors}",
            "",
            "Ctrl-C (or SIGTERM) stops the nodes, the head and the S3 server.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the embedded S3 and a local multi-node Ray cluster until Ctrl-C; never prints the secret."""
    parser = argparse.ArgumentParser(
        prog="python -m dfa_ray.ops.localcluster",
        description="A Ray head, worker nodes and the embedded S3 on this machine, until Ctrl-C.",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs per worker node (default 2)")
    parser.add_argument(
        "--worker-resources", type=json.loads, default={}, help="""custom resources per node: '{"ssd": 1}'"""
    )
    parser.add_argument(
        "--head-cpus", type=int, help="logical CPUs of the head (default: 0 with workers, else all)"
    )
    parser.add_argument(
        "--object-store-mb", type=int, default=512, help="object store per node in MiB (default 512)"
    )
    parser.add_argument("--s3-dir", type=Path, help="S3 data directory (default: a new temporary one)")
    parser.add_argument("--bucket", default="dfa-ray", help="bucket to create (default dfa-ray)")
    args = parser.parse_args(argv)
    s3_dir = args.s3_dir or Path(tempfile.mkdtemp(prefix="dfa-ray-s3-"))
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with EmbeddedS3(s3_dir, args.bucket) as s3:
            cluster = LocalRay(
                num_cpus=args.head_cpus,
                env=s3.env(),
                worker_nodes=args.workers,
                worker_cpus=args.worker_cpus,
                worker_resources=args.worker_resources,
                object_store_memory=args.object_store_mb * 2**20,
            )
            with cluster:
                print(instructions(cluster, s3), flush=True)
                while cluster.running and s3.running:
                    time.sleep(1.0)
                print("the Ray head or the S3 server exited; stopping the rest", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
