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
    """Runs queued embedding requests together, as one forward pass of up to ``max_batch`` images.

    Whatever queued while the previous batch ran is taken at once (continuous batching). The worker lingers up to
    ``max_wait_ms`` for more requests only under concurrency (the previous batch merged several requests): a lone
    client never waits for company that is not coming.

    Requests for different models (a model switch in flight) are never mixed: each batch goes to one embed function.
    ``on_batch(n)`` is told every batch size (for metrics).
    """

    def __init__(self, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Optional[Callable[[int], None]] = None,
                 run: Callable[..., np.ndarray] = lambda fn, images: fn(images)) -> None:
        self.max_batch = max_batch
        self.run = run  # how a batch's forward is executed (the service runs it on its model thread)
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
        concurrent = False
        while True:
            first = pending or self._queue.get()
            pending = None
            batch = [first]
            count = len(first[1])
            deadline = time.perf_counter() + (self.max_wait if concurrent else 0.0)
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item[0] is not first[0]:
                    pending = item  # another model: it starts the next batch
                    break
                batch.append(item)
                count += len(item[1])
            concurrent = len(batch) > 1
            self._process(first[0], batch, count)

    def _process(self, fn: EmbedFn, batch, count: int) -> None:
        try:
            vectors = self.run(fn, [image for _, images, _ in batch for image in images])
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
