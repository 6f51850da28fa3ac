"""Both models over all backbones at small inputs: outputs of every mode, gradients, freezing, BN statistics,
parameter groups; the backbones' feature contract; building from the config, including init-weight files."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn as nn
import torchvision

from losses import get_criterion
from models import build_model
from models.backbones import BACKBONES, build_backbone
from models.stage_net import CAMNet, SingleStageNet
from utils.config import get_cfg_defaults
from utils.errors import UserError
from utils.inference_tools import forward_masks

SIZE = 64
BATCH = 2
NUM_CLASSES = 21
# SPEC 4.1: tensors per parameter group (pretrained weights, pretrained biases, new weights, new biases) for "ae";
# resnet18 (new) freezes nothing: 20 convs + 20 BN gammas, 20 BN betas; EfficientNet-Lite: every conv but the stem
# (lite0: stem, 1 depthwise-separable block of 2 convs, 15 inverted-residual blocks of 3, head; lite1/2: 20 blocks
# of 3), no conv biases
GROUPS_AE = {"resnet38": (35, 0, 26, 13), "vgg16": (13, 13, 26, 13), "resnet50": (52, 0, 26, 13),
             "resnet101": (103, 0, 26, 13), "resnet18": (40, 20, 26, 13), "efficientnet_lite0": (48, 0, 26, 13),
             "efficientnet_lite1": (63, 0, 26, 13), "efficientnet_lite2": (63, 0, 26, 13)}
LR_MULT = {"resnet38": (1, 2, 10, 20), "vgg16": (1, 2, 10, 20), "resnet50": (1, 1, 10, 10),
           "resnet101": (1, 1, 10, 10), "resnet18": (1, 1, 1, 1), "efficientnet_lite0": (1, 1, 10, 10),
           "efficientnet_lite1": (1, 1, 10, 10), "efficientnet_lite2": (1, 1, 10, 10)}
# frozen parameter tensors (SPEC 4.2-4.4, 5.2): resnet38 conv1a + 7 convs of b2, b2_1, b2_2 + gamma/beta of its 37
# BNs; vgg16 conv1_1/conv1_2 weights and biases; resnets conv1 + gamma/beta of all BNs (53 / 104); EfficientNet-Lite
# the stem conv + gamma/beta of its BNs (one per conv: 49 / 64)
FROZEN = {"resnet38": 8 + 2 * 37, "vgg16": 4, "resnet50": 1 + 2 * 53, "resnet101": 1 + 2 * 104, "resnet18": 0,
          "efficientnet_lite0": 1 + 2 * 49, "efficientnet_lite1": 1 + 2 * 64, "efficientnet_lite2": 1 + 2 * 64}
COMBOS = [(b, m) for b in BACKBONES for m in ("ae", "bsl")]


def make(backbone: str, model: str, pretrained: bool = True) -> nn.Module:
    """The model as build_model makes it, without reading an init file (its weights stay random)."""
    torch.manual_seed(0)
    bb = build_backbone(backbone, pretrained=pretrained)
    return SingleStageNet(bb, NUM_CLASSES) if model == "ae" else CAMNet(bb, NUM_CLASSES)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image_raw = torch.rand(BATCH, 3, SIZE, SIZE, generator=g)
    image = (image_raw - 0.45) / 0.25
    labels = torch.zeros(BATCH, NUM_CLASSES - 1)
    labels[0, 2] = labels[1, 5] = labels[1, 14] = 1
    return image, image_raw, labels


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{b}-{m}" for b, m in COMBOS])
def net(request):
    backbone, model = request.param
    return backbone, model, make(backbone, model)


def frozen_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model._bn_frozen if isinstance(m, nn.BatchNorm2d)]


def test_parameter_groups(net):
    backbone, model, m = net
    expected = GROUPS_AE[backbone] if model == "ae" else GROUPS_AE[backbone][:2] + (1, 0)
    groups = m.parameter_groups(1e-3, 5e-4)
    assert tuple(len(g["params"]) for g in groups) == expected
    assert [g["lr"] for g in groups] == pytest.approx([k * 1e-3 for k in LR_MULT[backbone]])
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0, 5e-4, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no tensor twice (bsl registers fc8 three times)
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert set(ids) == trainable
    if model == "bsl":
        assert groups[2]["params"][0] is m.fc8.weight


def test_frozen_parameters(net):
    backbone, model, m = net
    m.train()
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert len(frozen) == FROZEN[backbone]
    assert all(n.startswith("backbone.") for n in frozen)  # the head trains entirely
    if backbone == "resnet38":
        assert "backbone.conv1a.weight" in frozen and "backbone.b2_2.conv_branch2b1.weight" in frozen
        assert "backbone.b3.conv_branch2a.weight" not in frozen and "backbone.bn7.weight" in frozen
    # train() re-applies the freezing, as the original's override
    for p in m.parameters():
        p.requires_grad_(True)
    m.train()
    assert sum(not p.requires_grad for p in m.parameters()) == FROZEN[backbone]


def test_test_mode_and_validation(net):
    backbone, model, m = net
    image, image_raw, labels = batch(1)
    m.eval()
    with torch.no_grad():
        out = m(image)
        again = m(image)
        val = m(image, image_raw, labels)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"cls": (BATCH, 20), "masks": (BATCH, 21, SIZE, SIZE)}
    assert torch.isfinite(out["masks"]).all() and torch.isfinite(out["cls"]).all()
    assert torch.equal(out["masks"], again["masks"])  # eval: no dropout, the gate's fixed mix
    # the validation's final prediction starts from the test-mode masks, taken from the training-mode outputs
    assert torch.allclose(forward_masks(val, (SIZE, SIZE)), out["masks"], atol=1e-6)
    if model == "ae":
        assert torch.allclose(out["masks"].sum(1), torch.ones(BATCH, SIZE, SIZE), atol=1e-5)  # softmax
        assert torch.allclose(val["cls"], out["cls"])
    else:
        assert torch.equal(out["masks"][:, 0], torch.full((BATCH, SIZE, SIZE), 0.1))  # NET.BG_SCORE
        assert out["masks"][:, 1:].min() >= 0 and out["masks"][:, 1:].max() <= 1
        assert torch.equal(val["cam"][:, 0], out["masks"][:, 0])


def test_training_step(net):
    """Last for each model: the step changes its (random) weights."""
    backbone, model, m = net
    image, image_raw, labels = batch()
    m.train()
    before = {id(bn): (bn.running_mean.clone(), bn.running_var.clone()) for bn in frozen_bns(m)}
    frozen_params = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    out = m(image, image_raw, labels)

    h = math.ceil(SIZE / 4)
    shapes = {"cls": (BATCH, 20), "cls_fg": (BATCH,), "cam": (BATCH, 21, SIZE, SIZE)}
    if model == "ae":
        shapes.update({"dec": (BATCH, 21, SIZE, SIZE), "logits": (BATCH, 21, h, h),
                       "pseudo": (BATCH, 21, SIZE, SIZE), "loss_mask": (BATCH,)})
    else:
        shapes["masks"] = (BATCH, 21, SIZE, SIZE)  # uncleaned, for the validation's final prediction
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert all(torch.isfinite(v).all() for v in out.values())
    assert all(v.dtype == torch.float32 for v in out.values())
    absent = labels == 0
    assert out["cam"][:, 1:][absent].abs().sum() == 0  # cleaned with the labels
    if model == "ae":
        assert out["dec"][:, 1:][absent].abs().sum() == 0
        assert set(out["pseudo"].unique().tolist()) <= {0.0, 1.0}
        assert out["pseudo"].sum(1).max() <= 1  # one class per pixel at most
        assert not out["pseudo"].requires_grad and not out["dec"].requires_grad

    loss = get_criterion("SoftMargin")(out["cls"], labels)
    if model == "ae":
        loss = loss + out["loss_mask"].mean()
    loss.backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name

    torch.optim.SGD(m.parameter_groups(1e-3, 5e-4), lr=1e-3, momentum=0.9).step()
    for bn in frozen_bns(m):
        assert torch.equal(bn.running_mean, before[id(bn)][0]) and torch.equal(bn.running_var, before[id(bn)][1])
    for name, p in m.named_parameters():
        if name in frozen_params:
            assert torch.equal(p, frozen_params[name]), name
    if model == "ae":
        # the ASPP BNs keep their initial statistics (SPEC 5.2); the decoder BNs are ordinary
        assert all(bn.running_var.eq(1).all() and bn.num_batches_tracked == 0 for bn in m.aspp.modules()
                   if isinstance(bn, nn.BatchNorm2d))
        assert m.fc8_skip[1].num_batches_tracked == 1 and m.fc8_skip[1].running_mean.abs().sum() > 0
    backbone_bns = [mod for mod in m.backbone.modules() if isinstance(mod, nn.BatchNorm2d)]
    frozen_ids = {id(bn) for bn in frozen_bns(m)}
    if backbone == "resnet18":  # trained from scratch: its BNs learn their statistics
        assert all(bn.num_batches_tracked == 1 and id(bn) not in frozen_ids for bn in backbone_bns)
    else:
        assert all(bn.num_batches_tracked == 0 and id(bn) in frozen_ids for bn in backbone_bns)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_backbone_features(backbone):
    """SPEC 4 / Appendix B: conv3 at stride 4, conv6 at stride 8 (16 for ResNet-50/101), every step n -> ceil(n/2)."""
    stride6 = 16 if backbone in ("resnet50", "resnet101") else 8
    bb = build_backbone(backbone).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 65, 49))
    assert set(feats) == {"conv3", "conv6"}
    assert tuple(feats["conv3"].shape) == (1, bb.channels["conv3"], 17, 13)
    assert tuple(feats["conv6"].shape) == (1, bb.channels["conv6"], math.ceil(65 / stride6), math.ceil(49 / stride6))
    assert bb.channels == {"resnet38": {"conv3": 256, "conv6": 4096}, "vgg16": {"conv3": 256, "conv6": 1024},
                           "resnet50": {"conv3": 256, "conv6": 2048}, "resnet101": {"conv3": 256, "conv6": 2048},
                           "resnet18": {"conv3": 64, "conv6": 512}, "efficientnet_lite0": {"conv3": 24, "conv6": 1280},
                           "efficientnet_lite1": {"conv3": 24, "conv6": 1280},
                           "efficientnet_lite2": {"conv3": 24, "conv6": 1280}}[backbone]


def test_stochastic_gate_and_dropout_make_training_random():
    m = make("resnet18", "ae").train()
    image, image_raw, labels = batch()
    assert not torch.equal(m(image)["cls"], m(image)["cls"])
    m.eval()
    assert torch.equal(m(image)["cls"], m(image)["cls"])


def test_forward_needs_both_or_neither_training_input():
    m = make("resnet18", "ae")
    image, image_raw, labels = batch()
    with pytest.raises(ValueError, match="both image_raw and labels"):
        m(image, image_raw)


def test_mixed_precision_keeps_the_maths_in_float32():
    m = make("resnet18", "ae").train()
    image, image_raw, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(image, image_raw, labels)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("kind", ["ae", "bsl"])
def test_float64_model_keeps_its_maths_in_float64(kind):
    """A float64 model computes its scores, masks, PAMR and loss in float64 (the bench's equivalence check needs
    it), and its float64 outputs round to the float32 model's."""
    m = make("resnet18", kind).eval()
    image, image_raw, labels = batch()
    out32 = m(image, image_raw, labels)
    out64 = m.double()(image.double(), image_raw.double(), labels.double())
    assert out64.keys() == out32.keys()
    for k, v in out64.items():
        assert v.dtype == (torch.float64 if v.is_floating_point() else out32[k].dtype), k
        assert torch.allclose(v.float(), out32[k], atol=1e-4), k


