"""A shortened demo through launch/demo.sh (tiny dataset, a few iterations), checking every output and the page
rendered in headless Chromium."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "Debian's chromium package is needed to render the report (tests/run.sh installs it)"
    return exe


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, DEMO_DATA=str(base / "data"), DEMO_OUT=str(base / "out"), DEMO_EXP="demo-test",
               DEMO_SNAPSHOT_DIR=str(base / "snapshots"), DEMO_LOGDIR=str(base / "logs"), DEMO_TRAIN="16",
               DEMO_VAL="6", DEMO_TEST="2", DEMO_SIZE="64", DEMO_EPOCHS="1", DEMO_ITERS="2", DEMO_WORKERS="1",
               DEMO_SETS="TRAIN.PRETRAIN 0 TRAIN.BATCH_SIZE 4")
    proc = subprocess.run(["bash", str(ROOT / "launch" / "demo.sh")], cwd=base, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (base / "stdout.txt").write_text(proc.stdout)
    return base


def test_demo_writes_every_output(demo: Path) -> None:
    out = demo / "out"
    stdout = (demo / "stdout.txt").read_text()
    for stage in ("synthetic dataset", "train bsl", "train ae", "train sup", "infer ae",
                  "best background threshold of bsl", "best background threshold of ae",
                  "infer ae on train_augvoc.txt", "train stage2", "infer stage2", "report"):
        assert re.search(rf"\[demo\] <<< {stage}.*: \d+ s", stdout), stage
    ids = [Path(line.split()[0]).stem for line in (demo / "data" / "val_voc.txt").read_text().splitlines()]
    for run in ("bsl", "ae", "sup", "stage2"):
        for i in ids:
            assert (out / run / "val" / f"{i}.png").is_file()
            assert (out / run / "val" / "vis" / f"{i}.png").is_file()
        assert json.loads((out / run / "val" / "eval.json").read_text())["num_images"] == len(ids)
    # the second stage learnt from the single-stage model's clean pseudo labels of every training image (with CRF)
    train_ids = [Path(line.split()[0]).stem for line in (demo / "data" / "train_augvoc.txt").read_text().splitlines()]
    assert all((out / "ae" / "pseudo_train_aug" / "crf" / f"{i}.png").is_file() for i in train_ids)
    stage2_cfg = (demo / "logs" / "pascal_voc" / "demo-test" / "stage2" / "config.yaml").read_text()
    assert str(out / "ae" / "pseudo_train_aug" / "crf") in stage2_cfg and "FULLY_SUPERVISED: true" in stage2_cfg
    for i in ids:  # CRF for the single-stage model and the fully supervised reference, compared like with like
        for run in ("ae", "sup", "stage2"):
            assert (out / run / "val" / "crf" / f"{i}.png").is_file()
        for run, kind in (("bsl", "cam"), ("ae", "cam"), ("ae", "dec")):  # masks at the best threshold
            assert (out / run / "cam_val" / kind / f"{i}.png").is_file()
    assert not (out / "bsl" / "val" / "crf").exists()
    for run in ("bsl", "ae"):
        assert "cam" in json.loads((out / run / "pseudo_train" / "pseudo.json").read_text())
    sweeps = {run: json.loads((out / run / "cam_val" / "eval_cam.json").read_text()) for run in ("bsl", "ae")}
    assert "dec" in sweeps["ae"] and "dec" not in sweeps["bsl"]
    report = json.loads((out / "report.json").read_text())
    chain = {"bsl_cam", "bsl", "ae_cam", "ae_dec", "ae", "ae_crf", "stage2", "stage2_crf", "sup", "sup_crf"}
    assert set(report["val_miou"]) == set(report["val_miou_21_classes"]) == chain
    for key, run, kind in (("bsl_cam", "bsl", "cam"), ("ae_cam", "ae", "cam"), ("ae_dec", "ae", "dec")):
        assert report["best_thresholds"][key] == sweeps[run][kind]["best_threshold"]
    # the report's scores are over the classes the val GT has; eval_seg.py's 21-class mean stays in report.json
    ae_eval = json.loads((out / "ae" / "val" / "eval.json").read_text())
    present = [c for c, n in enumerate(ae_eval["count"]) if n > 0]
    assert report["val_miou_over"] == [ae_eval["class_names"][c] for c in present] and len(present) < 21
    assert report["val_miou"]["ae"] == pytest.approx(100 * sum(ae_eval["iou"][c] for c in present) / len(present),
                                                     abs=0.01)
    assert report["val_miou_21_classes"]["ae"] == pytest.approx(100 * ae_eval["miou_21"], abs=0.01)
    assert all(set(v) == set(report["val_miou_over"]) for v in report["per_class_iou"].values())
    assert set(report["targets"]) == {"single_stage_minus_cam", "single_stage_miou", "pamr_gain_on_train",
                                      "wall_time_s"}
    gain = report["targets"]["single_stage_minus_cam"]
    assert gain["value"] == pytest.approx(report["val_miou"]["ae"] - report["val_miou"]["bsl_cam"], abs=0.011)
    wall = report["targets"]["wall_time_s"]
    assert wall["value"] == report["wall_time_s"] > 0 and wall["reached"] == (wall["value"] <= 600)
    assert report["train_pseudo_labels"]["single_stage_pamr_refined"] >= 0
    labels = json.loads((out / "ae" / "pseudo_train_aug" / "crf" / "eval.json").read_text())
    assert report["train_pseudo_labels"]["second_stage_labels"] == pytest.approx(100 * labels["miou_present"], abs=0.01)
    # every stage before the report has its time, and the curves hold each run's losses
    assert {"train ae (configs/demo_ae.yaml)", "best background threshold of ae on val_voc.txt"} <= \
        set(report["stage_times_s"])
    for run in ("bsl", "ae", "stage2", "sup"):
        assert "train: train_epoch/loss" in report["training_curves"][run]
        assert "val: all/loss" in report["training_curves"][run]
        # validation's mask scores (masks/miou_<kind>), over the classes present only
        mious = [s for s in report["training_curves"][run] if "miou" in s.lower()]
        assert mious and not any("miou21" in s for s in mious), report["training_curves"][run]
        assert len(report["commits"][run]) >= 40
    for f in ("report.html", "examples.png", "figures/curves_ae.png", "figures/confusion_ae.png",
              "figures/confusion_ae_crf.png"):
        assert (out / f).stat().st_size > 0, f
    # the snapshots and logs went where the demo was told, not into the repository
    assert (demo / "snapshots" / "pascal_voc" / "demo-test" / "ae").is_dir()
    assert not (ROOT / "snapshots" / "pascal_voc" / "demo-test").exists()


def test_demo_report_renders_in_chromium(demo: Path, tmp_path: Path) -> None:
    page = demo / "out" / "report.html"
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in ("Validation mIoU", "Targets", "Per-class IoU", "Confusion of the single-stage model",
                    "Examples", "Training curves, configs and commits", "Time per stage"):
        assert section in dom, section
    assert "single-stage model" in dom and "fully supervised reference" in dom and "best threshold (t = " in dom
    assert "second stage" in dom
    report = json.loads((demo / "out" / "report.json").read_text())
    text = re.sub(r"<[^>]+>", " ", dom)  # what a reader sees, without tags and attributes
    for slug in list(report["targets"]) + ["bsl_cam", "ae_crf", "sup_crf", "ae_dec"]:
        assert slug not in text, f"slug {slug} shown as a label"
    for label in (t["label"] for t in report["targets"].values()):
        assert label in html.unescape(text)
    # the per-class table has one row per class of the val GT, no absent class
    per_class = dom.split('id="per-class"')[1].split("</table>")[0]
    assert per_class.count("<tr>") == 1 + len(report["val_miou_over"])
    assert "aeroplane" not in per_class or "aeroplane" in report["val_miou_over"]
    ids = [e["id"] for e in report["examples"]]
    assert all(i in text for i in ids)
    images = dom.count("<img ")
    assert images == 2 + 4 + len(ids) * 8  # confusion matrices, curves, example cells
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert loaded and int(loaded.group(1)) == images, "every figure and example must load"
    shot = tmp_path / "shot.png"
    subprocess.run(args + ["--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 20_000


def test_demo_reuses_finished_stages(demo: Path) -> None:
    times = demo / "out" / "stage_times.tsv"
    before = dict(line.split("\t") for line in times.read_text().splitlines())
    env = dict(os.environ, DEMO_DATA=str(demo / "data"), DEMO_OUT=str(demo / "out"), DEMO_EXP="demo-test",
               DEMO_SNAPSHOT_DIR=str(demo / "snapshots"), DEMO_LOGDIR=str(demo / "logs"), DEMO_WORKERS="1")
    proc = subprocess.run(["bash", str(ROOT / "launch" / "demo.sh")], cwd=demo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # data, 4 trainings, 5 inferences (the export for the second stage among them), 2 sweeps, 2 pseudo
    assert proc.stdout.count("[demo] reusing") == 14
    # a reused stage keeps the time of the run that did the work
    after = dict(line.split("\t") for line in times.read_text().splitlines())
    assert {k: v for k, v in after.items() if k != "report"} == {k: v for k, v in before.items() if k != "report"}


@pytest.mark.parametrize("breakage, message", [
    ("times", "stage_times.tsv is missing; launch/demo.sh writes it"),
    ("logs", "git.txt is missing; train.py writes it next to the run's logs"),
    ("eval_cam", "eval_cam.json is missing; run the demo's earlier stages"),
])
def test_demo_report_bad_input_is_one_line_and_writes_nothing(demo: Path, tmp_path: Path, breakage: str,
                                                              message: str) -> None:
    from tests.helpers import EXIT_USER_ERROR, files_under, run_script, stderr_lines

    out = tmp_path / "out"
    shutil.copytree(demo / "out", out)
    args = {"--data": str(demo / "data"), "--out": str(out), "--list": str(demo / "data" / "val_voc.txt"),
            "--logs": str(demo / "logs" / "pascal_voc" / "demo-test"), "--times": str(out / "stage_times.tsv")}
    if breakage == "times":
        (out / "stage_times.tsv").unlink()
    elif breakage == "logs":
        args["--logs"] = str(tmp_path / "no-logs")
    else:
        (out / "ae" / "cam_val" / "eval_cam.json").unlink()
    before = files_under(str(out))
    proc = run_script("tools/demo_report.py", *[x for kv in args.items() for x in kv])
    lines = stderr_lines(proc)
    assert proc.returncode == EXIT_USER_ERROR and len(lines) == 1 and message in lines[0], proc.stderr
    assert files_under(str(out)) == before


def test_demo_report_curves_take_every_loss_and_miou_tag(tmp_path: Path) -> None:
    """Whatever scalar tags training writes: losses in one panel, mIoU in % in another, no 21-class mean, no AP."""
    from tools.demo_report import RUNS, read_curves
    from utils.visualize import EventWriter

    for run in RUNS:
        w = EventWriter(str(tmp_path / run / "train"))
        for epoch in (0, 1):
            w.add_scalar("train_epoch/loss", 1.0 - 0.5 * epoch, epoch)
        w.close()
        w = EventWriter(str(tmp_path / run / "val"))
        for tag, value in (("all/loss", 0.75), ("masks/miou_pred", 0.25), ("masks/miou21_pred", 0.1),
                           ("all_wo_BG/mAP", 0.5), ("masks/pseudo_coverage", 0.9)):
            w.add_scalar(tag, value, 1)
        w.close()
    curves = read_curves(str(tmp_path))
    assert set(curves) == set(RUNS)
    assert curves["ae"] == {"losses": {"train: train_epoch/loss": {0: 1.0, 1: 0.5}, "val: all/loss": {1: 0.75}},
                            "mIoU (%)": {"val: masks/miou_pred": {1: 25.0}}}
