"""Helpers shared by the bench/ scripts: what machine ran, timing with warm-up and repeats, peak memory, FLOPs and
the machine's peak rate, a printed table and the JSON result in bench/results/<name>.json.

Peak memory on CPU is read from the kernel (VmHWM of /proc/self/status, the resident high-water mark, reset
through /proc/self/clear_refs before the measured call) because tracemalloc does not see torch's allocations.
The allocator keeps freed memory for reuse, so each measured variant runs in a fresh process:
``measure_in_subprocess`` starts the script again with its child arguments and reads back the one line that
``report_child`` prints. On CUDA, torch's own peak counter is exact within one process.

FLOPs are counted over what a call actually runs (``count_flops``): torch's FlopCounterMode over the forward and
backward, with convolutions counted only for the kernel taps that read the input. A tap that falls into the zero
padding only multiplies a zero (a dilation-24 3x3 convolution of a 16x16 map reads the input with its centre tap
only), and oneDNN skips much of that work, so counting it would credit a step with work it does not do. The
machine's peak (``peak_rate``) is the best rate of a matrix product and several 3x3 convolutions (forward, and
forward with backward) in the step's precision and thread count, counted by the same rules: on CPUs where MKL's
matrix product runs a narrower instruction set than oneDNN's convolutions (AMD: AVX2 against AVX-512), a matmul
alone sets the peak at half of what the step's convolutions reach.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from math import prod
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
CHILD_MARK = "BENCH_CHILD "  # prefix of the line a child process reports its measurement on
MIB = 2 ** 20


def _proc_field(path: str, field: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where the figures come from: CPU model and count, memory, library versions, thread counts, GPU."""
    import numpy as np

    device = torch.device(device)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
                     "cuda": torch.version.cuda})
    return info


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5,
            device: str | torch.device = "cpu", min_time_s: float = 0.0) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed (first-call costs: allocations, kernel selection), then ``repeats``
    times timed, and more until the timed runs add up to ``min_time_s``. The median is the figure to quote on a
    shared machine; the minimum and all runs are kept."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    runs: list[float] = []
    while len(runs) < repeats or sum(runs) < min_time_s:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        runs.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": [round(r, 5) for r in runs]}


def _status_kib(field: str) -> int:
    value = _proc_field("/proc/self/status", field)
    if value is None:
        raise RuntimeError(f"/proc/self/status has no {field}: CPU peak memory needs Linux")
    return int(value.split()[0])


def peak_memory_mib(fn: Callable[[], Any], device: str | torch.device = "cpu") -> dict[str, float]:
    """Peak memory that ``fn`` adds to what is allocated before it, in MiB. On CPU this is only meaningful in a
    fresh process (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated(device) - base) / MIB, "base_mib": base / MIB}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    base = _status_kib("VmRSS")
    fn()
    return {"peak_mib": (_status_kib("VmHWM") - base) / 1024, "base_mib": base / 1024}


def report_child(result: dict[str, Any]) -> None:
    """In a child process: hand the measurement back to the parent (``measure_in_subprocess``)."""
    print(CHILD_MARK + json.dumps(result), flush=True)


def measure_in_subprocess(script: str, args: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run ``python <script> <args>`` in a fresh process and return what it passed to ``report_child``."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(CHILD_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{script} {' '.join(args)} failed ({proc.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(CHILD_MARK):])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """A plain fixed-width table; floats get 4 significant digits."""
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(title)
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))


def write_results(name: str, payload: dict[str, Any], device: str | torch.device = "cpu",
                  path: str | None = None) -> str:
    """bench/results/<name>.json (or ``path``), written atomically, with the command line and the machine."""
    from utils.fileio import write_json

    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    result = {"benchmark": name,
              "command": " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(device), **payload}
    write_json(path, result)
    return path


# ---- FLOPs and the machine's peak rate

def _taps_inside(size_in: int, size_out: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Along one axis: the (output position, kernel tap) pairs of a direct convolution whose input index lies inside
    the input, i.e. the multiply-adds per channel pair that read data rather than padding."""
    return sum(1 for o in range(size_out) for k in range(kernel)
               if 0 <= o * stride - padding + k * dilation < size_in)


def _conv_macs(x_shape, w_shape, out_shape, stride, padding, dilation, transposed: bool) -> int:
    """Multiply-adds of one convolution ``x [B,Cin,*S] -> out`` with weight ``w``, padding taps left out. A
    transposed convolution runs the direct one backwards (its output is the direct one's input), so the pairs are
    the same with input and output swapped; in both cases ``w`` is [C, C'/groups, *k] and the MACs are
    B * C * C'/groups * (taps inside, per axis)."""
    direct_in, direct_out = (out_shape, x_shape) if transposed else (x_shape, out_shape)
    taps = prod(_taps_inside(i, o, k, s, p, d) for i, o, k, s, p, d in
                zip(direct_in[2:], direct_out[2:], w_shape[2:], stride, padding, dilation))
    return x_shape[0] * w_shape[0] * w_shape[1] * taps