# --- building from the config ---

def net_cfg(backbone: str, model: str = "ae", **extra) -> dict:
    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL = backbone, model
    for k, v in extra.items():
        cfg.NET[k] = v
    return cfg.NET


def test_build_model_from_config():
    m = build_model(net_cfg("resnet18", "ae", PAMR_ITER=3, PAMR_KERNEL=[1, 2], SG_PSI=0.5, FOCAL_P=2))
    assert isinstance(m, SingleStageNet)
    assert (m._aff.num_iter, m._aff.dilations, m.sg.psi, m.focal_p) == (3, (1, 2), 0.5, 2)
    paper = build_model(net_cfg("resnet18", "ae"))  # the config's defaults: the paper's T and D (SPEC 5.8)
    assert (paper._aff.num_iter, paper._aff.dilations) == (10, (1, 2, 4, 8, 12, 24))
    b = build_model(net_cfg("resnet18", "bsl", BG_SCORE=0.3), num_classes=11)
    assert isinstance(b, CAMNet) and b.bg_score == 0.3 and b.fc8.weight.shape[0] == 10


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="NET.BACKBONE.*resnet38, vgg16, resnet50, resnet101, resnet18"):
        build_model(net_cfg("resnet34"))
    with pytest.raises(UserError, match="NET.MODEL.*ae, bsl"):
        build_model(net_cfg("resnet18", "vgg16"))  # the default NET.MODEL is not a model


