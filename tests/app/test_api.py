import functools
import io

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import API_KEY, files_for, make_client, png_bytes, ready_with, wait_for
from tests.conftest import database_url_for, engine_settings

ADMIN = {'X-API-Key': API_KEY}


def test_without_a_model_the_service_starts_and_explains(tmp_path, dataset):
    with make_client(tmp_path) as client:
        assert client.get('/healthz').status_code == 200
        r = client.get('/readyz')
        assert r.status_code == 503 and 'AMG_MODEL_PATH' in r.json()['detail']
        r = client.post('/v1/search', files=files_for([dataset.query[0].path]))
        assert r.status_code == 503 and 'POST /v1/admin/jobs' in r.json()['detail']
        assert client.get('/v1/admin/jobs', headers=ADMIN).json() == {'data': [], 'count': 0}
        assert client.get('/v1/admin/models', headers=ADMIN).json()['count'] == 0
        assert client.get('/metrics').status_code == 200


def test_a_missing_model_file_is_reported_not_fatal(tmp_path):
    """AMG_MODEL_PATH naming no file: the service starts (no restart loop) and /readyz names the path."""
    missing = tmp_path / 'models' / 'gone.safetensors'
    with make_client(tmp_path / 'service', missing) as client:
        assert client.get('/healthz').status_code == 200
        r = client.get('/readyz')
        assert r.status_code == 503 and r.json()['status'] == 'no model'
        assert f'AMG_MODEL_PATH does not exist: {missing.resolve()}' in r.json()['detail']
        assert client.get('/v1/admin/models', headers=ADMIN).json()['count'] == 0


def test_jobs_are_offered_the_data_roots(tmp_path):
    with make_client(tmp_path, data_roots=f'{tmp_path / "data"},{tmp_path}') as client:
        assert client.get('/v1/admin/data-roots', headers=ADMIN).json() == [str((tmp_path / 'data').resolve()),
                                                                           str(tmp_path.resolve())]
        assert client.get('/v1/admin/data-roots').status_code == 401


@pytest.fixture(scope='module', params=['sqlite-faiss', 'postgresql-faiss', 'sqlite-milvus', 'postgresql-milvus',
                                        pytest.param('sqlite-milvusserver', marks=pytest.mark.slow)])
def gallery_client(request, tmp_path_factory, service_model, dataset):
    """A service with the synthetic test gallery uploaded through the API (camera-tagged, timestamps by camera),
    with its metadata on SQLite and on PostgreSQL, its vectors in FAISS, in Milvus Lite and (slow) in a real Milvus
    standalone server."""
    database, engine = request.param.split('-')
    data_dir = tmp_path_factory.mktemp('service')
    database_url = database_url_for(request, database, tmp_path_factory)
    with make_client(data_dir, service_model, database_url=database_url,
                     **engine_settings(engine, tmp_path_factory, request=request)) as client:
        gallery = [r for r in dataset.gallery if r.pid > 0]
        for start in range(0, len(gallery), 40):
            chunk = gallery[start:start + 40]
            r = client.post('/v1/gallery', files=files_for([g.path for g in chunk]), data={
                'person_id': ','.join(str(g.pid) for g in chunk),
                'camera_id': ','.join(str(g.camid) for g in chunk),
                'timestamp': '2026-01-01T10:00:00', 'tags': 'synthetic,test'})
            assert r.status_code == 201, r.text
        yield client, data_dir, gallery


def same_stores(client) -> dict:
    """Settings of another service on ``client``'s database and vector engine."""
    settings = client.app.state.service.settings
    return dict(database_url=settings.database_url, vector_engine=settings.vector_engine,
                milvus_uri=settings.milvus_uri, milvus_collection_prefix=settings.milvus_collection_prefix)


