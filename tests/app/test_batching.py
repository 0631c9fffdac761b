import threading
import time

import numpy as np
import pytest

from app.batching import ModelThread


class FakeModel:
    def __init__(self, offset=0.0):
        self.calls = []
        self.offset = offset

    def __call__(self, images):
        self.calls.append(len(images))
        time.sleep(0.01)
        return np.asarray(images, dtype=np.float32)[:, None] + self.offset


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_rows():
    seen = []
    batcher = ModelThread(max_batch=64, max_wait_ms=50, on_batch=seen.append)
    model = FakeModel()
    results = {}

    def ask(i):
        results[i] = batcher.embed(model, [i, i + 100])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert results[i].ravel().tolist() == [i, i + 100]
    assert max(model.calls) > 2  # requests were merged
    assert sum(model.calls) == 16 and seen == model.calls


def test_models_are_never_mixed_and_errors_reach_the_caller():
    batcher = ModelThread(max_batch=64, max_wait_ms=30)
    old, new = FakeModel(), FakeModel(offset=1000)
    out = {}
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, batcher.embed(old if i % 2 else new, [i])))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        assert out[i][0, 0] == i + (0 if i % 2 else 1000)

    def broken(images):
        raise RuntimeError('model failed')
    with pytest.raises(RuntimeError, match='model failed'):
        batcher.embed(broken, [1])
    assert batcher.embed(old, [5])[0, 0] == 5  # still serving


def test_a_lone_request_does_not_wait_for_company():
    batcher = ModelThread(max_batch=64, max_wait_ms=2000)
    model = FakeModel()
    t0 = time.perf_counter()
    for i in range(3):
        assert batcher.embed(model, [i])[0, 0] == i
    assert time.perf_counter() - t0 < 1.0  # three sequential requests, none lingered the 2 s window
    assert model.calls == [1, 1, 1]


def test_plain_calls_and_follow_ups_run_on_the_model_thread_and_requests_merge_only_when_asked():
    worker = ModelThread(max_batch=64, max_wait_ms=50)
    threads = []
    model = FakeModel()
    names = worker.call(lambda: threading.current_thread().name), worker.embed(
        model, [1], then=lambda v: (threading.current_thread().name, float(v[0, 0])))
    assert names == ('model', ('model', 1.0))
    assert worker.call(worker.call, lambda: 7) == 7  # a call from the model thread itself runs in place
    with pytest.raises(ZeroDivisionError):
        worker.call(lambda: 1 / 0)
    with pytest.raises(KeyError):
        worker.embed(model, [2], then=lambda v: {}['missing'])
    assert worker.call(lambda: 'alive') == 'alive'
    worker.close()

    alone = ModelThread(max_batch=64, max_wait_ms=50, merge=False)
    slow = FakeModel()
    threads = [threading.Thread(target=alone.embed, args=(slow, [i, i])) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.calls == [2] * 6  # merge=False: one request per forward


def test_an_abandoned_await_does_not_stop_the_model_thread():
    """A search awaiting the model thread's Future from the event loop can be cancelled (a shutdown, a timeout):
    the model thread must still finish that batch and go on serving."""
    import asyncio
    batcher = ModelThread(max_batch=8, max_wait_ms=0)
    model, gate = FakeModel(), threading.Event()

    def held(images):  # the forward finishes only after its waiter gave up
        gate.wait(10)
        return model(images)

    async def abandon():
        waiting = asyncio.ensure_future(asyncio.wrap_future(batcher.submit(held, [1.0])))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        return await asyncio.wait_for(asyncio.wrap_future(batcher.submit(model, [2.0])), 10)

    assert asyncio.run(abandon()).ravel().tolist() == [2.0]
    assert batcher.submit(model, [3.0]).result(timeout=10).ravel().tolist() == [3.0]
    batcher.close()