def test_missing_init_file_names_file_and_source(tmp_path):
    path = str(tmp_path / "resnet50-19c8e357.pth")
    with pytest.raises(UserError) as e:
        build_model(net_cfg("resnet50", PRE_WEIGHTS_PATH=path))
    msg = str(e.value)
    assert path in msg and "https://download.pytorch.org/models/resnet50-19c8e357.pth" in msg
    assert "NET.FROM_SCRATCH" in msg and "\n" not in msg
    with pytest.raises(UserError, match="ilsvrc-cls_rna-a1_cls1000_ep-0001.pth.*github.com/visinf/1-stage-wseg"):
        build_model(net_cfg("resnet38", PRE_WEIGHTS_PATH=""))


def test_from_scratch_needs_no_file_and_freezes_nothing():
    m = build_model(net_cfg("vgg16", FROM_SCRATCH=True, PRE_WEIGHTS_PATH="/nonexistent.pth")).train()
    assert all(p.requires_grad for p in m.parameters())
    assert [len(g["params"]) for g in m.parameter_groups(1e-3, 0.0)] == [15, 15, 26, 13]


@pytest.fixture(scope="module")
def torchvision_resnet50(tmp_path_factory) -> tuple[str, dict]:
    """A file in the layout of torchvision's resnet50-19c8e357.pth (with fc.*, without BN counters)."""
    torch.manual_seed(1)
    state = {k: v for k, v in torchvision.models.resnet50().state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = str(tmp_path_factory.mktemp("weights") / "resnet50-19c8e357.pth")
    torch.save(state, path)
    return path, state


def test_torchvision_init_file_loads_and_reports(torchvision_resnet50, capsys):
    path, state = torchvision_resnet50
    m = build_model(net_cfg("resnet50", "bsl", PRE_WEIGHTS_PATH=path))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"Loading weights from: {path}") and "265 tensors loaded, 0 missing, 2 unexpected" in line
    assert "fc.weight" in line
    own = m.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_current_torchvision_file_name_is_accepted(torchvision_resnet50, tmp_path, capsys):
    os.symlink(torchvision_resnet50[0], tmp_path / "resnet50-0676ba61.pth")
    m = build_model(net_cfg("resnet50", "bsl", PRE_WEIGHTS_PATH=str(tmp_path / "resnet50-19c8e357.pth")))
    assert "using" in capsys.readouterr().out
    assert torch.equal(m.state_dict()["layer4.2.conv3.weight"], torchvision_resnet50[1]["layer4.2.conv3.weight"])


