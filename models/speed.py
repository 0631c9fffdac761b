"""Side-by-side CPU throughput of models (benchmarks and the demo): timed in one process, interleaved, median of
repeats; and the CPU they ran on."""
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch


def interleaved_throughput(fns: Dict[str, Callable[[], None]], batch: int, repeats: int = 7, warmup: int = 2,
                           min_seconds: float = 0.3) -> Dict[str, float]:
    """Images/s of each callable (one call = ``batch`` images), runs interleaved so drift hits all alike.

    Each repeat times enough calls to last ``min_seconds``; the result is the median over repeats.
    """
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_seconds / 3:
            fn()
            n += 1
        calls[name] = max(1, int(n * 3))
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            samples[name].append(batch * calls[name] / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in samples.items()}


def embed_fn(model: torch.nn.Module, batch: int) -> Callable[[], None]:
    model = model.eval()
    x = torch.randn(batch, 3, *model.img_size)

    def run() -> None:
        with torch.inference_mode():
            model.embed(x)
    return run


def cpu_description() -> str:
    """The CPU model and its vector instruction sets, for every benchmark table (speed-ups depend on them)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name') and name in ('', platform.machine(), platform.processor()):
                name = line.split(':', 1)[1].strip()
            elif line.startswith('flags'):
                flags = set(line.split(':', 1)[1].split())
                break
    except OSError:  # not Linux
        pass
    isa = [label for flag, label in (('avx2', 'AVX2'), ('avx512f', 'AVX-512'), ('avx512_vnni', 'AVX-512 VNNI'),
                                     ('avx512_bf16', 'AVX-512 BF16'), ('avx_vnni', 'AVX-VNNI'), ('amx_tile', 'AMX'))
           if flag in flags]
    return f"{name}; {', '.join(isa) or 'no AVX2'}; torch threads {torch.get_num_threads()}"
