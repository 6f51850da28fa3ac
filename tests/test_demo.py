"""A shortened demo through launch/demo.sh (tiny dataset, a few iterations), checking every output and the page
rendered in headless Chromium."""
from __future__ import annotations

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
    for stage in ("synthetic dataset", "train bsl", "train ae", "train sup", "infer ae", "report"):
        assert re.search(rf"\[demo\] <<< {stage}.*: \d+ s", stdout), stage
    ids = [Path(line.split()[0]).stem for line in (demo / "data" / "val_voc.txt").read_text().splitlines()]
    for run in ("bsl", "ae", "sup"):
        for i in ids:
            assert (out / run / "val" / f"{i}.png").is_file()
            assert (out / run / "val" / "vis" / f"{i}.png").is_file()
        assert json.loads((out / run / "val" / "eval.json").read_text())["num_images"] == len(ids)
    for i in ids:  # CRF only for the single-stage model
        assert (out / "ae" / "val" / "crf" / f"{i}.png").is_file()
        for kind in ("cam", "dec"):
            assert (out / "ae" / "pseudo_val" / kind / f"{i}.png").is_file()
    assert not (out / "bsl" / "val" / "crf").exists()
    for run in ("bsl", "ae"):
        assert "cam" in json.loads((out / run / "pseudo_train" / "pseudo.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert set(report["val_miou_present_classes"]) == {"bsl", "ae", "ae_crf", "sup"}
    assert set(report["targets"]) == {"single_stage_minus_cam", "single_stage_miou", "pamr_gain_on_train",
                                      "wall_time_s"}
    wall = report["targets"]["wall_time_s"]
    assert wall["value"] == report["wall_time_s"] > 0 and wall["reached"] == (wall["value"] <= 600)
    assert report["train_pseudo_labels"]["single_stage_pamr_refined"] >= 0
    for f in ("report.html", "examples.png", "ae/val/confusion.png", "ae/val/iou.png"):
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
    assert "Validation mIoU" in dom and "single-stage model + CRF" in dom and "fully supervised" in dom
    assert dom.count("<tr>") >= 10  # the method, pseudo-label, target and per-class tables
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert loaded and int(loaded.group(1)) == 3, "examples, confusion matrix and IoU chart must load"
    shot = tmp_path / "shot.png"
    subprocess.run(args + ["--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.stat().st_size > 20_000


def test_demo_reuses_finished_stages(demo: Path) -> None:
    env = dict(os.environ, DEMO_DATA=str(demo / "data"), DEMO_OUT=str(demo / "out"), DEMO_EXP="demo-test",
               DEMO_SNAPSHOT_DIR=str(demo / "snapshots"), DEMO_LOGDIR=str(demo / "logs"), DEMO_WORKERS="1")
    proc = subprocess.run(["bash", str(ROOT / "launch" / "demo.sh")], cwd=demo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("[demo] reusing") >= 8
