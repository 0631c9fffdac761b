"""Rebuilding the index in the background: searches keep answering, uploads made meanwhile are not lost, and the
new kind survives a restart."""
import time

import pytest

from tests.app.conftest import API_KEY, files_for, make_client, ready_with

pytestmark = pytest.mark.slow
ADMIN = {'X-API-Key': API_KEY}


def test_background_rebuild_to_compressed(tmp_path, service_model, dataset, monkeypatch):
    from storage.index import VectorIndex
    train = VectorIndex.trained_like

    def slow_train(self, *args, **kwargs):  # a big gallery's k-means takes minutes: stretch this one to 3 s
        time.sleep(3)
        return train(self, *args, **kwargs)
    monkeypatch.setattr(VectorIndex, 'trained_like', slow_train)
    images = [r for r in dataset.train + dataset.gallery if r.pid > 0][:320]
    late = [r for r in dataset.query if r.pid > 0][:5]
    with make_client(tmp_path, service_model) as client:
        for start in range(0, len(images), 80):
            chunk = images[start:start + 80]
            assert client.post('/v1/gallery', files=files_for([r.path for r in chunk]),
                               data={'person_id': ','.join(str(r.pid) for r in chunk)}).status_code == 201
        query = dataset.query[0].path
        exact = client.post('/v1/search', files=files_for([query]), data={'k': '10', 'min_score': '-1'}).json()
        assert client.get('/readyz').json()['index_kind'] == 'exact'

        r = client.post('/v1/admin/index/rebuild', params={'kind': 'compressed'}, headers=ADMIN)
        assert r.status_code == 202, r.text
        answered = 0
        uploaded = False
        deadline = time.time() + 120
        while client.get('/readyz').json()['index_build']['state'] == 'running':
            assert time.time() < deadline, 'the rebuild did not finish'
            r = client.post('/v1/search', files=files_for([query]), data={'k': '10', 'min_score': '-1'})
            assert r.status_code == 200 and len(r.json()['results'][0]['matches']) == 10
            answered += 1
            if not uploaded:  # an upload during the build reaches the new index
                assert client.post('/v1/gallery', files=files_for([r.path for r in late]),
                                   data={'person_id': ','.join(str(r.pid) for r in late)}).status_code == 201
                uploaded = True
        assert answered >= 3  # searches were answered while the new index was being built
        ready = ready_with(client, gallery_vectors=len(images) + len(late))
        assert ready['index_build']['state'] == 'done', ready
        assert ready['index_kind'] == 'compressed' and ready['status'] == 'ready'
        after = client.post('/v1/search', files=files_for([query]), data={'k': '10', 'min_score': '-1'}).json()
        top_exact = [m['image_id'] for m in exact['results'][0]['matches']]
        top_now = [m['image_id'] for m in after['results'][0]['matches']]
        assert len(set(top_exact) & set(top_now)) >= 7  # approximate, close to exact
        assert client.post('/v1/admin/index/rebuild', params={'kind': 'hnsw'}, headers=ADMIN).status_code == 422
    with make_client(tmp_path, service_model, index_kind='compressed') as again:  # restart: same index file
        ready = again.get('/readyz').json()
        assert ready['index_kind'] == 'compressed' and ready['gallery_vectors'] == len(images) + len(late)
        assert ready['index_build']['state'] == 'idle'  # nothing to rebuild
