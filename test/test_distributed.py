"""Pretraining under torchrun (DDP on gloo, CPU): 2 processes sharing the global batch give the
losses and weights of 1 process, for SIGReg and every baseline; a killed run resumes under torchrun
to the weights of the uninterrupted one (and continues with another number of processes).

Every run is a real `mine-jepa pretrain` process (torchrun's own launcher for the distributed ones).
What remains is floating-point reduction order (gradients averaged over ranks, BatchNorm and SIGReg
statistics summed per rank, where one process runs nn.BatchNorm1d's own kernel), so the tolerances
are: per-step losses within 1e-4; the weights within 5e-3 in relative L2 norm (measured: <= 1.8e-4
for SIGReg, VICReg and SimCLR, 2.3e-3 for BYOL, whose five BatchNorms include the target network's;
a per-rank BatchNorm, tried once by disabling its all-reduce by hand, gave 6.6e-2 and losses 1e-2
apart), leaving out the
parameters whose gradient is zero in exact arithmetic (the biases in front of BatchNorm, the
backbone's last norm bias, which only the BatchNorm'd projector sees; VICReg's last projector bias,
which its centred terms cannot see): Adam turns their rounding noise into full-size steps.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator
from mine_jepa_ros.training.patches import PatchStore

pytestmark = pytest.mark.slow  # several training processes per test

TINY_SIM = SimExtractConfig(surveys=4, pings=384, samples_per_side=192, max_range_m=12.0, altitude_m=2.0, objects_per_class=2)
TOLERANCE = 1e-4
COMMON = ["--batch-size", "8", "--views", "2", "--proj-hidden", "32", "--num-slices", "32", "--steps-per-epoch", "3",
          "--warmup-epochs", "0.5", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> PatchStore:
    return extract_simulator(tmp_path_factory.mktemp("store") / "sim", TINY_SIM, progress=False)


def command(nproc: int, *args: str) -> list[str]:
    """``mine-jepa ARGS`` in one plain process (nproc 0) or under torchrun with nproc processes."""
    if nproc == 0:
        return [sys.executable, "-m", "mine_jepa_ros.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "mine_jepa_ros.cli", *args]


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pretrain(nproc: int, store: PatchStore, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command(nproc, "pretrain", "--store", str(store.path), "--out", str(out), *COMMON, *args),
                            env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def step_losses(out: Path) -> list[float]:
    with (out / "steps.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def gradient_free(keys: set[str]) -> set[str]:
    """Parameters whose gradient is zero in exact arithmetic, and the running means they shift: a
    Linear's bias in front of a BatchNorm (``X.i.bias`` with ``X.(i+1).running_mean``) and the
    backbone's final norm bias (only BatchNorm'd projectors and the detached probe see it)."""
    out = {"backbone.norm.bias"}
    for key in keys:
        head, _, last = key.rpartition(".")
        prefix, _, index = head.rpartition(".")
        if last == "bias" and index.isdigit() and f"{prefix}.{int(index) + 1}.running_mean" in keys:
            out |= {key, f"{prefix}.{int(index) + 1}.running_mean"}
    return out


SHIFT_INVARIANT = {"vicreg": {"method.projector.6.bias"}}
"""Per method, output biases its loss cannot see (VICReg's terms all centre the embeddings)."""


def assert_same_state(a: Path, b: Path, method: str = "sigreg") -> None:
    sa, sb = load_file(str(a / "state.safetensors")), load_file(str(b / "state.safetensors"))
    assert sa.keys() == sb.keys()
    free = gradient_free(set(sa)) | SHIFT_INVARIANT.get(method, set())
    assert {"method.projector.0.bias", "method.projector.1.running_mean"} <= free
    for part in ("backbone.", "method.", "probe."):
        keys = [k for k in sa if k.startswith(part) and sa[k].is_floating_point() and k not in free]
        wa = torch.cat([sa[k].double().flatten() for k in keys])
        diff = wa - torch.cat([sb[k].double().flatten() for k in keys])
        relative = float(diff.norm() / wa.norm())
        assert relative < 5e-3, f"{part}: relative L2 {relative:.1e}"


@pytest.mark.parametrize("method", ["sigreg", "vicreg", "simclr", "byol"])
def test_two_processes_give_the_losses_and_weights_of_one(method: str, store: PatchStore, tmp_path: Path) -> None:
    pretrain(0, store, tmp_path / "one", "--method", method, "--epochs", "1")
    two = pretrain(2, store, tmp_path / "two", "--method", method, "--epochs", "1")
    assert "pretrained 1 epoch(s)" in two.stdout and two.stdout.count("pretrained") == 1  # rank 0 reports
    one_losses, two_losses = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    assert len(one_losses) == len(two_losses) == 3
    torch.testing.assert_close(torch.tensor(two_losses), torch.tensor(one_losses), rtol=TOLERANCE, atol=TOLERANCE)
    assert one_losses[0] != one_losses[-1]  # the weights moved: the comparison means something
    assert_same_state(tmp_path / "one", tmp_path / "two", method)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def test_a_killed_torchrun_run_resumes_to_the_uninterrupted_weights(store: PatchStore, tmp_path: Path) -> None:
    """Killed (SIGKILL, torchrun and both ranks) in its second epoch, resumed under torchrun: with
    2 processes it ends exactly where the uninterrupted run does; with 1 it continues the same run
    up to float reduction order (one process's BatchNorm kernel against the 2-process statistics,
    amplified over 6 more AdamW steps: measured 2e-3 relative L2)."""
    pretrain(2, store, tmp_path / "straight", "--epochs", "3")
    killed = tmp_path / "killed"
    args = ["pretrain", "--store", str(store.path), "--out", str(killed), *COMMON, "--epochs", "3"]
    proc = subprocess.Popen(command(2, *args), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "metrics.csv").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    for pid in [proc.pid, *descendants(proc.pid)]:  # torchrun and both ranks, mid epoch 2
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    with (killed / "metrics.csv").open() as f:
        done = len(list(csv.DictReader(f)))
    assert 1 <= done < 3, f"the kill came after {done} epochs"
    shutil.copytree(killed, tmp_path / "killed_1")
    for nproc, out in ((2, killed), (1, tmp_path / "killed_1")):
        resumed = subprocess.run(command(nproc, *[str(out) if a == str(killed) else a for a in args], "--resume"),
                                 env=env(), capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resuming {out} after epoch {done}" in resumed.stdout
    straight = load_file(str(tmp_path / "straight" / "state.safetensors"))
    exact = load_file(str(killed / "state.safetensors"))
    assert all(torch.equal(straight[k], exact[k]) for k in straight), "2 processes: the same weights, bit for bit"
    assert step_losses(killed) == step_losses(tmp_path / "straight")
    other = load_file(str(tmp_path / "killed_1" / "state.safetensors"))
    keys = [k for k in straight if k.startswith("backbone.") and straight[k].is_floating_point()]
    a, b = (torch.cat([s[k].double().flatten() for k in keys]) for s in (straight, other))
    assert float((a - b).norm() / a.norm()) < 1e-2
    torch.testing.assert_close(torch.tensor(step_losses(tmp_path / "killed_1")),
                               torch.tensor(step_losses(tmp_path / "straight")), rtol=1e-2, atol=1e-2)


def test_a_global_batch_that_does_not_split_is_refused(store: PatchStore, tmp_path: Path) -> None:
    result = subprocess.run(command(2, "pretrain", "--store", str(store.path), "--out", str(tmp_path / "odd"), *COMMON,
                                    "--batch-size", "7"), env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "not divisible by 2 processes" in result.stdout + result.stderr
