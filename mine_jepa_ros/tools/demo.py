"""``make demo``: the whole chain on the embedded default (simulated surveys), end to end.

1. simulate training surveys and a separate test survey (written as a rosbag2 with ground truth);
2. extract patch stores from the training surveys (split by survey);
3. SIGReg-pretrain a ViT-Tiny on them (small scale, sonar augmentations);
4. probe it (linear head on the frozen backbone) into a deployable checkpoint;
5. replay the test survey's bag through the detector, score it, and write overlay PNGs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mine_jepa_ros.detect.replay import ReplayOptions, replay
from mine_jepa_ros.detect.replay import format_metrics as format_replay_metrics
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.pictures import save_survey_png
from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (replaced)")
    parser.add_argument("--surveys", type=int, default=16, help="training surveys to simulate")
    parser.add_argument("--epochs", type=int, default=3, help="SIGReg pretraining epochs")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    args = parser.parse_args(argv)

    from mine_jepa_ros.training.config import PretrainConfig
    from mine_jepa_ros.training.extract import SimExtractConfig, extract_simulator
    from mine_jepa_ros.training.pretrain import Pretrainer
    from mine_jepa_ros.training.probe import ProbeConfig, evaluate, format_metrics, train_probe

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    def say(text: str) -> None:
        print(f"[demo {time.perf_counter() - t0:6.1f} s] {text}", flush=True)

    test_survey = simulate_survey(SurveyConfig(pings=1536, samples_per_side=512, max_range_m=16.0, altitude_m=2.5,
                                               milco_count=6, nombo_count=6, object_ground_range_m=(3.0, 12.0),
                                               object_min_spacing_m=5.0, seed=90_001))
    test_bag = write_survey_bag(test_survey, out / "test_survey_bag", SurveyBagOptions(frame_height=512))
    save_survey_png(test_survey, out / "test_survey.png")
    say(f"test survey: {test_bag} ({len(test_survey.objects)} objects; picture {out / 'test_survey.png'})")

    sim = SimExtractConfig(surveys=args.surveys, pings=1024, samples_per_side=512, max_range_m=16.0, altitude_m=2.5,
                           objects_per_class=5, seed=1)
    store = extract_simulator(out / "patches", sim)
    say(store.summary())

    cfg = PretrainConfig(method="sigreg", arch="vit_tiny", augment="sonar", epochs=args.epochs, batch_size=64, views=2,
                         proj_hidden=512, lr=1e-3, warmup_epochs=0.5, device=args.device)
    pre = Pretrainer(cfg, [store], out / "pretrain").run()
    last = pre.metrics[-1]
    say(f"SIGReg pretraining: loss {last['loss']:.3f}, online probe accuracy {last['probe_acc']:.2f} "
        f"-> {pre.backbone} (curves: {out / 'pretrain' / 'metrics.png'})")

    model_path = out / "model.safetensors"
    model = train_probe(store, ProbeConfig(mode="linear", init=str(pre.backbone), epochs=200, device=args.device), model_path)
    say(f"probe (linear, frozen backbone) -> {model_path}")
    print(format_metrics(evaluate(model, store, "test", device=args.device)))

    result = replay(test_bag, model_path, out / "detections_bag",
                    ReplayOptions(device=args.device, report_dir=out / "report", overlay=True))
    say(f"replayed the test survey: {result.images} frames, {result.windows} windows ({result.windows_per_second:.0f}/s), "
        f"{result.detections} detections")
    if result.metrics:
        print(format_replay_metrics(result.metrics))
    print()
    print(f"detections bag : {out / 'detections_bag'}")
    print(f"metrics        : {out / 'report' / 'metrics.json'}  (plot {out / 'report' / 'metrics.png'})")
    print(f"overlay PNGs   : {out / 'report'}/overlay_*.png")
    print(f"model          : {model_path}  (ros2 run mine_jepa_ros mine_jepa_node --ros-args -p model_path:={model_path})")
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
