"""Checkpoint compatibility with the original: the state-dict keys and shapes of SPEC Appendix A (written out here
by hand), snapshots in the original's file format loading strictly with identical outputs, and load errors."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision

from models import build_model
from models.backbones import build_backbone
from models.stage_net import CAMNet, SingleStageNet
from models.weights import load_snapshot
from utils.config import get_cfg_defaults
from utils.errors import UserError


def BN(name: str, c: int) -> list[tuple[str, tuple]]:
    return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,)), (f"{name}.running_mean", (c,)),
            (f"{name}.running_var", (c,)), (f"{name}.num_batches_tracked", ())]


def BN0(name: str, c: int) -> list[tuple[str, tuple]]:  # affine=False
    return [(f"{name}.running_mean", (c,)), (f"{name}.running_var", (c,)), (f"{name}.num_batches_tracked", ())]


def W(name: str, *shape: int) -> list[tuple[str, tuple]]:
    return [(f"{name}.weight", shape)]


def basic(u: str, c_in: int, c_mid: int, c_out: int, branch1: bool) -> list[tuple[str, tuple]]:
    keys = BN(f"{u}.bn_branch2a", c_in) + W(f"{u}.conv_branch2a", c_mid, c_in, 3, 3) + \
        BN(f"{u}.bn_branch2b1", c_mid) + W(f"{u}.conv_branch2b1", c_out, c_mid, 3, 3)
    return keys + (W(f"{u}.conv_branch1", c_out, c_in, 1, 1) if branch1 else [])


def bottleneck(u: str, c_in: int, c_out: int) -> list[tuple[str, tuple]]:
    return BN(f"{u}.bn_branch2a", c_in) + W(f"{u}.conv_branch2a", c_out // 4, c_in, 1, 1) + \
        BN(f"{u}.bn_branch2b1", c_out // 4) + W(f"{u}.conv_branch2b1", c_out // 2, c_out // 4, 3, 3) + \
        BN(f"{u}.bn_branch2b2", c_out // 2) + W(f"{u}.conv_branch2b2", c_out, c_out // 2, 1, 1) + \
        W(f"{u}.conv_branch1", c_out, c_in, 1, 1)


# SPEC Appendix A, backbone: conv1a, b2 ... b7, bn7
RESNET38_KEYS = (
    W("conv1a", 64, 3, 3, 3)
    + basic("b2", 64, 128, 128, True) + basic("b2_1", 128, 128, 128, False) + basic("b2_2", 128, 128, 128, False)
    + basic("b3", 128, 256, 256, True) + basic("b3_1", 256, 256, 256, False) + basic("b3_2", 256, 256, 256, False)
    + basic("b4", 256, 512, 512, True)
    + [k for i in range(1, 6) for k in basic(f"b4_{i}", 512, 512, 512, False)]
    + basic("b5", 512, 512, 1024, True) + basic("b5_1", 1024, 512, 1024, False)
    + basic("b5_2", 1024, 512, 1024, False)
    + bottleneck("b6", 1024, 2048) + bottleneck("b7", 2048, 4096)
    + BN("bn7", 4096)
)


def head_keys(f: int) -> list[tuple[str, tuple]]:
    """SPEC Appendix A, the "ae" head on a backbone with fan-out f."""
    return (
        W("aspp.aspp1.atrous_conv", 256, f, 1, 1) + BN("aspp.aspp1.bn", 256)
        + W("aspp.aspp2.atrous_conv", 256, f, 3, 3) + BN("aspp.aspp2.bn", 256)
        + W("aspp.aspp3.atrous_conv", 256, f, 3, 3) + BN("aspp.aspp3.bn", 256)
        + W("aspp.aspp4.atrous_conv", 256, f, 3, 3) + BN("aspp.aspp4.bn", 256)
        + W("aspp.global_avg_pool.1", 256, f, 1, 1) + BN("aspp.global_avg_pool.2", 256)
        + W("aspp.conv1", 256, 1280, 1, 1) + BN("aspp.bn1", 256)
        + [("_aff.aff_x.kernel", (8, 1, 3, 3)), ("_aff.aff_m.kernel", (8, 1, 3, 3)),
           ("_aff.aff_std.kernel", (9, 1, 3, 3))]
        + W("shallow_mask.fc_deep.0", 512, 256, 1, 1) + BN("shallow_mask.fc_deep.1", 512)
        + W("shallow_mask.fc_skip.0", 256, 256, 1, 1) + BN0("shallow_mask.fc_skip.1", 256)
        + W("shallow_mask.fc_cls.0", 256, 256, 1, 1) + BN("shallow_mask.fc_cls.1", 256)
        + W("fc8_skip.0", 48, 256, 1, 1) + BN("fc8_skip.1", 48)
        + W("fc8_x.0", 256, 304, 3, 3) + BN("fc8_x.1", 256)
        + W("last_conv.0", 256, 256, 3, 3) + BN("last_conv.1", 256)
        + W("last_conv.4", 256, 256, 3, 3) + BN("last_conv.5", 256)
        + W("last_conv.8", 20, 256, 1, 1) + [("last_conv.8.bias", (20,))]
    )


def key_shapes(model: torch.nn.Module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.fixture(scope="module")
def resnet38_ae() -> SingleStageNet:
    return SingleStageNet(build_backbone("resnet38"))


def test_resnet38_ae_keys_and_shapes_are_appendix_a_in_order(resnet38_ae):
    assert key_shapes(resnet38_ae) == RESNET38_KEYS + head_keys(4096)
    # the released model_enc_e020Xs0.928.pth is 527 MiB of float32 values
    numel = sum(v.numel() for v in resnet38_ae.state_dict().values())
    assert numel * 4 / 2 ** 20 == pytest.approx(527, abs=1)


def test_resnet38_bsl_keys_alias_one_tensor():
    m = CAMNet(build_backbone("resnet38"))
    state = m.state_dict()
    assert key_shapes(m) == RESNET38_KEYS + [(k, (20, 4096, 1, 1)) for k in
                                             ("fc8.weight", "cls_branch.2.weight", "mask_branch.0.weight")]
    assert state["fc8.weight"].data_ptr() == state["cls_branch.2.weight"].data_ptr() \
        == state["mask_branch.0.weight"].data_ptr()


def test_other_backbones_keep_the_init_file_names():
    """SPEC 4.3/4.4: VGG16 keys conv1_1 ... fc7, ResNet keys those of torchvision's files; the head is the same."""
    vgg = SingleStageNet(build_backbone("vgg16"))
    convs = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
             ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv4_1", 256, 512),
             ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv5_1", 512, 512), ("conv5_2", 512, 512),
             ("conv5_3", 512, 512), ("fc6", 512, 1024)]
    vgg_keys = [k for name, c_in, c_out in convs for k in W(name, c_out, c_in, 3, 3) + [(f"{name}.bias", (c_out,))]]
    vgg_keys += W("fc7", 1024, 1024, 1, 1) + [("fc7.bias", (1024,))]
    assert key_shapes(vgg) == vgg_keys + head_keys(1024)

    r50 = SingleStageNet(build_backbone("resnet50"))
    tv = [(k, tuple(v.shape)) for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")]
    assert key_shapes(r50) == tv + head_keys(2048)


def original_format(model: torch.nn.Module) -> OrderedDict:
    """The state dict as the original's models, which subclass their backbone, name it, built without our hooks."""
    out = OrderedDict()
    for prefix, module in model.named_modules(remove_duplicate=False):
        prefix = prefix[len("backbone"):].lstrip(".") if prefix.startswith("backbone") else prefix
        for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            out[f"{prefix}.{name}" if prefix else name] = t.detach().clone()
    return out


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BN statistics, so that a wrong key mapping would change outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
                if m.affine:
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def small(model: str = "ae", backbone: str = "resnet18", num_classes: int = 21, seed: int = 0):
    torch.manual_seed(seed)
    bb = build_backbone(backbone)
    net = SingleStageNet(bb, num_classes) if model == "ae" else CAMNet(bb, num_classes)
    return randomised(net, seed)


def outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    raw = torch.rand(2, 3, 48, 48, generator=g)
    labels = torch.zeros(2, 20)
    labels[0, 1] = labels[1, 7] = 1
    model.eval()
    with torch.no_grad():
        test = model((raw - 0.5) / 0.25)
        val = model((raw - 0.5) / 0.25, raw, labels)
    return {**{f"test_{k}": v for k, v in test.items()}, **val}


@pytest.mark.parametrize("model", ["ae", "bsl"])
def test_snapshot_in_the_original_format_loads_strictly_with_identical_outputs(model, tmp_path):
    src = small(model, seed=1)
    path = tmp_path / "model_enc_e020Xs0.928.pth"
    # torch 1.0 wrote the legacy (non-zip) format
    torch.save(original_format(src), path, _use_new_zipfile_serialization=False)
    dst = small(model, seed=2)
    load_snapshot(dst, str(path))
    a, b = outputs(src), outputs(dst)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_our_snapshot_is_the_original_format(tmp_path):
    m = small("ae", seed=3)
    path = tmp_path / "model_enc_e004Xs0.500.pth"
    torch.save(m.state_dict(), path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    expected = original_format(m)
    assert isinstance(loaded, OrderedDict) and list(loaded) == list(expected)
    assert all(type(v) is torch.Tensor and torch.equal(v, expected[k]) for k, v in loaded.items())
    assert not any(k.startswith("backbone.") for k in loaded)
    # and it loads back (also with DataParallel's "module." prefix)
    torch.save(OrderedDict(("module." + k, v) for k, v in loaded.items()), tmp_path / "dp.pth")
    other = small("ae", seed=4)
    load_snapshot(other, str(tmp_path / "dp.pth"))
    a, b = outputs(m), outputs(other)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_dict_inside_a_wrapper_keeps_the_prefix():
    wrapper = torch.nn.Sequential(small("bsl"))
    keys = list(wrapper.state_dict())
    assert keys[0] == "0.conv1.weight" and "0.fc8.weight" in keys and not any(".backbone." in k for k in keys)
    wrapper.load_state_dict(wrapper.state_dict())


def one_line_error(model: torch.nn.Module, path) -> str:
    with pytest.raises(UserError) as e:
        load_snapshot(model, str(path))
    assert "\n" not in str(e.value)
    return str(e.value)


def test_snapshot_of_another_backbone_is_named(tmp_path):
    torch.save(small("ae").state_dict(), tmp_path / "r18.pth")
    msg = one_line_error(SingleStageNet(build_backbone("vgg16")), tmp_path / "r18.pth")
    assert "r18.pth" in msg and "resnet18 backbone with model ae" in msg and "missing keys conv1_1.weight" in msg


def test_snapshot_of_another_model_is_named(tmp_path):
    torch.save(small("bsl").state_dict(), tmp_path / "bsl.pth")
    msg = one_line_error(small("ae"), tmp_path / "bsl.pth")
    assert "resnet18 backbone with model bsl" in msg and "aspp.aspp1.atrous_conv.weight" in msg


def test_snapshot_with_other_shapes_is_named(tmp_path):
    torch.save(small("ae", num_classes=11).state_dict(), tmp_path / "c11.pth")
    msg = one_line_error(small("ae"), tmp_path / "c11.pth")
    assert "last_conv.8.weight has shape (10, 256, 1, 1), the model needs (20, 256, 1, 1)" in msg


def test_missing_or_corrupt_snapshot(tmp_path):
    m = small("ae")
    assert "not found" in one_line_error(m, tmp_path / "model_enc_e020Xs0.928.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a pickle")
    assert "cannot be read" in one_line_error(m, tmp_path / "broken.pth")
    torch.save({"epoch": 3}, tmp_path / "other.pth")
    assert "does not hold a state dict of tensors" in one_line_error(m, tmp_path / "other.pth")


def test_snapshot_of_other_widths_names_them(tmp_path):
    cfg = get_cfg_defaults()
    cfg.NET.BACKBONE, cfg.NET.MODEL, cfg.NET.LIGHT_WIDTH, cfg.NET.HEAD_WIDTH = "resnet18", "ae", 16, 32
    torch.save(build_model(cfg.NET).state_dict(), tmp_path / "narrow.pth")
    msg = one_line_error(small("ae"), tmp_path / "narrow.pth")
    assert "NET.LIGHT_WIDTH 16, NET.HEAD_WIDTH 32" in msg and "has shape" in msg
