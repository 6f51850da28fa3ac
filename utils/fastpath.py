"""The fast path (TRAIN.FAST for training, TEST.FAST for inference): the precision, memory format and compilation
that pay on the device, decided here and nowhere else.

Measured on this project's machines (bench/README.md; bench/train_step.py and bench/infer_loop.py):

* CUDA: bf16 autocast (fp16 with a gradient scaler on GPUs without bf16) and channels_last, the layout of cuDNN's
  tensor-core convolutions; bf16 gave resnet38's step at batch 16 1.5x over float32 on an H100. torch.compile is
  left off: it has not been measured to pay for this model.
* CPU with native bf16 (AVX512-BF16 or AMX): bf16 autocast, whose convolutions oneDNN runs in bf16, in
  channels_last, the layout of oneDNN's bf16 convolutions. On a 2-core AMD EPYC with AVX512-BF16 a training step
  (batch 2 at 321) ran 2.2x (resnet38) and 2.0x (vgg16) faster than the original's float32 step; a 3x3
  convolution of 256 channels on 81x81 maps ran 857 GFLOP/s in bf16 against 197 in float32. There float32 in
  channels_last was 1.04x (resnet38) to 1.10x (vgg16) faster for training than contiguous at 321, too little to
  leave the original's layout for the float32 default.
* Other CPUs (AVX2, or AVX-512 without BF16): float32. There oneDNN has no bf16 convolutions and torch falls back
  to a reference kernel: a 3x3 convolution of 256 channels on an 81x81 map took 83 s in bf16 against 0.6 s in
  float32 on an AVX2 machine. channels_last is slower for training there (VGG16's step 1.3x slower, its backward
  convolutions run a slower kernel) and a little faster for inference (about 1.1x; infer_val.py uses it by
  default). torch.compile does not pay on a CPU: compiling VGG16's training step (crop 128, one thread) took 13
  minutes, and the compiled steps were no faster than eager ones.

For training the settings are what the keys TRAIN.AMP, TRAIN.CHANNELS_LAST and TRAIN.COMPILE set by hand: with
TRAIN.FAST True ``apply_train_fast_path`` writes the resolved values into those keys, overriding them, so that the
run's config.yaml records what ran. For inference TEST.FAST adds the autocast (``inference_fast_path``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the values of TRAIN.AMP


@dataclass(frozen=True)
class FastSettings:
    amp: str  # "" (float32), "bf16" or "fp16": autocast dtype of the network
    channels_last: bool  # the network's weights and inputs in NHWC
    compile: bool  # torch.compile the model

    def describe(self) -> str:
        return (f"{self.amp or 'float32'}, {'channels_last' if self.channels_last else 'contiguous'} memory format, "
                f"{'compiled' if self.compile else 'eager'}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles), so that oneDNN's bf16 convolutions
    run; elsewhere bf16 convolutions fall back to a slow reference kernel."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def fast_settings(device: torch.device, training: bool, native_bf16: bool | None = None) -> FastSettings:
    """The fast path's settings on ``device`` (see the module docstring for the measurements behind them).
    ``native_bf16`` overrides the CPU probe (``cpu_has_native_bf16``)."""
    if device.type == "cuda":
        return FastSettings("bf16" if torch.cuda.is_bf16_supported() else "fp16", True, False)
    if native_bf16 is None:
        native_bf16 = device.type == "cpu" and cpu_has_native_bf16()
    if native_bf16:
        return FastSettings("bf16", True, False)
    return FastSettings("", not training, False)


def apply_train_fast_path(cfg, device: torch.device) -> FastSettings | None:
    """With TRAIN.FAST: TRAIN.AMP, TRAIN.CHANNELS_LAST and TRAIN.COMPILE set to the fast path's settings on
    ``device`` (in place); returns them, or None when TRAIN.FAST is off (the keys stay as given)."""
    if not cfg.TRAIN.FAST:
        return None
    s = fast_settings(device, training=True)
    cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST, cfg.TRAIN.COMPILE = s.amp, s.channels_last, s.compile
    return s


class Autocast(nn.Module):
    """Runs ``model`` under autocast to ``dtype`` (the inference fast path); outputs as the model returns them
    (the single-stage model's masks and scores are float32: its maths runs outside autocast)."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(*args, **kwargs)


def inference_fast_path(model: nn.Module, test_cfg, device: torch.device) -> nn.Module:
    """With TEST.FAST, the model under the fast path's autocast where the device has one; else ``model`` itself.
    The memory format stays infer_val.py's (channels_last unless --no-channels-last), which is the fast path's on
    every device for inference."""
    s = fast_settings(device, training=False)
    return Autocast(model, device.type, AMP_DTYPES[s.amp]) if test_cfg.FAST and s.amp else model
