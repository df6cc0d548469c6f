"""A real multi-node Ray cluster on one machine, started with ``ray start`` as a user would, for tests.

Every node is a ``ray start --block`` process in a session of its own; :meth:`LocalRayCluster.stop` ends exactly
the processes those sessions started (found by session id and by descent, never by name) and leaves any other Ray
on the machine alone. Nodes use loopback addresses other than 127.0.0.1 (which Ray would swap for the machine's
network address in a multi-node cluster), so no network is needed; the dashboard and job API listen on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

HEAD_IP = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayCluster:
    """A head node (no GPUs) and worker nodes started with ``ray start``; ``dashboard`` is the job API's URL."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gsray-")))  # short: socket paths
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __post_init__(self) -> None:
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # `geoseg` for the job's entrypoint
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # multi-node (with 0, `ray start --address` refuses)
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",  # else `ray start` turns token auth on when ~/.ray/auth_token exists
            **self.env,
        }
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self._logs.append(log)
        command = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", *args]
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes.append(proc)

    def start_head(self, num_cpus: int = 1) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--node-ip-address={HEAD_IP}",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--ray-client-server-port={free_port()}",
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                f"--temp-dir={self.root / 'ray'}",
            ],
        )
        self._wait(self._gcs_listens, "the head's GCS")

    def add_node(self, ip: str, num_cpus: int = 1, num_gpus: int = 0) -> None:
        self._start(
            f"node-{ip}",
            [
                f"--address={HEAD_IP}:{self.gcs_port}",
                f"--node-ip-address={ip}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--num-cpus={num_cpus}",
                f"--num-gpus={num_gpus}",
            ],
        )

    def wait_for_nodes(self, count: int) -> None:
        """Wait until the job API answers and ``count`` nodes (the head included) are alive."""
        self._wait(lambda: len(self.alive_node_ips()) >= count, f"{count} nodes and the job API")

    def _gcs_listens(self) -> bool:
        try:
            socket.create_connection((HEAD_IP, self.gcs_port), timeout=1).close()
            return True
        except OSError:
            return False

    def alive_node_ips(self) -> list[str]:
        nodes = self._get("/nodes?view=summary")
        summary = (nodes or {}).get("data", {}).get("summary", [])
        return [n["raylet"]["nodeManagerAddress"] for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.dashboard + path, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def _wait(self, ready: Any, what: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p for p in self.nodes if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        logs = "\n".join(p.read_text()[-2000:] for p in sorted(self.root.glob("*.log")))
        raise RuntimeError(f"Ray cluster: gave up waiting for {what}\n{logs}")

    def processes(self) -> list[psutil.Process]:
        """Every process the nodes started: same session as a node's ``ray start``, or descended from one."""
        leaders = {p.pid for p in self.nodes}
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in leaders:
                    found[proc.pid] = proc
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        for pid in leaders:
            try:
                found.update({c.pid: c for c in psutil.Process(pid).children(recursive=True)})
            except psutil.Error:
                continue
        return list(found.values())

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM each ``ray start --block`` (it stops its node), then SIGKILL whatever of theirs is left."""
        started = self.processes()
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                node.kill()
        _, alive = psutil.wait_procs(started + self.processes(), timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(alive, timeout=5)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.root, ignore_errors=True)