def test_init_file_of_another_network_is_refused(torchvision_resnet50, tmp_path):
    with pytest.raises(UserError, match="do not fit backbone vgg16.*conv1_1.weight.*vgg16_20M.pth"):
        build_model(net_cfg("vgg16", PRE_WEIGHTS_PATH=torchvision_resnet50[0]))
    state = dict(torchvision_resnet50[1])
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    bad = str(tmp_path / "bad.pth")
    torch.save(state, bad)
    with pytest.raises(UserError, match=r"layer1.0.conv1.weight has shape \(64, 64, 3, 3\)"):
        build_model(net_cfg("resnet50", PRE_WEIGHTS_PATH=bad))


@pytest.fixture
def no_tf32():
    """Full float32 convolutions and matmuls on CUDA (TF32 rounds to 10 mantissa bits)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(no_tf32):
    m = make("resnet18", "ae").eval()
    image, image_raw, labels = batch()
    with torch.no_grad():
        ref = m(image, image_raw, labels)
        m.cuda()
        out = m(image.cuda(), image_raw.cuda(), labels.cuda())
    for k in ("cls", "cam", "dec", "logits"):
        assert torch.allclose(out[k].cpu(), ref[k], atol=1e-4, rtol=1e-4), k
    # thresholds may flip a pixel that sits exactly on one
    assert (out["pseudo"].cpu() == ref["pseudo"]).float().mean() > 0.999


def test_light_and_head_widths_from_config():
    m = build_model(net_cfg("resnet18", "ae", LIGHT_WIDTH=16, HEAD_WIDTH=32)).train()
    assert m.backbone.channels == {"conv3": 16, "conv6": 128}
    assert m.backbone.layer4[1].conv2.weight.shape == (128, 128, 3, 3)
    assert m.aspp.conv1.weight.shape == (32, 5 * 32, 1, 1)
    assert m.fc8_skip[0].weight.shape == (6, 16, 1, 1)  # 48 * 32 / 256
    assert m.fc8_x[0].weight.shape == (32, 32 + 6, 3, 3)
    assert m.last_conv[8].weight.shape == (20, 32, 1, 1)
    x = torch.randn(2, 3, 48, 48)
    labels = torch.zeros(2, 20)
    labels[:, 3] = 1
    out = m(x, x.sigmoid(), labels)
    assert out["cls"].shape == (2, 20) and out["dec"].shape == (2, 21, 48, 48)
    b = build_model(net_cfg("resnet18", "bsl", LIGHT_WIDTH=8))
    assert b.fc8.weight.shape == (20, 64, 1, 1)
    # torchvision's ResNet-18 at the default width
    default = build_model(net_cfg("resnet18", "bsl"))
    assert default.backbone.layer1[0].conv1.weight.shape == (64, 64, 3, 3) and default.fc8.weight.shape[1] == 512


def test_width_keys_that_do_not_apply_are_errors():
    with pytest.raises(UserError, match="NET.LIGHT_WIDTH is 32.*light resnet18 only.*vgg16"):
        build_model(net_cfg("vgg16", LIGHT_WIDTH=32, FROM_SCRATCH=True))
    with pytest.raises(UserError, match="NET.HEAD_WIDTH is 64.*CAM baseline"):
        build_model(net_cfg("resnet18", "bsl", HEAD_WIDTH=64))
    with pytest.raises(UserError, match="NET.LIGHT_WIDTH is 0"):
        build_model(net_cfg("resnet18", LIGHT_WIDTH=0))
    with pytest.raises(UserError, match="NET.HEAD_WIDTH is 0"):
        build_model(net_cfg("resnet18", HEAD_WIDTH=0))


# SPEC appendix C: the random-number calls of one train-mode forward, in order, at batch 2 and a 64 px input
# (stride 8: 8 x 8, stride 16: 4 x 4, stride 4: 16 x 16); (function, p, shape)
HEAD_CALLS = [("dropout", 0.3, (2, 256, 16, 16)), ("dropout", 0.5, (2, 256, 16, 16)),
              ("dropout", 0.1, (2, 256, 16, 16))]
RNG_CALLS = {
    "vgg16": [("dropout2d", 0.5, (2, 1024, 8, 8)), ("dropout", 0.5, (2, 256, 8, 8))] + HEAD_CALLS,
    "resnet38": [("dropout2d", 0.3, (2, 512, 8, 8)), ("dropout2d", 0.3, (2, 1024, 8, 8)),
                 ("dropout2d", 0.5, (2, 1024, 8, 8)), ("dropout2d", 0.5, (2, 2048, 8, 8)),
                 ("dropout", 0.5, (2, 256, 8, 8))] + HEAD_CALLS,
    "resnet50": [("dropout", 0.5, (2, 256, 4, 4))] + HEAD_CALLS,
}


@pytest.mark.parametrize("backbone", list(RNG_CALLS))
def test_train_forward_draws_the_originals_random_calls_in_order(backbone, monkeypatch):
    """The Stochastic Gate draws its mask with F.dropout on ones (SPEC 5.6), so the seeded random stream is the
    original's: the same dropout / dropout2d calls, in the same order, with the same rates and shapes, and nothing
    else random."""
    import torch.nn.functional as F

    calls = []
    for name in ("dropout", "dropout2d"):
        real = getattr(F, name)

        def record(x, p=0.5, training=True, inplace=False, _name=name, _real=real):
            if training:
                calls.append((_name, p, tuple(x.shape)))
            return _real(x, p, training, inplace)

        monkeypatch.setattr(F, name, record)
    m = make(backbone, "ae").train()
    image, image_raw, labels = batch()
    for name in ("bernoulli", "rand", "rand_like", "randn", "randn_like"):
        monkeypatch.setattr(torch, name, lambda *a, _n=name, **k: pytest.fail(f"torch.{_n} in a forward"))
    m(image, image_raw, labels)
    assert calls == RNG_CALLS[backbone]


def test_stochastic_gate_mask_is_the_originals_dropout_of_ones():
    """With one seed, the gate's mask is (1 - psi) dropout(ones, psi) drawn from the global generator (SPEC 5.6)."""
    from models.mods.sg import stochastic_gate

    x1, x2 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    torch.manual_seed(3)
    out = stochastic_gate(x1, x2, 0.3, training=True)
    torch.manual_seed(3)
    r = 0.7 * torch.nn.functional.dropout(torch.ones_like(x1), p=0.3)
    assert torch.equal(out, r * (x1 - 0.3 * x2) / 0.7 + (1 - r) * x2)


