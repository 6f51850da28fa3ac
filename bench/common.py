"""Helpers shared by the bench/ scripts: what machine ran, timing with warm-up and repeats, peak memory, a
printed table and the JSON result in bench/results/<name>.json.

Peak memory on CPU is read from the kernel (VmHWM of /proc/self/status, the resident high-water mark, reset
through /proc/self/clear_refs before the measured call) because tracemalloc does not see torch's allocations.
The allocator keeps freed memory for reuse, so each measured variant runs in a fresh process:
``measure_in_subprocess`` starts the script again with its child arguments and reads back the one line that
``report_child`` prints. On CUDA, torch's own peak counter is exact within one process.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")
CHILD_MARK = "BENCH_CHILD "  # prefix of the line a child process reports its measurement on
MIB = 2 ** 20

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


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
            device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed (first-call costs: allocations, kernel selection), then ``repeats``
    times timed. The median is the figure to quote on a shared machine; the minimum and all runs are kept."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    runs = []
    for _ in range(repeats):
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