def test_upload_and_search_finds_the_right_person(gallery_client, dataset):
    client, _, gallery = gallery_client
    assert client.get('/v1/gallery', params={'limit': 1}).json()['count'] == len(gallery)
    queries = dataset.query
    r = client.post('/v1/search', files=files_for([q.path for q in queries]), data={'k': '5', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body['results']) == len(queries)
    top1 = [res['matches'][0]['person_id'] for res in body['results']]
    accuracy = np.mean([p == q.pid for p, q in zip(top1, queries)])
    assert accuracy > 0.5, accuracy
    first = body['results'][0]['matches']
    assert [m['score'] for m in first] == sorted([m['score'] for m in first], reverse=True)
    assert client.get(first[0]['thumbnail_url']).headers['content-type'] == 'image/jpeg'
    # a model without the visibility head: plain matching, its vectors the embedder's own, no visibility shown
    snap = client.app.state.service.current
    assert not snap.visible_parts and snap.encode is snap.embedder and body['results'][0]['visibility'] is None


def test_filters_and_same_camera_exclusion(gallery_client, dataset):
    client, _, _ = gallery_client
    q = dataset.query[0]
    files = files_for([q.path])
    r = client.post('/v1/search', files=files, data={'k': '20', 'camera_id': '2', 'min_score': '-1'}).json()
    assert {m['camera_id'] for m in r['results'][0]['matches']} == {2}
    r = client.post('/v1/search', files=files, data={'k': '20', 'person_id': str(q.pid), 'min_score': '-1'}).json()
    assert {m['person_id'] for m in r['results'][0]['matches']} == {q.pid}
    r = client.post('/v1/search', files=files, data={
        'k': '50', 'exclude_same_camera': 'true', 'query_camera_id': str(q.camid), 'min_score': '-1'}).json()
    assert q.camid not in {m['camera_id'] for m in r['results'][0]['matches']}
    r = client.post('/v1/search', files=files, data={'tags': 'nope', 'min_score': '-1'}).json()
    assert r['results'][0]['matches'] == [] and r['results'][0]['no_match']
    r = client.post('/v1/search', files=files, data={'after': '2026-02-01T00:00:00'}).json()
    assert r['results'][0]['matches'] == []
    r = client.post('/v1/search', files=files, data={'before': '2026-02-01T00:00:00Z', 'min_score': '-1'}).json()
    assert len(r['results'][0]['matches']) == 10
    r = client.post('/v1/search', files=files, data={'exclude_same_camera': 'true'})
    assert r.status_code == 400 and 'query_camera_id' in r.json()['detail']


def test_min_score_gives_an_explicit_no_match(gallery_client, dataset):
    client, _, _ = gallery_client
    best = client.post('/v1/search', files=files_for([dataset.query[0].path]),
                       data={'min_score': '-1'}).json()['results'][0]['best_score']
    assert best < 1
    r = client.post('/v1/search', files=files_for([dataset.query[0].path]),
                    data={'min_score': str((best + 1) / 2)}).json()
    result = r['results'][0]
    assert result['no_match'] and result['person_id'] is None
    assert not any(m['above_threshold'] for m in result['matches'])
    # the default threshold is the one calibrated at training time
    assert 0 < client.post('/v1/search', files=files_for([dataset.query[0].path])).json()['min_score'] < 1


def test_person_listing_and_item_endpoints(gallery_client):
    client, _, gallery = gallery_client
    pid = gallery[0].pid
    r = client.get(f'/v1/persons/{pid}').json()
    assert r['count'] == sum(g.pid == pid for g in gallery)
    item = r['data'][0]
    assert client.get(f"/v1/gallery/{item['id']}").json()['person_id'] == pid
    assert client.get(item['image_url']).content[:2] == b'\xff\xd8'
    assert client.get('/v1/persons/999999').status_code == 404
    assert client.get('/v1/gallery/999999').status_code == 404
    page = client.get('/v1/gallery', params={'camera_id': '1', 'limit': 5}).json()
    assert len(page['data']) == 5 and all(i['camera_id'] == 1 for i in page['data'])
    assert page['count'] == sum(g.camid == 1 for g in gallery)


def _stored(client):
    """(ids, float32 vectors) of the gallery as the active model stored them."""
    from storage import crud
    service = client.app.state.service
    with service.Session() as s:
        ids = [int(i) for i in crud.image_id_array(session=s)]
        vectors = crud.get_vectors(session=s, model_id=service.current.model_id, image_ids=ids)
    return np.array(list(vectors)), np.stack(list(vectors.values()))


def _embed(client, paths):
    from app.imaging import decode_upload
    embedder = client.app.state.service.current.embedder
    images = [decode_upload(open(p, 'rb').read(), 'q.jpg', 10 ** 8, 10 ** 8).image for p in paths]
    return embedder(images), embedder.num_parts


def _brute_force_scores(query, vectors, k):
    return np.sort(vectors @ query)[::-1][:k]


def test_a_group_query_is_its_definition(gallery_client, dataset):
    from reid.matching import pool_parts
    client, _, _ = gallery_client
    pid = dataset.query[0].pid
    shots = [q.path for q in dataset.query if q.pid == pid][:2]
    assert len(shots) == 2
    r = client.post('/v1/search', files=files_for(shots), data={'group': 'true', 'k': '8', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    results = r.json()['results']
    assert len(results) == 1 and results[0]['query_index'] == 0 and ', ' in results[0]['filename']
    embeddings, parts = _embed(client, shots)
    query = pool_parts(embeddings, parts)
    ids, vectors = _stored(client)
    scores = [m['cosine'] for m in results[0]['matches']]
    assert np.allclose(scores, _brute_force_scores(query, vectors, 8), atol=3e-3)  # vectors stored as float16
    assert results[0]['matches'][0]['person_id'] == pid
    # the group's answer is not either crop's own
    single = client.post('/v1/search', files=files_for(shots), data={'k': '8', 'min_score': '-1'}).json()['results']
    assert len(single) == 2 and all([m['cosine'] for m in one['matches']] != scores for one in single)
    r = client.post('/v1/search', files=files_for(shots), data={'group': 'true', 'exclude_same_camera': 'true',
                                                                'query_camera_id': '1,2'})
    assert r.status_code == 400 and 'one query_camera_id' in r.json()['detail']


def test_a_person_with_more_images_than_are_pooled_never_finds_themselves(gallery_client, monkeypatch):
    """Only the latest MAX_PERSON_SHOTS images are pooled into the query; the older ones are the person's too and
    are left out by the engine's filter, however many there are."""
    import app.search_service
    client, _, gallery = gallery_client
    pid = max({g.pid for g in gallery}, key=lambda p: sum(g.pid == p for g in gallery))
    own = {item['id'] for item in client.get(f'/v1/persons/{pid}').json()['data']}
    assert len(own) >= 3
    monkeypatch.setattr(app.search_service, 'MAX_PERSON_SHOTS', 1)
    r = client.post(f'/v1/persons/{pid}/search', params={'k': '50', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    (result,) = r.json()['results']
    assert result['filename'] == f'person {pid} (1 gallery images)'
    found = {m['image_id'] for m in result['matches']}
    total = client.get('/v1/gallery', params={'limit': 1}).json()['count']
    assert len(found) == min(50, total - len(own)) and not own & found


def test_a_known_persons_other_sightings(gallery_client):
    from reid.matching import pool_parts
    client, _, gallery = gallery_client
    pid = gallery[0].pid
    r = client.post(f'/v1/persons/{pid}/search', params={'k': '6', 'min_score': '-1'})
    assert r.status_code == 200, r.text
    result = r.json()['results'][0]
    own = {item['id'] for item in client.get(f'/v1/persons/{pid}').json()['data']}
    matches = result['matches']
    assert len(matches) == 6 and not own & {m['image_id'] for m in matches}  # never themselves
    ids, vectors = _stored(client)
    mine = np.isin(ids, list(own))
    query = pool_parts(vectors[mine], client.app.state.service.current.embedder.num_parts)
    assert np.allclose([m['cosine'] for m in matches], _brute_force_scores(query, vectors[~mine], 6), atol=3e-3)
    assert result['filename'] == f'person {pid} ({len(own)} gallery images)'
    assert client.post('/v1/persons/987654/search').status_code == 404
    r = client.post(f'/v1/persons/{pid}/search', params={'camera_id': str(matches[0]['camera_id']), 'k': '3'})
    assert r.status_code == 200 and {m['camera_id'] for m in r.json()['results'][0]['matches']} <= \
        {matches[0]['camera_id']}


def test_scores_are_calibrated_probabilities_and_the_cosine_stays(tmp_path, dataset, service_model):
    from models.checkpoints import load_model, save_checkpoint
    from models.records import read_metadata
    from reid.matching import ScoreCalibration
    calibration = ScoreCalibration(a=60.0, b=-59.0)  # as training records one: P(same) = 0.5 at cosine 59/60
    extra = dict(read_metadata(service_model)[1], score_calibration=calibration.record())
    ckpt = save_checkpoint(load_model(service_model), tmp_path / 'calibrated.safetensors', extra)
    with make_client(tmp_path / 'data', ckpt) as client:
        gallery = [r for r in dataset.gallery if r.pid > 0][:30]
        assert client.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                           data={'person_id': ','.join(str(g.pid) for g in gallery)}).status_code == 201
        body = client.post('/v1/search', files=files_for([q.path for q in dataset.query[:8]]),
                           data={'min_score': '-1', 'k': '20'}).json()
        assert body['score_kind'] == 'probability'
        for result in body['results']:
            scores = np.array([m['score'] for m in result['matches']])
            cosines = np.array([m['cosine'] for m in result['matches']])
            assert np.allclose(scores, calibration(cosines), atol=1e-9) and ((scores >= 0) & (scores <= 1)).all()
            assert (np.diff(scores) <= 1e-12).all()  # ranked by cosine, hence by score: the map is monotone
            assert result['best_score'] == result['matches'][0]['score']
        default = client.post('/v1/search', files=files_for([dataset.query[0].path])).json()['min_score']
        assert default == pytest.approx(float(calibration(extra['min_score'])))  # the same decisions as before


def test_a_model_without_a_calibration_scores_cosines(tmp_path, service_model, dataset):
    from models.checkpoints import load_model, save_checkpoint
    from models.records import read_metadata
    extra = {k: v for k, v in read_metadata(service_model)[1].items() if k != 'score_calibration'}
    assert 'min_score' in extra
    ckpt = save_checkpoint(load_model(service_model), tmp_path / 'old.safetensors', extra)
    with make_client(tmp_path / 'data', ckpt) as client:
        g = next(r for r in dataset.gallery if r.pid > 0)
        assert client.post('/v1/gallery', files=files_for([g.path]), data={'person_id': '1'}).status_code == 201
        body = client.post('/v1/search', files=files_for([dataset.query[0].path]), data={'min_score': '-1'}).json()
        assert body['score_kind'] == 'cosine'
        default = client.post('/v1/search', files=files_for([dataset.query[0].path])).json()['min_score']
        assert default == pytest.approx(extra['min_score'])  # the cosine threshold, as before
        match = body['results'][0]['matches'][0]
        assert match['score'] == match['cosine']


def _gallery_count(client):
    return client.get('/v1/gallery', params={'limit': 1}).json()['count']


@functools.lru_cache(maxsize=1)  # the 20000x20000 PNG takes a second to encode: once per session
def _bad_images():
    ok = Image.new('RGB', (64, 128), (200, 30, 30))
    jpeg = io.BytesIO()
    ok.save(jpeg, format='JPEG')
    bomb = io.BytesIO()
    Image.new('1', (20000, 20000)).save(bomb, format='PNG')
    return {
        'empty.jpg': b'',
        'text.jpg': b'this is not an image, just text pretending',
        'truncated.jpg': jpeg.getvalue()[:200],
        'truncated.png': png_bytes(ok)[:100],
        'bomb.png': bomb.getvalue(),
    }


@pytest.mark.parametrize('name', ['empty.jpg', 'text.jpg', 'truncated.jpg', 'truncated.png', 'bomb.png'])
def test_bad_images_are_refused_and_nothing_is_written(gallery_client, name):
    client, data_dir, _ = gallery_client
    before = _gallery_count(client)
    files_before = sorted(p.name for p in (data_dir / 'images').rglob('*') if p.is_file())
    data = _bad_images()[name]
    r = client.post('/v1/gallery', files=[('images', (name, data, 'image/jpeg'))], data={'person_id': '1'})
    assert 400 <= r.status_code < 500 and name in r.json()['detail']
    r = client.post('/v1/search', files=[('images', (name, data, 'image/jpeg'))])
    assert 400 <= r.status_code < 500
    assert _gallery_count(client) == before
    assert sorted(p.name for p in (data_dir / 'images').rglob('*') if p.is_file()) == files_before
    assert client.get('/readyz').status_code == 200


def test_unusual_but_valid_images_are_embedded(gallery_client):
    client, _, _ = gallery_client
    rgb = np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)
    variants = {
        'gray.png': Image.fromarray(rgb[..., 0]),
        'palette.png': Image.fromarray(rgb).convert('P'),
        'alpha.png': Image.fromarray(np.dstack([rgb, np.full((128, 64), 128, np.uint8)])),
        '16bit.png': Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
    }
    files = [('images', (n, png_bytes(im), 'image/png')) for n, im in variants.items()]
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert('CMYK').save(cmyk, format='JPEG')
    files.append(('images', ('cmyk.jpg', cmyk.getvalue(), 'image/jpeg')))
    r = client.post('/v1/search', files=files, data={'min_score': '-1'})
    assert r.status_code == 200 and len(r.json()['results']) == 5


def test_malformed_fields_and_unknown_ids(gallery_client, dataset):
    client, _, _ = gallery_client
    before = _gallery_count(client)
    two = files_for([dataset.gallery[0].path, dataset.gallery[1].path])
    for data, needle in [({'person_id': 'abc'}, 'person_id'), ({'person_id': '1,2,3'}, 'one per file'),
                         ({'person_id': '1', 'timestamp': 'yesterday'}, 'timestamp'),
                         ({'person_id': '1', 'camera_id': '-4'}, '>= 0')]:
        r = client.post('/v1/gallery', files=two, data=data)
        assert r.status_code == 400 and needle in str(r.json()['detail']), (data, r.text)
    assert client.post('/v1/search', data={'k': '3'}).status_code == 422  # no image
    assert client.post('/v1/search', files=two, data={'k': '0'}).status_code == 422
    assert client.delete('/v1/gallery/987654').status_code == 404
    assert _gallery_count(client) == before


def test_admin_needs_the_key(gallery_client):
    client, _, _ = gallery_client
    for headers in ({}, {'X-API-Key': 'wrong'}):
        assert client.get('/v1/admin/jobs', headers=headers).status_code == 401
        assert client.post('/v1/admin/jobs', headers=headers, json={'kind': 'train', 'params': {}}).status_code == 401
        assert client.post('/v1/admin/models/1/activate', headers=headers).status_code == 401
    assert client.get('/v1/admin/jobs', headers=ADMIN).status_code == 200
    r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'train', 'params': {'data_dir': '/nowhere'}})
    assert r.status_code == 400 and r.json()['detail'].startswith('data_dir: no such folder')
    r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'explode', 'params': {}})
    assert r.status_code == 422