@pytest.mark.parametrize("size, dilation, kernel", [
    ((21, 21), 24, (1, 1)),  # ResNet-50 at crop 321, rates 24 and 36: only the centre tap reads the map
    ((28, 21), 24, (3, 1)),  # rows reach inside the map, columns do not
    ((9, 9), 9, (1, 1)),  # dilation = size: the outer taps of every position just miss the map
    ((10, 10), 9, (3, 3)),  # one pixel more: position 0 reads 9 and position 9 reads 0
])
def test_atrous_conv_drops_only_the_taps_that_read_padding(size, dilation, kernel, monkeypatch):
    """ASPP's dilated convolution without the kernel taps that fall into the zero padding at every position: the
    same outputs and gradients as the full 3x3 convolution (the dropped taps' gradients stay zero)."""
    import torch.nn.functional as F

    from models.mods.aspp import atrous_conv2d

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 4, *size, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=dilation, dilation=dilation)
    ref_x, ref_w = torch.autograd.grad(ref, (x, w), grad)
    shapes = []
    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda inp, weight, *a, **k: shapes.append(weight.shape) or real(inp, weight,
                                                                                                     *a, **k))
    out = atrous_conv2d(x, w, dilation)
    out_x, out_w = torch.autograd.grad(out, (x, w), grad)
    assert shapes == [(4, 5, *kernel)]
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out_x, ref_x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(out_w, ref_w, rtol=1e-12, atol=1e-12)
