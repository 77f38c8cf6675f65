"""A Ray cluster of separate hosts on one Linux machine: network namespaces joined by veth pairs to a bridge.

Host 0 runs `ray start --head` (no CPUs: it only drives and writes, as on a real cluster's head), hosts 1..N
`ray start --address` with `worker_cpus` each. Every host has its own address on a private /24, its own
loopback and its own Ray temp folder; they share the filesystem (the archive, the models, the results are
paths every host sees, as on an NFS mount) and this checkout's virtual environment. Across hosts Ray 2.60
wants token authentication, so every process gets RAY_AUTH_MODE=token and one generated token (in the
environment, never written to ~/.ray where it would change other Ray users of the machine).

Root and iproute2 (`ip netns`) are needed. Processes are found and ended by namespace (`ip netns pids`), never
with `ray stop`, which ends every Ray process of the machine, namespaced or not.

    with NetnsCluster(workers=2) as cluster:
        cluster.run(0, ["spine-batch", ..., "--ray-address", cluster.address]).wait()
        cluster.kill_host(2)     # a node lost: every process of host 2, SIGKILL
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
GCS_PORT = 6379
# What a host's processes read: the token, this checkout first on the path (workers import spine_batch from it).
_DROPPED_ENV = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")


def unavailable_reason() -> str | None:
    """Why this machine cannot make the cluster, or None when it can."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if not Path(RAY).exists():
        return f"no `ray` next to {sys.executable} (pip install -e '.[batch]')"
    probe = f"sxprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetnsCluster:
    def __init__(
        self,
        workers: int = 2,
        worker_cpus: int = 2,
        object_store_bytes: int = 500 * 2**20,
        env: dict[str, str] | None = None,
    ) -> None:
        tag = f"{os.getpid() % 100_000}{secrets.token_hex(1)}"  # two clusters at once never share a name
        self.namespaces = [f"sx{tag}h{i}" for i in range(workers + 1)]
        self.bridge = f"sx{tag}br"[:15]
        octet = 16 + secrets.randbelow(200)
        self.addresses = [f"10.231.{octet}.{i + 1}" for i in range(workers + 1)]
        self.address = f"{self.addresses[0]}:{GCS_PORT}"
        self.worker_cpus, self.object_store_bytes = worker_cpus, object_store_bytes
        # Short: a Ray session's unix socket paths live under it and must stay under 108 characters.
        self.temp = Path(tempfile.mkdtemp(prefix="sxray-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        self.env |= {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(path),
            **(env or {}),
        }
        self._made: list[tuple[str, str]] = []  # what close() removes: ("netns", name) / ("link", name)

    # -- the network ---------------------------------------------------------------------------------------------
    def _network(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        _ip("link", "set", self.bridge, "up")
        for i, (ns, address) in enumerate(zip(self.namespaces, self.addresses, strict=True)):
            _ip("netns", "add", ns)
            self._made.append(("netns", ns))
            veth = f"{self.bridge[:-2]}v{i}"[:15]
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._made.append(("link", veth))
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    # -- processes -----------------------------------------------------------------------------------------------
    def run(self, host: int, cmd: list[str], **popen: object) -> subprocess.Popen:
        """`cmd` on a host (its network namespace), with the cluster's environment."""
        return subprocess.Popen(["ip", "netns", "exec", self.namespaces[host], *cmd], env=self.env, **popen)  # type: ignore[call-overload]

    def check(self, host: int, cmd: list[str], timeout: float = 300) -> str:
        done = self.run(host, cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = done.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            done.kill()
            done.wait()
            raise
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} on host {host} exited {done.returncode}:\n{out[-3000:]}")
        return out

    def _ray_start(self, host: int) -> None:
        common = [f"--node-ip-address={self.addresses[host]}", f"--temp-dir={self.temp / f'h{host}'}"]
        common += [f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        if host == 0:
            cmd = [RAY, "start", "--head", f"--port={GCS_PORT}", "--num-cpus=0", "--include-dashboard=false", *common]
        else:
            cmd = [RAY, "start", f"--address={self.address}", f"--num-cpus={self.worker_cpus}", *common]
        for attempt in range(3):
            try:
                self.check(host, cmd)
                return
            except RuntimeError:
                # `ray start` gives the raylet a fixed 30 s to register; a starved machine can miss it: again, clean.
                if attempt == 2:
                    raise
                self.kill_host(host)
                time.sleep(1)

    def alive_nodes(self) -> dict[str, bool]:
        """Node address -> alive, as the head's GCS says (a short-lived driver on the head)."""
        code = f"import json, ray; ray.init(address='{self.address}', log_to_driver=False, logging_level='ERROR'); "
        code += "print(json.dumps({n['NodeManagerAddress']: n['Alive'] for n in ray.nodes()}))"
        return json.loads(self.check(0, [sys.executable, "-c", code]).strip().splitlines()[-1])

    def start(self, timeout: float = 300) -> NetnsCluster:
        self._network()
        self._ray_start(0)
        for host in range(1, len(self.namespaces)):
            self._ray_start(host)
        deadline = time.monotonic() + timeout
        while sum(self.alive_nodes().values()) < len(self.namespaces):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not every host joined the cluster in {timeout:.0f} s")
            time.sleep(1)
        return self

    def pids(self, host: int) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.namespaces[host]], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def kill_host(self, host: int, sig: int = signal.SIGKILL) -> int:
        """Every process of a host at once (a machine that loses power); returns how many there were."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return len(pids)

    def close(self) -> None:
        """Ends every process of every host, removes the namespaces, links and temp folder; safe to call twice."""
        for host in range(len(self.namespaces)):
            if ("netns", self.namespaces[host]) in self._made:
                self.kill_host(host, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(self.pids(h) for h in range(len(self.namespaces)) if ("netns", self.namespaces[h]) in self._made):
            if time.monotonic() > deadline:
                for host in range(len(self.namespaces)):
                    self.kill_host(host, signal.SIGKILL)
                break
            time.sleep(0.2)
        for kind, name in reversed(self._made):
            subprocess.run(["ip", kind, "del", name], capture_output=True)  # a veth goes with its namespace: no error check
        self._made.clear()
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> NetnsCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
