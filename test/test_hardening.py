"""Hardening: arbitrary messages, bad files, killed training, full disks, sustained load, OOM, no pickle."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mine_jepa_ros.detect.classifier import PatchClassifier
from mine_jepa_ros.detect.model import load_checkpoint, new_classifier
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig
from mine_jepa_ros.errors import UserError
from mine_jepa_ros.io.image_codec import ENCODINGS, encode_compressed, encode_image
from mine_jepa_ros.io.messages import MessageFactory

ROOT = Path(__file__).resolve().parents[1]
FACTORY = MessageFactory.for_rosbags()
HEADER = FACTORY.header(1, "sss")


@pytest.fixture(scope="module")
def pipelines(checkpoint: Path) -> dict[str, DetectionPipeline]:
    clf = PatchClassifier(load_checkpoint(checkpoint), device="cpu", batch_size=16, precision="fp32")
    return {mode: DetectionPipeline(clf, PipelineConfig(mode, overlay=True)) for mode in ("frames", "pings")}


GOOD_FRAME = encode_image(FACTORY, np.full((96, 96), 100, np.uint8), HEADER)
GOOD_PING = encode_image(FACTORY, np.full((1, 96), 100, np.uint8), HEADER)

raw_messages = st.builds(
    lambda enc, h, w, step, n, big, data_kind, seed: SimpleNamespace(
        header=HEADER, encoding=enc, height=h, width=w, step=step, is_bigendian=big,
        data=_data(data_kind, n, seed)),
    enc=st.sampled_from([*ENCODINGS, "yuv422", "", "MONO8", "16SC1", "bayer_rggb8"]),
    h=st.one_of(st.integers(0, 200), st.just(2**31 - 1), st.integers(-5, -1)),
    w=st.one_of(st.integers(0, 200), st.just(2**31 - 1)),
    step=st.integers(-1, 1000),
    n=st.integers(0, 60_000),
    big=st.integers(0, 1),
    data_kind=st.sampled_from(["bytes", "nan", "list", "none"]),
    seed=st.integers(0, 2**16),
)


def _data(kind: str, n: int, seed: int) -> object:
    rng = np.random.default_rng(seed)
    if kind == "nan":
        arr = rng.random(n // 4 + 1).astype(np.float32)
        arr[:: 7] = np.nan
        return arr.view(np.uint8)
    if kind == "list":
        return list(rng.integers(0, 256, min(n, 500)).tolist())
    if kind == "none":
        return None
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(msg=raw_messages)
def test_arbitrary_image_fields_never_crash_and_good_input_still_flows(pipelines: dict[str, DetectionPipeline], msg: SimpleNamespace) -> None:
    for mode, good in (("frames", GOOD_FRAME), ("pings", GOOD_PING)):
        pipe = pipelines[mode]
        before = (pipe.stats.received, pipe.stats.processed, pipe.stats.skipped)
        out = pipe.process(msg)
        s = pipe.stats
        assert s.received == before[0] + 1
        assert (s.processed, s.skipped) == ((before[1] + 1, before[2]) if out is not None else (before[1], before[2] + 1))
        if out is None:
            assert s.last_error  # every skip has a reason
        assert pipe.process(good) is not None  # the next good message is processed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["png", "jpeg", "bmp", "tiff", "garbage"]), payload=st.binary(max_size=4096), prefix=st.booleans())
def test_arbitrary_compressed_data_never_crashes(pipelines: dict[str, DetectionPipeline], fmt: str, payload: bytes, prefix: bool) -> None:
    head = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "bmp": b"BM", "tiff": b"II*\x00"}.get(fmt, b"") if prefix else b""
    msg = SimpleNamespace(header=HEADER, format=fmt, data=head + payload)
    pipe = pipelines["frames"]
    skipped, processed = pipe.stats.skipped, pipe.stats.processed
    out = pipe.process(msg)  # random bytes may still decode (e.g. a tiny BMP): then it is processed or sized out
    assert (pipe.stats.skipped, pipe.stats.processed) == ((skipped + 1, processed) if out is None else (skipped, processed + 1))
    assert pipe.process(GOOD_FRAME) is not None


def test_png_claiming_a_huge_image_is_refused_without_allocating(pipelines: dict[str, DetectionPipeline]) -> None:
    msg = encode_compressed(FACTORY, np.zeros((4, 4), np.uint8), HEADER)
    data = bytearray(msg.data.tobytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width, height = 100000 x 100000
    bad = SimpleNamespace(header=HEADER, format="png", data=bytes(data))
    pipe = pipelines["frames"]
    assert pipe.process(bad) is None


def test_memory_stays_bounded_over_many_bad_messages(pipelines: dict[str, DetectionPipeline]) -> None:
    from mine_jepa_ros.tools.soak import rss_mib

    pipe = pipelines["pings"]
    bad = SimpleNamespace(header=HEADER, encoding="mono8", height=1, width=96, step=96, data=b"x" * 95)
    for _ in range(200):
        pipe.process(bad)
    start = rss_mib()
    for _ in range(5000):
        pipe.process(bad)
    assert rss_mib() - start < 20  # MiB: skipping keeps no per-message state


# -- bad files -------------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mine_jepa_ros.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_bad_files_give_one_line_errors_and_nonzero_exit(tmp_path: Path, checkpoint: Path, narrow_survey) -> None:  # type: ignore[no-untyped-def]
    from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag

    bag = write_survey_bag(narrow_survey, tmp_path / "bag", SurveyBagOptions(mode="pings"))
    truncated_bag = tmp_path / "truncated"
    write_survey_bag(narrow_survey, truncated_bag)
    mcap = next(truncated_bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:200])
    (tmp_path / "empty_bag").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 99}\n")
    not_safetensors = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, not_safetensors)
    truncated_ckpt = tmp_path / "trunc.safetensors"
    truncated_ckpt.write_bytes(checkpoint.read_bytes()[:1000])
    other_window = tmp_path / "w64.safetensors"
    from mine_jepa_ros.detect.model import save_checkpoint

    save_checkpoint(other_window, new_classifier("vit_tiny", window=64, stride=32))
    cases = [
        (["replay", "--bag", str(truncated_bag), "--model", str(checkpoint), "--out", str(tmp_path / "o1")], "truncated"),
        (["replay", "--bag", str(tmp_path / "empty_bag"), "--model", str(checkpoint), "--out", str(tmp_path / "o2")], "empty_bag"),
        (["replay", "--bag", str(tmp_path / "foreign"), "--model", str(checkpoint), "--out", str(tmp_path / "o3")], "foreign"),
        (["replay", "--bag", str(bag), "--model", str(checkpoint), "--out", str(tmp_path / "o4"), "--topic", "/nope"], "/nope"),
        (["replay", "--bag", str(bag), "--model", str(not_safetensors), "--out", str(tmp_path / "o5")], "model.pt"),
        (["replay", "--bag", str(bag), "--model", str(truncated_ckpt), "--out", str(tmp_path / "o6")], "trunc.safetensors"),
        (["evaluate", "--model", str(checkpoint), "--store", str(tmp_path / "nostore")], "nostore"),
        (["import-xtf", str(not_safetensors), "--out", str(tmp_path / "o7")], "model.pt"),
    ]
    for args, name in cases:
        result = _cli(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line and "warn" not in line]
        assert result.returncode != 0, (args, result.stdout)
        assert "Traceback" not in result.stderr, result.stderr
        assert len(lines) == 1 and name in lines[0], (args, result.stderr)
    # a checkpoint for another window size works on its own windows, and says so where it does not fit
    from mine_jepa_ros.detect.classifier import PatchClassifier as PC

    with pytest.raises(UserError, match="does not match the checkpoint's 64-pixel windows"):
        DetectionPipeline(PC(load_checkpoint(other_window), device="cpu"), window=96)
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))


# -- training faults ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_during_pretraining_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator

    store = extract_simulator(tmp_path / "store", SimExtractConfig(surveys=3, pings=256, samples_per_side=192,
                                                                   max_range_m=12.0, altitude_m=2.0, objects_per_class=1),
                              progress=False)
    args = ["pretrain", "--store", str(store.path), "--epochs", "6", "--batch-size", "8", "--views", "2", "--proj-hidden", "16",
            "--num-slices", "8", "--steps-per-epoch", "2", "--device", "cpu", "--precision", "fp32"]
    straight = _cli(*args, "--out", str(tmp_path / "straight"), timeout=300)
    assert straight.returncode == 0, straight.stderr
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mine_jepa_ros.cli", *args, "--out", str(tmp_path / "killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = tmp_path / "killed" / "state.safetensors"
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0.0, 1.5)))  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # What is on disk is always loadable: the resumable state (atomic), and the exported backbone if any.
    from safetensors import safe_open

    with safe_open(str(state), framework="pt") as f:
        assert "mine_jepa_pretrain" in f.metadata() and len(list(f.keys())) > 10
    if (tmp_path / "killed" / "backbone.safetensors").exists():
        assert load_checkpoint(tmp_path / "killed" / "backbone.safetensors")
    resumed = _cli(*args, "--out", str(tmp_path / "killed"), "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "straight" / "backbone.safetensors").state_dict()
    b = load_checkpoint(tmp_path / "killed" / "backbone.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unwritable_or_full_output_fails_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mine_jepa_ros.training.config import PretrainConfig
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator
    from mine_jepa_ros.training.pretrain import Pretrainer

    store = extract_simulator(tmp_path / "store", SimExtractConfig(surveys=2, pings=256, samples_per_side=192,
                                                                   max_range_m=12.0, altitude_m=2.0, objects_per_class=1),
                              progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = PretrainConfig(epochs=1, batch_size=8, views=2, proj_hidden=16, num_slices=8, steps_per_epoch=1, device="cpu")
    with pytest.raises((UserError, OSError)):
        Pretrainer(cfg, [store], blocker / "out", progress=False).run()
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda _p: SimpleNamespace(total=10**9, used=10**9, free=1024))
    started = time.monotonic()
    with pytest.raises(UserError, match="MiB free"):
        Pretrainer(cfg, [store], tmp_path / "full", progress=False).run()
    assert time.monotonic() - started < 30  # before any training
    assert not (tmp_path / "full" / "state.safetensors").exists()


# -- sustained load ------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_short_mode_memory_flat_and_drops_accounted() -> None:
    from mine_jepa_ros.tools.soak import SoakConfig, run_soak

    report = run_soak(SoakConfig(seconds=8, warmup_s=3, sample_every_s=0.5, samples_per_side=256, survey_pings=512,
                                 overload_seconds=3, overload_rate_hz=3000, queue_depth=4, device="cpu"))
    assert report.pings > 200 and report.windows > 0
    assert report.flat, report.to_dict()["memory_mib"]
    o = report.overload
    assert o["accounted"] and o["dropped"] > 0 and o["processed"] > 0
    assert o["max_latency_s"] < 5.0


# -- device faults ------------------------------------------------------------------------------


def test_out_of_memory_halves_the_batch_and_keeps_going(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = PatchClassifier(load_checkpoint(checkpoint), device="cpu", batch_size=32, precision="fp32")
    real = clf._forward

    def fake(batch: np.ndarray) -> np.ndarray:
        if len(batch) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch)

    monkeypatch.setattr(clf, "_forward", fake)
    patches = np.random.default_rng(0).random((40, 96, 96), dtype=np.float32)
    probs = clf.predict(patches)
    assert probs.shape == (40, 3) and clf.batch_size == 8
    assert [w for w in clf.warnings if "batch size reduced" in w] == [
        "cpu out of memory; batch size reduced to 16", "cpu out of memory; batch size reduced to 8"]
    monkeypatch.setattr(clf, "_forward", lambda b: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not mistaken for OOM
        clf.predict(patches[:2])


def test_out_of_memory_at_batch_one_on_cuda_moves_to_cpu(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clf = PatchClassifier(load_checkpoint(checkpoint), device="cpu", batch_size=1, precision="fp32")
    clf.device = torch.device("cuda")  # pretend: the first forward runs out of GPU memory
    calls = []
    real = PatchClassifier._forward

    def fake(self: PatchClassifier, batch: np.ndarray) -> np.ndarray:
        calls.append(self.device.type)
        if self.device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, batch)

    monkeypatch.setattr(PatchClassifier, "_forward", fake)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    probs = clf.predict(np.zeros((3, 96, 96), np.float32))
    assert probs.shape == (3, 3) and clf.device.type == "cpu" and calls[0] == "cuda"
    assert any("moved the model to the CPU" in w for w in clf.warnings)


# -- security ---------------------------------------------------------------------------------------


def test_no_pickle_loading_and_no_shell_interpolation() -> None:
    sources = [p for d in ("mine_jepa_ros", "training", "launch") for p in (ROOT / d).rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
        assert not re.search(r"\bpickle\.loads?\(|\bjoblib\.load\(|\bnp\.load\([^)]*allow_pickle=True", text), path
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", text), path
