"""Dynamic batching: concurrent queries share one model forward pass (bounded wait)."""
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['DynamicBatcher']

_logger = logging.getLogger(__name__)
EmbedFn = Callable[[List[Any]], np.ndarray]


class DynamicBatcher:
    """Collects embedding requests for up to ``max_wait_ms`` (or ``max_batch`` images) and runs them together.

    Requests for different models (a model switch in flight) are never mixed: each batch goes to one embed function.
    ``on_batch(n)`` is told every batch size (for metrics).
    """

    def __init__(self, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Optional[Callable[[int], None]] = None) -> None:
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: 'queue.Queue[Tuple[EmbedFn, Sequence[Any], Future]]' = queue.Queue()
        self._worker = threading.Thread(target=self._run, name='embed-batcher', daemon=True)
        self._worker.start()

    def embed(self, fn: EmbedFn, images: Sequence[Any]) -> np.ndarray:
        future: Future = Future()
        self._queue.put((fn, list(images), future))
        return future.result()

    def _run(self) -> None:
        pending: Optional[Tuple[EmbedFn, Sequence[Any], Future]] = None
        while True:
            first = pending or self._queue.get()
            pending = None
            batch = [first]
            count = len(first[1])
            deadline = time.perf_counter() + self.max_wait
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item[0] is not first[0]:
                    pending = item  # another model: it starts the next batch
                    break
                batch.append(item)
                count += len(item[1])
            self._process(first[0], batch, count)

    def _process(self, fn: EmbedFn, batch, count: int) -> None:
        try:
            vectors = fn([image for _, images, _ in batch for image in images])
        except Exception as e:  # every caller gets the error, the batcher keeps running
            for _, _, future in batch:
                future.set_exception(e)
            return
        if self.on_batch is not None:
            self.on_batch(count)
        start = 0
        for _, images, future in batch:
            future.set_result(vectors[start:start + len(images)])
            start += len(images)
