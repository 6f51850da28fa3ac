"""tools/make_filelists.py from a fake VOC/SBD tree and tools/convert_sbd.py from .mat files written here."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC = "voc/VOCdevkit/VOC2012"
SBD = "sbd/benchmark_RELEASE/dataset"

# VOC train a..d, VOC val e f; SBD train a b e g, SBD val h f:
# train_aug = {a..d} + {a,b,e,g} + {h,f} - {e,f} = a b c d g h; SBD for a b g h, VOC for c d
VOC_TRAIN, VOC_VAL = ["b", "a", "c", "d"], ["f", "e"]
SBD_TRAIN, SBD_VAL = ["a", "b", "e", "g"], ["h", "f"]


def _touch(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def _ids(path: str, ids: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(i + "\n" for i in ids))


@pytest.fixture
def fake_downloads(tmp_path):
    data = tmp_path / "data"
    _ids(str(data / VOC / "ImageSets/Segmentation/train.txt"), VOC_TRAIN)
    _ids(str(data / VOC / "ImageSets/Segmentation/val.txt"), VOC_VAL)
    for i in VOC_TRAIN + VOC_VAL:
        _touch(str(data / VOC / "JPEGImages" / f"{i}.jpg"))
        _touch(str(data / VOC / "SegmentationClass" / f"{i}.png"))
    _ids(str(data / SBD / "train.txt"), SBD_TRAIN)
    _ids(str(data / SBD / "val.txt"), SBD_VAL)
    for i in SBD_TRAIN + SBD_VAL:
        _touch(str(data / SBD / "img" / f"{i}.jpg"))
        _touch(str(data / SBD / "cls_png" / f"{i}.png"))
    _ids(str(data / "voc_test/VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt"), ["t2", "t1"])
    for i in ("t1", "t2"):
        _touch(str(data / "voc_test/VOCdevkit/VOC2012/JPEGImages" / f"{i}.jpg"))
    return data


def _run(tool: str, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], capture_output=True,
                          text=True, cwd=cwd)


def _read(path) -> list[str]:
    text = open(path).read()
    assert text.endswith("\n")
    return text.splitlines()


def test_make_filelists(fake_downloads):
    data = fake_downloads
    r = _run("make_filelists.py", "--voc", str(data / "voc"), "--sbd", str(data / "sbd"),
             "--voc-test", str(data / "voc_test"), "--out", str(data))
    assert r.returncode == 0, r.stderr
    assert f"{data / 'train_augvoc.txt'}: 6 lines (4 SBD + 2 VOC) (the original's: 10582)" in r.stdout
    aug = _read(data / "train_augvoc.txt")
    assert aug == [f"{SBD}/img/{i}.jpg {SBD}/cls_png/{i}.png" for i in "abgh"] + \
        [f"{VOC}/JPEGImages/{i}.jpg {VOC}/SegmentationClass/{i}.png" for i in "cd"]
    assert _read(data / "train_voc.txt") == [f"{VOC}/JPEGImages/{i}.jpg {VOC}/SegmentationClass/{i}.png"
                                             for i in "abcd"]
    val = _read(data / "val_voc.txt")
    assert val == [f"{VOC}/JPEGImages/{i}.jpg {VOC}/SegmentationClass/{i}.png" for i in VOC_VAL]
    ids = lambda lines: {os.path.basename(line.split()[0])[:-4] for line in lines}  # noqa: E731
    assert not ids(aug) & ids(val) and ids(_read(data / "train_voc.txt")) <= ids(aug)
    assert _read(data / "test.txt") == [f"voc_test/VOCdevkit/VOC2012/JPEGImages/{i}.jpg" for i in ("t2", "t1")]
    # the lists are relative to --out, which holds voc/ and sbd/ here: every path exists
    for line in aug + val:
        assert all(os.path.isfile(data / p) for p in line.split())
    assert "note:" not in r.stdout


def test_make_filelists_rebuilds_the_synthetic_lists(synthetic_root, tmp_path):
    r = _run("make_filelists.py", "--voc", f"{synthetic_root}/voc", "--sbd", f"{synthetic_root}/sbd",
             "--voc-test", f"{synthetic_root}/voc_test", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for name in ("train_augvoc.txt", "train_voc.txt", "val_voc.txt", "test.txt"):
        assert open(tmp_path / name).read() == open(os.path.join(synthetic_root, name)).read(), name
    assert f"note: the lists expect {tmp_path / 'voc'} to be {synthetic_root}/voc" in r.stdout


@pytest.mark.parametrize("breakage, message", [
    ("voc", "VOCdevkit/VOC2012 is not a directory; --voc must hold VOCdevkit/VOC2012: download http"),
    ("sbd", "benchmark_RELEASE/dataset is not a directory; --sbd must hold benchmark_RELEASE/dataset: download"),
    (f"{VOC}/ImageSets/Segmentation/val.txt", "ImageSets/Segmentation/val.txt not found; --voc must be the VOC2012"),
    (f"{SBD}/train.txt", "dataset/train.txt not found; --sbd must be the SBD download"),
    (f"{SBD}/cls_png", "cls_png is not a directory; convert the SBD annotations first: python tools/convert_sbd.py"),
    (f"{SBD}/cls_png/g.png", "1 SBD masks (cls_png/<id>.png) are; run python tools/convert_sbd.py"),
    (f"{VOC}/JPEGImages/c.jpg", "1 VOC images (JPEGImages) are missing, e.g. "),
])
def test_make_filelists_errors(fake_downloads, breakage, message):
    import shutil

    data = fake_downloads
    target = data / breakage
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    r = _run("make_filelists.py", "--voc", str(data / "voc"), "--sbd", str(data / "sbd"), "--out", str(data))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert not (data / "train_augvoc.txt").exists()


def test_make_filelists_test_split_fallbacks(fake_downloads, tmp_path):
    data = fake_downloads
    r = _run("make_filelists.py", "--voc", str(data / "voc"), "--sbd", str(data / "sbd"), "--out", str(tmp_path))
    assert r.returncode == 0 and "no test.txt" in r.stdout and not (tmp_path / "test.txt").exists()
    _ids(str(data / VOC / "ImageSets/Segmentation/test.txt"), ["a"])
    r = _run("make_filelists.py", "--voc", str(data / "voc"), "--sbd", str(data / "sbd"), "--out", str(tmp_path))
    assert r.returncode == 0 and _read(tmp_path / "test.txt") == [f"{VOC}/JPEGImages/a.jpg"]


def _sbd_mat(path, seg: np.ndarray) -> None:
    """An SBD-style class annotation: struct GTcls with Segmentation, Boundaries, CategoriesPresent."""
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros((1, 1), object),
                                      "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8)}})


def test_convert_sbd(tmp_path):
    cls, out = tmp_path / "cls", tmp_path / "cls_png"
    cls.mkdir()
    rng = np.random.default_rng(0)
    segs = {n: rng.integers(0, 21, (7, 9)).astype(np.uint8) for n in ("2008_000002", "2008_000003")}
    for n, seg in segs.items():
        _sbd_mat(cls / f"{n}.mat", seg)
    (cls / "notes.txt").write_text("not a .mat")
    r = _run("convert_sbd.py", "--inp", str(cls), "--out", str(out))  # no trailing slash: appended
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Found 2 files"
    assert sorted(os.listdir(out)) == ["2008_000002.png", "2008_000003.png"]
    for n, seg in segs.items():
        img = Image.open(out / f"{n}.png")
        assert img.mode == "L" and img.getpalette() is None and np.array_equal(np.asarray(img), seg)


def test_convert_sbd_defaults_inside_benchmark_release(tmp_path):
    (tmp_path / "dataset/cls").mkdir(parents=True)
    _sbd_mat(tmp_path / "dataset/cls/x.mat", np.full((3, 4), 15, np.uint8))
    r = _run("convert_sbd.py", cwd=str(tmp_path))
    assert r.returncode == 0 and (tmp_path / "dataset/cls_png/x.png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("convert_sbd.py", "--inp", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode == 0 and r.stdout == "Found 0 files\n" and os.listdir(tmp_path / "o") == []


def test_convert_sbd_errors(tmp_path):
    (tmp_path / "cls").mkdir()
    bad = tmp_path / "cls" / "bad.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, this is not one")
    r = _run("convert_sbd.py", "--inp", str(tmp_path / "cls"), "--out", str(tmp_path / "out"))
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # the rest is the progress bar
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1
    assert errors[0].startswith(f"error: {bad} is not a readable SBD class annotation")
    assert not (tmp_path / "out" / "bad.png").exists() and [f for f in os.listdir(tmp_path / "out")] == []
    bad.unlink()
    scipy.io.savemat(tmp_path / "cls" / "other.mat", {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    r = _run("convert_sbd.py", "--inp", str(tmp_path / "cls"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "other.mat is not a readable SBD class annotation (GTcls.Segmentation)" in r.stderr
    r = _run("convert_sbd.py", "--inp", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.startswith(f"error: input directory {tmp_path / 'nowhere'}/ not found")
