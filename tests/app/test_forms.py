"""app.forms.read_images: small searches decode in the event loop, others in worker threads under the decode limit;
a refused image gives its slot back."""
import io
import threading
import time

import anyio
import pytest
from fastapi import HTTPException, UploadFile
from PIL import Image

import app.forms
from app.settings import Settings


def _upload(data: bytes = b'not really an image') -> UploadFile:
    return UploadFile(file=io.BytesIO(data), filename='q.jpg')


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', (w, h), (200, 30, 40)).save(buf, format='JPEG')
    return buf.getvalue()


def test_small_requests_decode_in_the_event_loop_the_others_in_a_worker(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path)
    threads = []
    real = app.forms.decode_probed

    def recording(probed, prepare=None):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(probed, prepare)

    monkeypatch.setattr(app.forms, 'decode_probed', recording)
    big = 300  # 90,000 pixels: more than INLINE_DECODE_PIXELS, yet a few kB of JPEG
    assert big * big > app.forms.INLINE_DECODE_PIXELS

    async def main():
        limiter = anyio.CapacityLimiter(1)
        small = await app.forms.read_images([_upload(_jpeg(64, 128))], settings, limiter, inline=True)
        await app.forms.read_images([_upload(_jpeg(big, big))], settings, limiter, inline=True)
        return small

    small = anyio.run(main)
    assert threads == [True, False]  # anyio.run runs the loop in this (the main) thread
    assert small[0].image.size == (64, 128) and small[0].filename == 'q.jpg'


def test_worker_decodes_respect_the_limit(tmp_path, monkeypatch):
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

    async def main():
        limiter, results = anyio.CapacityLimiter(1), []

        async def one():
            results.append(await app.forms.read_images([_upload()], settings, limiter))
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
        return results, limiter.borrowed_tokens

    results, still_borrowed = anyio.run(main)
    assert results == [['decoded q.jpg']] * 3
    assert peak == 1 and still_borrowed == 0


@pytest.mark.parametrize('inline', [False, True])
def test_a_refused_image_gives_its_decode_slot_back(tmp_path, inline):
    async def main():
        limiter = anyio.CapacityLimiter(1)
        for _ in range(2):  # the second waits forever if the first kept its slot
            with pytest.raises(HTTPException) as e:
                with anyio.fail_after(10):
                    await app.forms.read_images([_upload()], Settings(data_dir=tmp_path), limiter, inline=inline)
            assert e.value.status_code == 400 and 'not a readable image' in e.value.detail
        return limiter.borrowed_tokens

    assert anyio.run(main) == 0


def _noise_png(side: int, seed: int) -> bytes:
    import numpy as np
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, 'PNG')
    return buf.getvalue()


def test_large_multipart_bodies_parse_in_a_worker_small_ones_in_the_loop(tmp_path, service_model, dataset,
                                                                          monkeypatch):
    from starlette.formparsers import MultiPartParser

    from tests.app.conftest import make_client
    parsed_on = []
    real = MultiPartParser.parse

    async def noting_parse(self):
        parsed_on.append(threading.current_thread().name)
        return await real(self)
    monkeypatch.setattr(MultiPartParser, 'parse', noting_parse)
    big = [('images', (f'n{i}.png', _noise_png(256, i), 'image/png')) for i in range(2)]  # ~200 kB each
    assert sum(len(f[1][1]) for f in big) > app.forms.OFF_LOOP_FORM_BYTES
    with make_client(tmp_path, service_model) as client:
        r = client.post('/v1/gallery', files=big, data={'person_id': '5,6', 'tags': 'big'})
        assert r.status_code == 201 and [d['person_id'] for d in r.json()['data']] == [5, 6]
        r = client.post('/v1/search', files=[big[1]], data={'min_score': '-1'})  # one part: in the loop
        assert r.json()['results'][0]['matches'][0]['person_id'] == 6
        r = client.post('/v1/search', files=big, data={'min_score': '-1', 'tags': 'big'})
        assert [q['matches'][0]['person_id'] for q in r.json()['results']] == [5, 6]
        cut_off = b'--x\r\nContent-Disposition: form-data; name="images"' + b'x' * 300_000  # no end of headers
        broken = client.post('/v1/search', content=cut_off, headers={'Content-Type': 'multipart/form-data; boundary=x'})
        assert broken.status_code in (400, 422), broken.text
        assert client.get('/healthz').status_code == 200
    in_a_worker = [name.startswith('AnyIO worker') for name in parsed_on]  # the loop's thread is the TestClient's
    assert in_a_worker == [True, False, True, True], parsed_on
