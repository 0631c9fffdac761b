"""The service on Milvus: an acknowledged upload survives a Milvus outage (it waits in the change log and is applied
when Milvus is back), a delete is never found again, /readyz names the engine and how far behind it is, and a
filter Milvus cannot express is a 422."""

import pytest

from tests.app.conftest import files_for, make_client, ready_with, wait_for
from tests.conftest import engine_settings, start_milvus_lite


def search(client, path, **fields):
    return client.post('/v1/search', files=files_for([path]), data=dict({'min_score': '-1', 'k': '50'}, **fields))


def found(client, path):
    return {m['image_id'] for m in search(client, path).json()['results'][0]['matches']}


@pytest.mark.slow
def test_an_outage_loses_no_acknowledged_upload(tmp_path, tmp_path_factory, service_model, dataset):
    server, uri = start_milvus_lite(tmp_path / 'milvus')
    port = int(uri.rsplit(':', 1)[1])
    settings = dict(engine_settings('milvus', tmp_path_factory, uri=uri), sync_seconds=0.2, milvus_timeout=2)
    gallery = [r for r in dataset.gallery if r.pid > 0][:12]
    try:
        with make_client(tmp_path / 'data', service_model, **settings) as client:
            r = client.post('/v1/gallery', files=files_for([g.path for g in gallery[:10]]),
                            data={'person_id': ','.join(str(g.pid) for g in gallery[:10])})
            assert r.status_code == 201
            first = [d['id'] for d in r.json()['data']]
            ready = ready_with(client, gallery_vectors=10)
            assert ready['vector_engine'] == {'name': 'milvus', 'kind': 'milvus-hnsw', 'behind': 0}

            server.kill()  # Milvus goes away
            server.wait()
            r = client.post('/v1/gallery', files=files_for([g.path for g in gallery[10:]]),
                            data={'person_id': ','.join(str(g.pid) for g in gallery[10:])})
            assert r.status_code == 201  # committed to the database: acknowledged
            late = [d['id'] for d in r.json()['data']]
            assert client.delete(f'/v1/gallery/{first[0]}').status_code == 200
            r = search(client, gallery[10].path)
            assert r.status_code == 503 and 'vector engine' in r.json()['detail']
            ready = wait_for(lambda: (r := client.get('/readyz')).json()['vector_engine'].get('behind') == 3 and r)
            assert ready.status_code == 503 and ready.json()['status'] == 'vector engine unavailable'
            assert 'error' in ready.json()['vector_engine']

            server, _ = start_milvus_lite(tmp_path / 'milvus', port)  # back, with what it had stored
            ready = ready_with(client, timeout=60, status='ready', gallery_vectors=11)
            assert ready['vector_engine']['behind'] == 0
            ids = found(client, gallery[10].path)
            assert set(late) <= ids and first[0] not in ids
    finally:
        server.kill()


def test_quotes_and_backslashes_in_tags_reach_milvus_escaped(tmp_path, tmp_path_factory, service_model, dataset):
    with make_client(tmp_path, service_model, **engine_settings('milvus', tmp_path_factory)) as client:
        g = dataset.gallery[0]
        tagged = {'person_id': '1', 'tags': 'say "hi",back\\slash'}
        assert client.post('/v1/gallery', files=files_for([g.path]), data=tagged).status_code == 201
        for tags, found_it in (('say "hi",back\\slash', True), ('back\\slash', True), ('say "hi', False)):
            r = search(client, g.path, tags=tags)
            assert r.status_code == 200 and bool(r.json()['results'][0]['matches']) == found_it, (tags, r.text)
        assert client.get('/readyz').json()['vector_engine']['name'] == 'milvus'
