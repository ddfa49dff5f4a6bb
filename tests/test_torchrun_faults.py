"""The slow multi-process tests (marked ``slow``): a torchrun job whose worker is SIGKILLed
mid-epoch restarts it and resumes by itself, ending with an uninterrupted run's numbers.

``test_two_nodes_...`` is the multi-machine case: two torchrun agents in two network namespaces
joined by a veth pair (10.201.0.1 and 10.201.0.2, as two hosts would meet), a c10d rendezvous on
the first, Gloo between the workers. It needs root and ``ip netns`` (CI runs as root) and skips,
saying why, without them; ``test_one_node_...`` is the same fault on one node, with neither. Both
compare with one uninterrupted run of the same job (2 processes, same seed). The fast tests of
how a job finds its run folder are in test_job.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# a few epochs of 120 steps per process (about half a second each): long enough to be killed in
# the middle of one; dropout, so each process's random numbers must come back as they were
SPEC = """\
name: job
input: [1, 8, 8]
layers:
  - {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - relu
  - {type: maxpool2d, kernel_size: 2}
  - flatten
  - {type: dropout, p: 0.1}
  - {type: linear, out_features: 10}
data:
  dataset: {type: synthetic, classes: 10, train_size: 2400, test_size: 500, noise: 1.5}
  batch_size: 10
train: {epochs: 4, seed: 3, device: cpu, optimizer: {type: adam, lr: 0.01}}
"""

TIMING = {"seconds", "eval_seconds", "samples_per_second", "train_gflops_per_second"}
RUN = ["-m", "cnnspec", "run", "spec.yaml", "--no-report", "--output"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", **extra)


def numbers(run: Path) -> tuple[list[dict], dict]:
    """The run's metrics rows and final metrics, without the timings (which no two runs share)."""
    rows = [{k: v for k, v in json.loads(ln).items() if k not in TIMING}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    return rows, {k: v for k, v in summary["final"].items() if k not in TIMING}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict]:
    """The job's numbers when nothing fails: 2 processes, as in the faulty runs."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    (tmp / "spec.yaml").write_text(SPEC)
    res = subprocess.run(torchrun("--standalone", "--nproc_per_node=2", *RUN, "run"), cwd=tmp, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return numbers(tmp / "run")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's workers, for its agent)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def kill_a_worker_mid_epoch(agent: subprocess.Popen, run: Path) -> int:
    """Once epoch 1's checkpoint is there (the next epoch is under way), SIGKILL a worker of ``agent``."""
    deadline = time.monotonic() + 240
    while not (run / "last.pt").exists():
        assert agent.poll() is None, "the job ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    workers = [p for p in children(agent.pid) if "cnnspec" in Path(f"/proc/{p}/cmdline").read_text()]
    assert workers, "no worker process under the torchrun agent"
    os.kill(workers[-1], signal.SIGKILL)
    return workers[-1]


def finish(agents: list[subprocess.Popen]) -> list[str]:
    """Wait for the agents; their output (a job that hangs is killed by the fixture's cleanup)."""
    return [a.communicate(timeout=240)[0] for a in agents]


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen]]:
    """torchrun agents started by a test, each in a session of its own: whatever is left of them
    (the agent and its workers) is killed at the end."""
    started: list[subprocess.Popen] = []
    yield started
    for a in started:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.communicate()


def assert_resumed_to(run: Path, outputs: list[str], uninterrupted: tuple[list[dict], dict]) -> None:
    text = "\n".join(outputs)
    assert re.search(r"torchrun job '\S+': resuming \S*last\.pt at epoch [234], step \d+", text), text[-3000:]
    assert json.loads((run / "job.json").read_text())["torchrun_job"]
    rows, final = numbers(run)
    want_rows, want_final = uninterrupted
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # every epoch once
    # deterministic CPU training resumed from the same state: the same numbers, not just close ones
    assert rows == want_rows
    assert final == want_final
    assert abs(final["test_accuracy"] - want_final["test_accuracy"]) <= 0.002


def test_one_node_job_resumes_after_a_worker_is_killed(tmp_path, agents, uninterrupted):
    (tmp_path / "spec.yaml").write_text(SPEC)
    cmd = torchrun("--standalone", "--nproc_per_node=2", "--max-restarts=1", *RUN, "run")
    agents.append(subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True))
    kill_a_worker_mid_epoch(agents[0], tmp_path / "run")
    (out,) = finish(agents)
    assert agents[0].returncode == 0, out[-3000:]
    assert_resumed_to(tmp_path / "run", [out], uninterrupted)


class Namespaces:
    """Two network namespaces joined by a veth pair: node A 10.201.0.1, node B 10.201.0.2."""

    def __init__(self) -> None:
        tag = os.getpid()
        self.names = [f"cnnspec{tag}a", f"cnnspec{tag}b"]
        self.veths = [f"cns{tag}a", f"cns{tag}b"]  # interface names: at most 15 characters
        self.addrs = ["10.201.0.1", "10.201.0.2"]

    def make(self) -> None:
        a, b = self.names
        va, vb = self.veths
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        for ns, veth, addr in zip(self.names, self.veths, self.addrs):
            ip("link", "set", veth, "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", veth)
            ip("-n", ns, "link", "set", veth, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> None:
        for ns in self.names:  # removing a namespace removes its end of the veth pair, and the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode:
        raise OSError(f"ip {' '.join(args)}: {res.stderr.strip()}")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces (ip netns); CI runs as root")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip command for network namespaces")
    ns = Namespaces()
    try:
        ns.make()
        probe = subprocess.run(["ip", "netns", "exec", ns.names[0], sys.executable, "-c", "pass"],
                               capture_output=True, text=True)
        if probe.returncode:  # e.g. a container that may not remount /sys for it
            raise OSError(f"ip netns exec: {probe.stderr.strip()}")
    except OSError as e:
        ns.remove()
        pytest.skip(f"cannot make two network namespaces joined by a veth pair here: {e}")
    try:
        yield ns
    finally:
        ns.remove()


def test_two_nodes_job_resumes_after_a_worker_is_killed(tmp_path, namespaces, agents, uninterrupted):
    (tmp_path / "spec.yaml").write_text(SPEC)
    endpoint = f"{namespaces.addrs[0]}:29400"
    for node, (ns, veth, addr) in enumerate(zip(namespaces.names, namespaces.veths, namespaces.addrs)):
        # node A hosts the rendezvous store: its address is on a second interface, which torchrun's
        # own guess (the host name's addresses) does not see
        host = ["--rdzv-conf=is_host=1"] if node == 0 else []
        cmd = ["ip", "netns", "exec", ns, *torchrun(
            "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            "--rdzv-id=job-21", "--max-restarts=1", f"--local-addr={addr}", *host, *RUN, "run")]
        agents.append(subprocess.Popen(cmd, cwd=tmp_path, env=env(GLOO_SOCKET_IFNAME=veth), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True))
    kill_a_worker_mid_epoch(agents[1], tmp_path / "run")  # node B's worker: rank 1
    outputs = finish(agents)
    assert [a.returncode for a in agents] == [0, 0], "\n=====\n".join(o[-3000:] for o in outputs)
    assert_resumed_to(tmp_path / "run", outputs, uninterrupted)
