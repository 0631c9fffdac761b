"""app.forms.read_images: the decode limit holds while decoding only, and a refused image gives its slot back."""
import io
import threading
import time

import anyio
import pytest
from fastapi import HTTPException, UploadFile

import app.forms
from app.imaging import ImageRejected
from app.settings import Settings


def _upload() -> UploadFile:
    return UploadFile(file=io.BytesIO(b'not really an image'), filename='q.jpg')


def test_decode_slots_are_held_while_decoding_only(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path)
    decoding, peak, lock = 0, 0, threading.Lock()

    def slow_decode(raw, *args):
        nonlocal decoding, peak
        with lock:
            decoding += 1
            peak = max(peak, decoding)
        time.sleep(0.05)
        with lock:
            decoding -= 1
        return [f'decoded {name}' for _, name in raw]

    monkeypatch.setattr(app.forms, 'decode_request', slow_decode)
    all_searching = threading.Barrier(3, timeout=10)

    def search(decoded):  # e.g. waiting for the model: the three must be here at once, one decode slot or not
        all_searching.wait()
        return decoded

    async def main():
        limiter = anyio.CapacityLimiter(1)
        results = []

        async def one():
            results.append(await app.forms.read_images([_upload()], settings, limiter, then=search))
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
        await anyio.sleep(0.05)  # the slots are given back through the event loop
        return results, limiter.borrowed_tokens

    results, still_borrowed = anyio.run(main)
    assert results == [['decoded q.jpg']] * 3
    assert peak == 1 and still_borrowed == 0


def test_a_refused_image_gives_its_decode_slot_back(tmp_path, monkeypatch):
    def refuse(raw, *args):
        raise ImageRejected('q.jpg: not an image', status=415)

    monkeypatch.setattr(app.forms, 'decode_request', refuse)

    async def main():
        limiter = anyio.CapacityLimiter(1)
        for _ in range(2):  # the second waits forever if the first kept its slot
            with pytest.raises(HTTPException) as e:
                with anyio.fail_after(10):
                    await app.forms.read_images([_upload()], Settings(data_dir=tmp_path), limiter)
            assert e.value.status_code == 415
        await anyio.sleep(0.05)
        return limiter.borrowed_tokens

    assert anyio.run(main) == 0
