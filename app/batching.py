"""The service's model thread: dynamic batching of concurrent queries, and every other model or FAISS call.

One thread runs all of them because a second long-lived thread with its own OpenMP team (FAISS searches from the
event loop did that) makes every torch forward slower on 2 cores (1.5x in ``python -m bench.threads``; libgomp
throttles its spin-waiting when there are more team threads than cores).
"""
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

__all__ = ['ModelThread']

_logger = logging.getLogger(__name__)
EmbedFn = Callable[[List[Any]], np.ndarray]


class _Request(NamedTuple):
    fn: Optional[EmbedFn]  # None: ``call`` is a plain call
    images: Sequence[Any]
    future: Future
    then: Optional[Callable[[np.ndarray], Any]] = None
    call: Optional[Callable[[], Any]] = None
    queued: float = 0.0  # perf_counter when put in the queue
    timings: Optional[Dict[str, float]] = None  # filled with model_wait, forward, index_search (seconds)


class ModelThread:
    """Runs queued work on one thread. Embedding requests that queued while the previous work ran go through the
    model together (continuous batching, up to ``max_batch`` images); the thread lingers up to ``max_wait_ms`` for
    more only under concurrency (the previous batch merged several requests): a lone client never waits for
    company that is not coming. ``merge=False`` runs every request alone.

    Requests for different models (a model switch in flight) are never mixed. ``on_batch(n)`` is told every batch
    size (for metrics).
    """

    def __init__(self, max_batch: int = 32, max_wait_ms: float = 5.0, merge: bool = True,
                 on_batch: Optional[Callable[[int], None]] = None) -> None:
        self.max_batch = max_batch if merge else 1
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: 'queue.Queue[Optional[_Request]]' = queue.Queue()
        self._worker = threading.Thread(target=self._run, name='model', daemon=True)
        self._worker.start()

    def embed(self, fn: EmbedFn, images: Sequence[Any], then: Optional[Callable[[np.ndarray], Any]] = None,
              timings: Optional[Dict[str, float]] = None) -> Any:
        """``fn(images)`` on the model thread, batched with other requests; ``then(vectors)`` runs there too, right
        after (a query's index search: no second trip). ``timings`` gets the seconds spent queued (``model_wait``),
        in the shared forward pass (``forward``) and in ``then`` (``index_search``)."""
        return self.submit(fn, images, then, timings).result()

    def submit(self, fn: EmbedFn, images: Sequence[Any], then: Optional[Callable[[np.ndarray], Any]] = None,
               timings: Optional[Dict[str, float]] = None) -> Future:
        """:meth:`embed` without waiting: its Future (an event loop awaits ``asyncio.wrap_future`` of it, with no
        thread of its own blocked meanwhile)."""
        future: Future = Future()
        # running from the start, so it cannot be cancelled (a cancelled await of its asyncio wrapper tries): the
        # model thread's set_result would then raise, and the thread would die
        future.set_running_or_notify_cancel()
        self._queue.put(_Request(fn, list(images), future, then, queued=time.perf_counter(), timings=timings))
        return future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the model thread (model loading, index updates)."""
        if threading.current_thread() is self._worker:
            return fn(*args, **kwargs)
        return self.submit_call(fn, *args, **kwargs).result()

    def submit_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """:meth:`call` without waiting: its Future."""
        future: Future = Future()
        future.set_running_or_notify_cancel()  # as in submit()
        self._queue.put(_Request(None, (), future, call=lambda: fn(*args, **kwargs)))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=60)

    def _run(self) -> None:
        pending: Optional[_Request] = None
        concurrent = False
        while True:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                return
            if first.fn is None:
                self._call(first)
                continue
            batch = [first]
            count = len(first.images)
            deadline = time.perf_counter() + (self.max_wait if concurrent else 0.0)
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or item.fn is not first.fn:
                    pending = item  # another model, a plain call or the end: after this batch
                    break
                batch.append(item)
                count += len(item.images)
            concurrent = len(batch) > 1
            self._process(first.fn, batch, count)

    @staticmethod
    def _call(request: _Request) -> None:
        try:
            request.future.set_result(request.call())
        except BaseException as e:  # the caller gets it; the thread keeps serving
            request.future.set_exception(e)

    def _process(self, fn: EmbedFn, batch: List[_Request], count: int) -> None:
        started = time.perf_counter()
        try:
            vectors = fn([image for request in batch for image in request.images])
        except Exception as e:  # every caller gets the error, the thread keeps running
            for request in batch:
                request.future.set_exception(e)
            return
        forwarded = time.perf_counter()
        if self.on_batch is not None:
            self.on_batch(count)
        start = 0
        for request in batch:
            mine = vectors[start:start + len(request.images)]
            start += len(request.images)
            try:
                then_start = time.perf_counter()
                result = request.then(mine) if request.then is not None else mine
                if request.timings is not None:
                    request.timings.update(model_wait=started - request.queued, forward=forwarded - started,
                                           index_search=time.perf_counter() - then_start)
                request.future.set_result(result)
            except Exception as e:
                request.future.set_exception(e)
