"""A private one-node Ray cluster for the demo and the end-to-end tests, driven through the Ray CLI.

``LocalRay`` runs ``ray start --head --block`` on free loopback ports and stops only that head
(SIGTERM to its process; ``ray stop`` would kill every Ray process on the machine). Jobs go through
``ray job submit`` exactly as on a real cluster, with token authentication on: the CLI sends the
head's token when ``RAY_AUTH_MODE=token`` is in its environment. Jobs inherit the head's
environment, which is how the S3 credentials reach the driver without appearing on a command line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dfa_ray.objectstore import free_ports


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


class LocalRay:
    """``with LocalRay(num_cpus=2, env=s3.env()) as ray_head: ray_head.submit([...])``."""

    def __init__(
        self, num_cpus: int | None = None, env: Mapping[str, str] | None = None, start_timeout: float = 90.0
    ) -> None:
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        ports = free_ports(7)
        self.gcs_port, self.dashboard_port, self.client_port = ports[:3]
        # Ray's fixed defaults for these (agent 52365, ...) clash with any other Ray on the machine
        # (a driver's ray.init, a second head): the head starts, but its job agent never does.
        self.agent_ports = dict(
            zip(
                ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                 "runtime-env-agent-port"),
                ports[3:],
            )
        )  # fmt: skip
        self.env = dict(os.environ)
        self.env.update(env or {})
        # The job's `python` is the first on the head's PATH: make it this interpreter's environment.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env.update({"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"})
        self._process: subprocess.Popen | None = None

    @property
    def dashboard_url(self) -> str:
        """The job API's address (the dashboard's HTTP server)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

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

    def start(self) -> LocalRay:
        """Start the head and wait until the job API answers."""
        command = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
            f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}", "--disable-usage-stats",
            *(f"--{flag}={port}" for flag, port in self.agent_ports.items()),
        ]  # fmt: skip
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        self._process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ray start exited with code {self._process.returncode}")
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2)
                return self
            except urllib.error.HTTPError:
                return self  # 401 without the token: the server is up and enforcing auth
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        self.stop()
        raise TimeoutError(
            f"the Ray head did not answer at {self.dashboard_url} within {self.start_timeout:.0f} s"
        )

    def stop(self) -> None:
        """Stop this head (and the Ray processes it started), never anyone else's."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

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
        done = self._ray("job", "status", f"--address={self.dashboard_url}", job_id, timeout=60)
        out = done.stdout + done.stderr
        # The CLI prints "Job 'x' succeeded|failed|was stopped" or "Status for job 'x': RUNNING".
        match = re.search(r"Job '[^']+' (succeeded|failed|was stopped)", out) or re.search(
            r"Status for job '[^']+': (\w+)", out
        )
        if match is None:
            raise RuntimeError(f"`ray job status {job_id}` said: {out.strip()[-500:]}")
        return {"was stopped": "STOPPED"}.get(match[1], match[1].upper())

    def stop_job(self, job_id: str) -> None:
        """``ray job stop``: kill the job's driver."""
        self._ray("job", "stop", f"--address={self.dashboard_url}", job_id, timeout=120)

    def logs(self, job_id: str) -> str:
        """The job's driver output."""
        return self._ray("job", "logs", f"--address={self.dashboard_url}", job_id, timeout=60).stdout