def test_readyz_reads_the_loops_state_and_starts_no_work(gallery_client, monkeypatch):
    """A probe is answered from what the maintenance loop last checked: no sync (write lock, replicas' lock,
    embedding), no row count, no engine count."""
    import threading
    client, _, gallery = gallery_client
    service = client.app.state.service
    calls = []

    def watched(owner, name):
        real = getattr(owner, name)

        def call(*args, **kwargs):
            if threading.current_thread().name != 'index-maintenance':  # the loop itself may run meanwhile
                calls.append(name)
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, call)
    for owner, name in ((service.changelog, 'sync'), (service.changelog, 'check_health'),
                        (service.current.engine, 'count'), (service.current.engine, 'ids')):
        watched(owner, name)
    for _ in range(5):
        r = client.get('/readyz')
        assert r.status_code == 200 and r.json()['gallery_vectors'] == service.changelog.health.gallery_vectors
    assert calls == []


def test_readyz_tells_other_ids_from_equal_counts(tmp_path, service_model, dataset):
    """An engine holding as many vectors as the gallery has rows, but not the same ids, is inconsistent once the
    loop compares the ids (at start and every ID_CHECK_SECONDS)."""
    import numpy as np

    from storage.engine import Attributes
    with make_client(tmp_path, service_model) as client:
        gallery = [r for r in dataset.gallery if r.pid > 0][:5]
        assert client.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                           data={'person_id': ','.join(str(g.pid) for g in gallery)}).status_code == 201
        service = client.app.state.service
        snap = service.current
        engine = snap.engine
        held = engine.ids()
        vector = engine.vectors()[:1]
        engine.remove(held[:1])
        engine.upsert(np.array([10 ** 6]), vector,
                      Attributes(person=np.array([1]), camera=np.array([0]), time=np.array([0]), tags=[()]))
        assert service.changelog.check_health(snap).consistent  # the counts agree
        assert not service.changelog.check_health(snap, compare_ids=True).consistent
        r = client.get('/readyz')
        assert r.status_code == 503 and r.json()['status'] == 'index inconsistent'


