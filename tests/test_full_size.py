"""Opt-in (``-m slow``): the four original backbones at the original's input sizes, forward and backward on CPU,
with the sizes of SPEC Appendix B (and EfficientNet-Lite0 at ResNet38's crop), and a full-size ResNet38 snapshot
written and read back."""
from __future__ import annotations

import math
import os
import time

import pytest
import torch

from losses import get_criterion
from models.backbones import build_backbone
from models.stage_net import SingleStageNet
from models.weights import load_snapshot

pytestmark = pytest.mark.slow

# backbone: (training crop, mask grid = conv3, conv6), SPEC Appendix B
FULL_SIZE = {"resnet38": (321, 81, 41), "vgg16": (448, 112, 56), "resnet50": (448, 112, 28),
             "resnet101": (448, 112, 28), "efficientnet_lite0": (321, 81, 41)}


@pytest.fixture(autouse=True)
def all_threads():
    """The opt-in run may use the whole machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backbone", list(FULL_SIZE))
def test_full_size_training_step(backbone):
    crop, grid, deep = FULL_SIZE[backbone]
    torch.manual_seed(0)
    model = SingleStageNet(build_backbone(backbone)).train()
    raw = torch.rand(1, 3, crop, crop)
    labels = torch.zeros(1, 20)
    labels[0, [4, 14]] = 1
    t0 = time.perf_counter()
    feats = model.backbone((raw - 0.45) / 0.25)
    assert feats["conv3"].shape[-2:] == (grid, grid) and feats["conv6"].shape[-2:] == (deep, deep)
    out = model((raw - 0.45) / 0.25, raw, labels)
    assert out["logits"].shape == (1, 21, grid, grid)
    assert out["pseudo"].shape == out["dec"].shape == (1, 21, crop, crop)
    assert all(torch.isfinite(v).all() for v in out.values())
    loss = get_criterion("SoftMargin")(out["cls"], labels) + out["loss_mask"].mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    print(f"\n{backbone} at {crop}: forward + backward {time.perf_counter() - t0:.1f} s "
          f"({torch.get_num_threads()} threads)")


def test_resnet38_inference_canvas():
    """SPEC 8 / Appendix B: the 1024 x 1024 inference canvas gives a 256 mask grid; test mode returns input size."""
    model = SingleStageNet(build_backbone("resnet38")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 1024, 1024))
    assert out["masks"].shape == (1, 21, 1024, 1024) and out["cls"].shape == (1, 20)
    assert torch.allclose(out["masks"].sum(1), torch.ones(1, 1024, 1024), atol=1e-5)


def test_full_size_resnet38_snapshot_round_trip(tmp_path):
    torch.manual_seed(0)
    src = SingleStageNet(build_backbone("resnet38")).eval()
    path = tmp_path / "model_enc_e020Xs0.928.pth"
    torch.save(src.state_dict(), path)
    assert os.path.getsize(path) / 2 ** 20 == pytest.approx(527, abs=1)  # the released file's size
    torch.manual_seed(1)
    dst = SingleStageNet(build_backbone("resnet38")).eval()
    load_snapshot(dst, str(path))
    x = torch.randn(1, 3, 129, 129)
    with torch.no_grad():
        assert torch.equal(src(x)["masks"], dst(x)["masks"])
    assert math.isclose(sum(p.numel() for p in dst.state_dict().values()), 138_027_943)
