"""kill -9 the server during batch uploads; after a restart every acknowledged upload is there, DB and index agree."""
import os
import random
import signal
import threading
import time

import httpx
import pytest

from tests.app.conftest import files_for, free_port, start_server


@pytest.mark.slow
def test_kill_9_during_batch_upload_loses_no_acknowledged_image(tmp_path, service_model, dataset):
    rng = random.Random(0)
    images = [g for g in dataset.gallery if g.pid > 0]
    acknowledged = {}  # image id -> source file
    for cycle in range(3):
        port = free_port()
        proc = start_server(tmp_path, service_model, port)
        stop = threading.Event()

        def upload() -> None:
            with httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=30) as client:
                while not stop.is_set():
                    batch = rng.sample(images, 8)
                    try:
                        r = client.post('/v1/gallery', files=files_for([b.path for b in batch]),
                                        data={'person_id': ','.join(str(b.pid) for b in batch)})
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 201:
                        for item, b in zip(r.json()['data'], batch):
                            acknowledged[item['id']] = b.path

        worker = threading.Thread(target=upload)
        worker.start()
        time.sleep(rng.uniform(1.0, 4.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        worker.join()

        proc = start_server(tmp_path, service_model, free_port())  # start-up reconciles DB and index
        port = proc.args[proc.args.index('--port') + 1]
        try:
            with httpx.Client(base_url=f'http://127.0.0.1:{port}', timeout=30) as client:
                ready = client.get('/readyz').json()
                assert ready['status'] == 'ready'  # index ids == database ids
                count = client.get('/v1/gallery', params={'limit': 1}).json()['count']
                assert ready['gallery_vectors'] == count >= len(acknowledged)
                for image_id in rng.sample(sorted(acknowledged), min(5, len(acknowledged))):
                    assert client.get(f'/v1/gallery/{image_id}').status_code == 200
                    r = client.post('/v1/search', files=files_for([acknowledged[image_id]]),
                                    data={'k': '50', 'min_score': '-1'}).json()
                    assert image_id in [m['image_id'] for m in r['results'][0]['matches']]
        finally:
            proc.terminate()
            proc.wait()
    assert len(acknowledged) > 0