def test_an_id_comparison_while_the_log_moves_is_not_trusted(tmp_path, service_model, dataset):
    """Every id is read outside the write lock: when a change lands meanwhile, the comparison proves nothing (the
    two lists were read at different moments) and is neither latched nor counted as done."""
    from storage import crud
    with make_client(tmp_path, service_model) as client:
        gallery = [r for r in dataset.gallery if r.pid > 0][:4]
        assert client.post('/v1/gallery', files=files_for([g.path for g in gallery[:2]]),
                           data={'person_id': '1'}).status_code == 201
        service = client.app.state.service
        snap = service.current
        checked = service.changelog.check_health(snap, compare_ids=True)
        assert checked.ids_checked_at > 0 and not checked.ids_differ
        real_ids = snap.engine.ids

        def ids_while_an_upload_lands():
            held = real_ids()
            with service.Session.begin() as s:  # a row and its change, committed by another replica meanwhile
                crud.add_images(session=s, rows=[dict(person_id=2, camera_id=0, source_name='x.jpg',
                                                      image_sha256='0' * 64, image_path='/nowhere.jpg')])
            return held
        snap.engine.ids = ids_while_an_upload_lands
        try:
            health = service.changelog.check_health(snap, compare_ids=True)
        finally:
            del snap.engine.ids
        assert not health.ids_differ and health.ids_checked_at == checked.ids_checked_at


