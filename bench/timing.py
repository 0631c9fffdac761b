"""Side-by-side CPU throughput: models timed in one process, interleaved, median of repeats."""
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