def _conv_flop(x_shape, w_shape, _bias, stride, padding, dilation, transposed, *args, out_shape=None,
               **kwargs) -> int:
    return 2 * _conv_macs(x_shape, w_shape, out_shape, stride, padding, dilation, transposed)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, stride, padding, dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """The input gradient and the weight gradient each pair the same (output, tap) positions as the forward; only
    the gradients that autograd asks for run (none of the weight's for a frozen layer, none of the input's for the
    first layer)."""
    macs = _conv_macs(x_shape, w_shape, grad_out_shape, stride, padding, dilation, transposed)
    return 2 * macs * (int(output_mask[0]) + int(output_mask[1]))


_aten = torch.ops.aten
CONV_FLOP_FORMULAS = {
    **{op: _conv_flop for op in (_aten.convolution, _aten._convolution, _aten.cudnn_convolution,
                                 _aten._slow_conv2d_forward, _aten.convolution_overrideable)},
    _aten.convolution_backward: _conv_backward_flop,
}


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode (matrix products: 2 * m * n * k, forward and backward as they run) with
    convolutions counted over the taps inside the input (module docstring). Bias additions, normalisation and
    element-wise operations are not counted."""
    return FlopCounterMode(display=False, custom_mapping=CONV_FLOP_FORMULAS)


def count_flops(fn: Callable[[], Any]) -> int:
    """The FLOPs of one call of ``fn`` (forward, backward, whatever it runs), counted by ``flop_counter``."""
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


# (batch, channels, side) of the 3x3 convolutions and the sides of the square matrix products that ``peak_rate``
# times. On a CPU a few milliseconds each, so that their best run, like a step's, can fall into a moment when other
# processes leave the cores alone; on a GPU large enough that kernel launches do not limit them.
PEAK_CONVS = {"cpu": [(2, 256, 32), (1, 128, 64), (2, 256, 64), (2, 512, 16)],
              "cuda": [(32, 256, 128), (32, 512, 64)]}
PEAK_MATMULS = {"cpu": [1024], "cuda": [4096, 8192]}
PEAK_MIN_TIME_S = 0.2  # each workload is timed over at least this long


def peak_workloads(device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> dict[str, Callable[[], Any]]:
    """The calls ``peak_rate`` times: square matrix products, 3x3 convolutions (padding 1) forward, and the first
    convolution forward with both gradients."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, grad: bool = False) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device, dtype).requires_grad_(grad)

    work: dict[str, Callable[[], Any]] = {}
    for n in PEAK_MATMULS[device.type]:
        a, b, out = rand(n, n), rand(n, n), rand(n, n)
        work[f"matmul {n}^3"] = lambda a=a, b=b, out=out: torch.mm(a, b, out=out)
    for i, (batch, ch, side) in enumerate(PEAK_CONVS[device.type]):
        x, w = rand(batch, ch, side, side), rand(ch, ch, 3, 3)
        name = f"conv3x3 {ch}ch {batch}x{side}x{side}"
        work[name] = lambda x=x, w=w: F.conv2d(x, w, padding=1)
        if i == 0:
            xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            grad = torch.ones_like(F.conv2d(x, w, padding=1))

            def fwd_bwd(xg=xg, wg=wg, grad=grad) -> None:
                xg.grad = wg.grad = None
                F.conv2d(xg, wg, padding=1).backward(grad)

            work[name + " fwd+bwd"] = fwd_bwd
    return work


def peak_rate(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 3,
              min_time_s: float = PEAK_MIN_TIME_S) -> dict[str, Any]:
    """The machine's peak FLOP/s as it can be reached here: the best rate over ``peak_workloads`` (each the
    fastest of at least ``repeats`` timed calls over at least ``min_time_s``, after a warm-up), in ``dtype`` with
    torch's current thread count. A step made of the same operations cannot beat it by more than measurement noise;
    on a shared machine, measure it next to the step (the load changes both alike) and keep the best."""
    rates = {}
    for name, fn in peak_workloads(device, dtype).items():
        flops = count_flops(fn)  # also the warm-up call
        rates[name] = flops / time_fn(fn, warmup=0, repeats=repeats, device=device, min_time_s=min_time_s)["min_s"]
    best = max(rates, key=rates.get)
    return {"flops_per_s": rates[best], "workload": best, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "rates": {k: round(v) for k, v in rates.items()}}


def fraction_of_peak(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """How much of the peak rate a call of ``flops`` FLOPs taking ``seconds`` reaches (1.0 = the peak)."""
    return flops / seconds / peak_flops_per_s