def test_metrics_report_requests_and_gallery(gallery_client):
    client, _, gallery = gallery_client
    # the gallery's size as the maintenance loop last checked it (a scrape starts no engine call)
    def scraped():
        text = client.get('/metrics').text
        return text if f'amg_gallery_vectors {float(len(gallery))}' in text else None
    text = wait_for(scraped)
    assert 'amg_request_seconds_count{method="POST",route="/v1/search"' in text
    assert 'amg_embed_batch_size_bucket' in text
    # no export beside the checkpoint: eager torch serves, and says so
    assert 'amg_embed_backend{backend="torch",precision="fp32"} 1.0' in text
    assert client.get('/readyz').json()['backend'] == 'torch'


def test_delete_removes_from_db_and_index_and_restart_keeps_everything(gallery_client, service_model, dataset):
    client, data_dir, gallery = gallery_client
    q = dataset.query[0]
    top = client.post('/v1/search', files=files_for([q.path]), data={'min_score': '-1'}).json()
    victim = top['results'][0]['matches'][0]['image_id']
    assert client.delete(f'/v1/gallery/{victim}').status_code == 200
    assert client.get(f'/v1/gallery/{victim}').status_code == 404
    after = client.post('/v1/search', files=files_for([q.path]), data={'min_score': '-1', 'k': '100'}).json()
    assert victim not in [m['image_id'] for m in after['results'][0]['matches']]
    ready_with(client, status='ready', gallery_vectors=len(gallery) - 1)
    # a second service on the same data dir (a restart) sees the same gallery and gives the same answers
    with make_client(data_dir, service_model, **same_stores(client)) as again:
        assert again.get('/readyz').json()['gallery_vectors'] == len(gallery) - 1
        same = again.post('/v1/search', files=files_for([q.path]), data={'min_score': '-1', 'k': '100'}).json()
        assert [m['image_id'] for m in same['results'][0]['matches']] == \
            [m['image_id'] for m in after['results'][0]['matches']]


