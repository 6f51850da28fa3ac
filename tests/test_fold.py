"""Batch norms folded into their convolutions for inference (models/fold.py): the same outputs up to float rounding
for every backbone, only the pairs whose data flow is certain folded, and infer_val.py folding by default
(--no-fold-bn keeps them)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import infer_val
from models import build_model
from models.fold import conv_bn_pairs, fold_batchnorms
from utils.config import get_cfg_defaults, load_cfg

SIZE = 64


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from the identity, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=g))
                    m.bias.copy_(0.4 * torch.rand(n, generator=g) - 0.2)


def _model(backbone: str, model: str) -> nn.Module:
    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL = backbone, model
    torch.manual_seed(0)
    net = build_model(cfg.NET, init_weights=False)
    _randomise_batchnorms(net)
    return net.eval()


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


# backbones whose batch norms all follow a convolution; ResNet38's come before theirs (pre-activation) and the
# EfficientNets' are timm's BatchNormAct2d (batch norm and activation): those stay, the heads' fold
@pytest.mark.parametrize("backbone,model", [("resnet18", "ae"), ("resnet18", "bsl"), ("resnet50", "ae"),
                                            ("vgg16", "ae"), ("resnet38", "ae"), ("efficientnet_lite0", "ae")])
def test_folded_model_gives_the_same_outputs(backbone, model):
    net = _model(backbone, model)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = net(x)
        before = _batchnorms(net)
        folded = fold_batchnorms(net)
        out = net(x)
    left = _batchnorms(net)
    assert folded == len(before) - len(left) and folded > 0
    if backbone in ("resnet18", "resnet50", "vgg16"):
        assert not left
    else:  # only the backbone's remain
        in_backbone = {id(m) for m in net.backbone.modules()}
        assert left and all(id(m) in in_backbone for m in left)
    assert out.keys() == ref.keys()
    for k in ref:  # float rounding, grown over up to a hundred layers: within 1e-3 of the output's largest value
        assert (out[k] - ref[k]).abs().max() <= 1e-3 * ref[k].abs().max(), k
    top2 = ref["masks"].topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-4
    assert torch.equal(out["masks"].argmax(1)[clear], ref["masks"].argmax(1)[clear])


def test_only_plain_pairs_fold():
    """A Conv2d followed by a BatchNorm2d subclass (which may do more than normalise), a batch norm before its
    convolution and a batch norm in training mode are left alone; the Sequential pair folds."""

    class BatchNormAct(nn.BatchNorm2d):
        def forward(self, x):
            return super().forward(x).relu()

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), BatchNormAct(4),
                        nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)).eval()
    assert [(a, b) for _, a, b in conv_bn_pairs(net)] == [("0", "1")]
    assert fold_batchnorms(net) == 1
    assert isinstance(net[1], nn.Identity) and net[0].bias is not None
    assert type(net[3]) is BatchNormAct and type(net[4]) is nn.BatchNorm2d
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))  # training mode


# ------------------------------------------------------------------------------------------------ infer_val.py

TINY_CFG = """\
NET:
  MODEL: ae
  BACKBONE: resnet18
TEST:
  SCALES: [1, 0.5]
  PAD_SIZE: [96, 96]
  BATCH_SIZE: 4
"""


def test_infer_val_folds_by_default_and_no_fold_bn_keeps_the_batchnorms(synthetic_root, tmp_path, monkeypatch):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_CFG)
    cfg = load_cfg(str(cfg_path))
    torch.manual_seed(0)
    net = build_model(cfg.NET, init_weights=False)
    _randomise_batchnorms(net)
    snap_dir = tmp_path / "snapshots" / "pascal_voc" / "exp" / "ae"
    snap_dir.mkdir(parents=True)
    torch.save(net.state_dict(), snap_dir / "model_enc_e001.pth")

    folds = []

    def spy(model):
        folds.append(fold_batchnorms(model))
        return folds[-1]

    monkeypatch.setattr(infer_val, "fold_batchnorms", spy)
    val = os.path.join(synthetic_root, "val_voc.txt")

    def run(out: str, *extra: str) -> None:
        infer_val.main(["--dataset", "pascal_voc", "--cfg", str(cfg_path), "--exp", "exp", "--run", "ae",
                        "--resume", "e001", "--snapshot-dir", str(tmp_path / "snapshots"), "--logdir",
                        str(tmp_path / "logs"), "--infer-list", val, "--mask-output-dir", str(tmp_path / out),
                        "--workers", "0", "--device", "cpu", "--no-crf", "--save-probs", *extra,
                        "--set", "TEST.DATA_ROOT", synthetic_root])

    run("folded")
    assert folds == [len(_batchnorms(net))]  # ResNet-18 "ae": every batch norm follows a convolution
    run("plain", "--no-fold-bn")
    assert len(folds) == 1
    assert infer_val.get_parser().parse_args(["--cfg", "x"]).fold_bn is True
    for line in open(val):
        i = os.path.splitext(os.path.basename(line.split()[0]))[0]
        a = np.load(tmp_path / "folded" / "probs" / f"{i}.npy").astype(np.float32)
        b = np.load(tmp_path / "plain" / "probs" / f"{i}.npy").astype(np.float32)
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=2e-3)  # float16 files
        folded_mask, plain_mask = (np.asarray(Image.open(tmp_path / d / f"{i}.png")) for d in ("folded", "plain"))
        assert (folded_mask == plain_mask).mean() >= 0.999