def test_exif_rotation_is_applied(gallery_client):
    client, _, _ = gallery_client
    sideways = Image.new('RGB', (128, 64), (20, 120, 200))  # stored sideways, EXIF says "rotate 90"
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways.save(buf, format='JPEG', exif=exif)
    r = client.post('/v1/gallery', files=[('images', ('exif.jpg', buf.getvalue(), 'image/jpeg'))],
                    data={'person_id': '777'})
    assert r.status_code == 201
    thumb = client.get(r.json()['data'][0]['thumbnail_url'])
    assert Image.open(io.BytesIO(thumb.content)).size == (64, 128)  # upright person crop
    assert client.delete(f"/v1/gallery/{r.json()['data'][0]['id']}").status_code == 200


def test_request_body_limit_answers_413_before_reading(tmp_path):
    with make_client(tmp_path, max_request_bytes=2048) as client:
        r = client.post('/v1/search', files=[('images', ('big.jpg', b'x' * 5000, 'image/jpeg'))])
        assert r.status_code == 413 and 'exceeds the limit of 2048' in r.json()['detail']
        assert client.get('/healthz').status_code == 200
        text = client.get('/metrics').text
        assert 'amg_request_seconds_count{method="GET",route="/healthz",status="200"} 1.0' in text


def test_the_service_serves_int8_and_says_so(tmp_path, service_model, learnable_root, dataset):
    import shutil

    from reid.export import export_int8_calibrated
    ckpt = shutil.copy(service_model, tmp_path / 'model.safetensors')
    export_int8_calibrated(ckpt, dataset.train, count=64)
    with make_client(tmp_path / 'data', ckpt, backend='onnx-int8') as client:
        assert client.get('/readyz').json()['backend'] == 'onnx-int8'
        assert client.get('/readyz').json()['precision'] == 'int8'
        assert 'amg_embed_backend{backend="onnx-int8",precision="int8"} 1.0' in client.get('/metrics').text
        g = next(r for r in dataset.gallery if r.pid > 0)
        assert client.post('/v1/gallery', files=files_for([g.path]), data={'person_id': str(g.pid)}).status_code == 201
        r = client.post('/v1/search', files=files_for([g.path]), data={'min_score': '-1'}).json()
        assert r['results'][0]['matches'][0]['cosine'] > 0.99
        text = client.get('/metrics').text
        for stage in ('receive', 'decode', 'preprocess', 'model_wait', 'forward', 'index_search', 'database',
                      'answer'):
            assert f'amg_search_stage_seconds_count{{stage="{stage}"}} 1.0' in text, stage


def test_a_replica_with_no_index_file_fills_it_from_the_database_in_chunks(gallery_client, service_model, dataset,
                                                                           tmp_path, monkeypatch):
    """A full reconcile reads, vectorises and indexes the gallery a chunk at a time (bounded memory); every row
    still arrives, with the same answers as the replica that embedded them."""
    import app.changelog
    client, data_dir, _ = gallery_client
    monkeypatch.setattr(app.changelog, 'RECONCILE_CHUNK', 7)
    q = dataset.query[0]
    want = client.post('/v1/search', files=files_for([q.path]), data={'min_score': '-1', 'k': '20'}).json()
    with make_client(data_dir, service_model, index_dir=tmp_path / 'fresh-index', **same_stores(client)) as replica:
        from storage import crud
        with client.app.state.service.Session() as s:
            rows = crud.count_images(session=s)
        # each reports its own last check: a change another test made may still be on its way to one of them
        ready_with(client, status='ready', gallery_vectors=rows)
        assert ready_with(replica, status='ready', gallery_vectors=rows) and rows > 7
        got = replica.post('/v1/search', files=files_for([q.path]), data={'min_score': '-1', 'k': '20'}).json()
    assert [m['image_id'] for m in got['results'][0]['matches']] == \
        [m['image_id'] for m in want['results'][0]['matches']]
