"""Sites: two shops on one deployment never see each other. Keys of site A (read, write, admin) walk every route of
the OpenAPI document against site B's data - images, a person of B's only and one both sites have, sightings, an
identity, an uploaded video's job, a key - and nothing of B's comes back, nor does anything of B's change; A's own
data stays within reach. On SQLite + FAISS and PostgreSQL + Milvus Lite."""
import json
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.ingest import tracks_file
from app.sightings import store_sighting
from storage import crud
from storage.db import JobKind, JobState
from tests.app.conftest import API_KEY, files_for, make_client, wait_for
from tests.app.test_erasure import people
from tests.app.test_sightings import START, track
from video.mot import write_mot
from tests.conftest import database_url_for, engine_settings

ADMIN = {'X-API-Key': API_KEY}
ONLY_B, BOTH, ONLY_A = 502, 501, 601  # persons


def write_video(path: Path, frames: int) -> None:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 64))
    for n in range(frames):
        out.write(np.full((64, 64, 3), 40 * n, np.uint8))
    out.release()


def named_files(records, prefix):
    return [('images', (f'{prefix}-{n}.jpg', Path(r.path).read_bytes(), 'image/jpeg')) for n, r in enumerate(records)]


@pytest.fixture(scope='module', params=['sqlite-faiss', 'postgresql-milvus'])
def shops(request, tmp_path_factory, service_model, dataset):
    database, engine = request.param.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    samples = Path(dataset.query[0].path).parent
    with make_client(tmp_path_factory.mktemp('sites'), service_model, database_url=url, sites='shop-a,shop-b',
                     read_api_key='reader', write_api_key='writer', sync_seconds=0.2, sample_queries_dir=samples,
                     **engine_settings(engine, tmp_path_factory)) as client:
        keys = {}
        for name, role, site in (('a reader', 'read', 'shop-a'), ('a writer', 'write', 'shop-a'),
                                 ('a admin', 'admin', 'shop-a'), ('b writer', 'write', 'shop-b')):
            r = client.post('/v1/admin/keys', json={'name': name, 'role': role, 'sites': [site]}, headers=ADMIN)
            assert r.status_code == 201, r.text
            keys[name] = r.json()
        b_key = {'X-API-Key': keys['b writer']['key']}
        a_key = {'X-API-Key': keys['a writer']['key']}
        records = people(dataset, 6, 3)
        b_images = []
        for pid, group, prefix in ((ONLY_B, records[0], 'shopb'), (BOTH, records[1], 'shopb')):
            r = client.post('/v1/gallery', files=named_files(group, prefix), headers=b_key,  # site: the key's only
                            data={'person_id': str(pid), 'camera_id': '1', 'tags': 'b-tag'})
            assert r.status_code == 201, r.text
            assert {i['site'] for i in r.json()['data']} == {'shop-b'}
            b_images += r.json()['data']
        a_images = []
        for pid, group in ((ONLY_A, records[2]), (BOTH, records[3][:1])):
            r = client.post('/v1/gallery', files=named_files(group, 'shopa'), headers=a_key,
                            data={'person_id': str(pid), 'camera_id': '1', 'site': 'shop-a'})
            assert r.status_code == 201, r.text
            a_images += r.json()['data']
        service = client.app.state.service
        # B's identity: two video sightings of one person; A's: one
        b_sightings = [store_sighting(service, track(records[4], camera='2', start=START), site='shop-b'),
                       store_sighting(service, track(records[4], camera='3', start=START + timedelta(minutes=2)),
                                      site='shop-b')]
        a_sighting = store_sighting(service, track(records[5], camera='2', start=START), site='shop-a')

        def identity_of(sighting_id):
            return client.get(f'/v1/sightings/{sighting_id}', headers=ADMIN).json()['identity_id']
        wait_for(lambda: all(identity_of(s) for s in b_sightings + [a_sighting]), what='sightings linked')
        assert identity_of(b_sightings[0]) == identity_of(b_sightings[1]) != identity_of(a_sighting)
        with service.Session.begin() as s:  # an uploaded video's ingest job of B (finished: nothing runs)
            job = crud.create_job(session=s, kind=JobKind.INGEST, params={
                'uploaded': True, 'site': 'shop-b', 'video_name': 'shopb-lobby.mp4', 'camera_id': 2})
            job.state = JobState.SUCCEEDED
        # ... and B's first sighting came from it: a recording on the server, its tracked boxes beside it, so the
        # frame viewer's routes have something of B's to show (asserted below with B's admin view)
        recording = tmp_path_factory.mktemp('recording') / 'shopb-lobby.avi'
        write_video(recording, frames=4)
        with service.Session.begin() as s:
            row = crud.get_job(session=s, job_id=job.id)
            row.params = {**row.params, 'video_path': str(recording)}
            crud.get_sighting(session=s, sighting_id=b_sightings[0]).ingest_job_id = job.id
        tracks = tracks_file(service.data_dir, job.id)
        tracks.parent.mkdir(parents=True, exist_ok=True)
        write_mot(tracks, {n: np.array([[7, 4, 4, 16, 32, 1.0]]) for n in (1, 2, 3)})
        assert client.get(f'/v1/sightings/{b_sightings[0]}/frames/1/image', headers=ADMIN).status_code == 200
        frame = client.get(f'/v1/sightings/{b_sightings[0]}/frames/1', headers=ADMIN).json()
        assert [box['sighting_id'] for box in frame['boxes']] == [b_sightings[0]], frame
        b = dict(images=b_images, sightings=b_sightings, identity=identity_of(b_sightings[0]), job=job.id,
                 key=keys['b writer']['id'])
        a = dict(images=a_images, sighting=a_sighting, identity=identity_of(a_sighting))
        yield client, keys, a, b, records


def requests_for(a, b, records):
    """Each route of the OpenAPI document, asked by a site-A key about site B's data: (method, path template) ->
    the requests."""
    image, sighting, identity = b['images'][0]['id'], b['sightings'][0], b['identity']
    query = files_for([records[0][0].path])
    search = dict(files=query, data={'k': '100', 'min_score': '-1'})
    video = dict(files=[('video', ('shopb.mp4', b'not a video', 'video/mp4'))],
                 data={'camera_id': '2', 'start_time': '2026-06-01T08:00:00Z', 'site': 'shop-b'})
    return {
        ('get', '/healthz'): [('/healthz', {})], ('get', '/readyz'): [('/readyz', {})],
        ('get', '/metrics'): [('/metrics', {})],
        ('post', '/v1/search'): [('/v1/search', search),
                                 ('/v1/search', dict(files=query, data={'k': '100', 'min_score': '-1',
                                                                         'tags': 'b-tag'}))],
        ('post', '/v1/persons/{person_id}/search'): [(f'/v1/persons/{ONLY_B}/search', {}),
                                                     (f'/v1/persons/{BOTH}/search', dict(params={'k': 100}))],
        ('get', '/v1/gallery'): [('/v1/gallery', dict(params={'limit': 500})),
                                 ('/v1/gallery', dict(params={'person_id': ONLY_B})),
                                 ('/v1/gallery', dict(params={'sighting_id': sighting}))],
        ('post', '/v1/gallery'): [('/v1/gallery', dict(files=files_for([records[0][0].path]),
                                                       data={'person_id': '9', 'site': 'shop-b'}))],
        ('get', '/v1/gallery/{image_id}'): [(f'/v1/gallery/{image}', {})],
        ('delete', '/v1/gallery/{image_id}'): [(f'/v1/gallery/{image}', {})],
        ('get', '/v1/gallery/{image_id}/image'): [(f'/v1/gallery/{image}/image', {})],
        ('get', '/v1/gallery/{image_id}/thumbnail'): [(f'/v1/gallery/{image}/thumbnail', {})],
        ('get', '/v1/persons/{person_id}'): [(f'/v1/persons/{ONLY_B}', {}), (f'/v1/persons/{BOTH}', {})],
        ('delete', '/v1/persons/{person_id}'): [(f'/v1/persons/{ONLY_B}', {})],
        ('get', '/v1/sightings'): [('/v1/sightings', dict(params={'limit': 500}))],
        ('get', '/v1/sightings/{sighting_id}'): [(f'/v1/sightings/{sighting}', {})],
        ('post', '/v1/sightings/{sighting_id}/search'): [(f'/v1/sightings/{sighting}/search', {})],
        ('get', '/v1/sightings/{sighting_id}/frames/{frame}'): [(f'/v1/sightings/{sighting}/frames/1', {})],
        ('get', '/v1/sightings/{sighting_id}/frames/{frame}/image'): [
            (f'/v1/sightings/{sighting}/frames/1/image', {})],
        ('get', '/v1/identities'): [('/v1/identities', dict(params={'limit': 500}))],
        ('get', '/v1/identities/{identity_id}'): [(f'/v1/identities/{identity}', {})],
        ('patch', '/v1/identities/{identity_id}'): [(f'/v1/identities/{identity}', dict(json={'name': 'taken'}))],
        ('delete', '/v1/identities/{identity_id}'): [(f'/v1/identities/{identity}', {})],
        ('post', '/v1/identities/{identity_id}/merge'): [
            (f"/v1/identities/{a['identity']}/merge", dict(json={'other_id': identity})),
            (f'/v1/identities/{identity}/merge', dict(json={'other_id': a['identity']}))],
        ('post', '/v1/identities/{identity_id}/split'): [
            (f'/v1/identities/{identity}/split', dict(json={'sighting_ids': [sighting]}))],
        ('post', '/v1/videos'): [('/v1/videos', video)],
        ('get', '/v1/videos/{job_id}'): [(f"/v1/videos/{b['job']}", {})],
        ('post', '/v1/admin/videos'): [('/v1/admin/videos', dict(json={
            'video_path': '/nowhere.mp4', 'camera_id': 2, 'start_time': '2026-06-01T08:00:00Z', 'site': 'shop-b'}))],
        ('get', '/v1/admin/data-roots'): [('/v1/admin/data-roots', {})],
        ('get', '/v1/admin/jobs'): [('/v1/admin/jobs', {})],
        ('post', '/v1/admin/jobs'): [('/v1/admin/jobs', dict(json={'kind': 'train', 'params': {'data_dir': '/x'}}))],
        ('get', '/v1/admin/jobs/{job_id}'): [(f"/v1/admin/jobs/{b['job']}", {})],
        ('post', '/v1/admin/jobs/{job_id}/cancel'): [(f"/v1/admin/jobs/{b['job']}/cancel", {})],
        ('get', '/v1/admin/models'): [('/v1/admin/models', {})],
        ('post', '/v1/admin/models/{model_id}/activate'): [('/v1/admin/models/1/activate', {})],
        ('post', '/v1/admin/index/rebuild'): [('/v1/admin/index/rebuild', {})],
        ('get', '/v1/admin/audit'): [('/v1/admin/audit', dict(params={'limit': 1000})),
                                     ('/v1/admin/audit', dict(params={'format': 'jsonl'})),
                                     ('/v1/admin/audit', dict(params={'format': 'csv'}))],
        ('get', '/v1/admin/keys'): [('/v1/admin/keys', {})],
        ('post', '/v1/admin/keys'): [('/v1/admin/keys', dict(json={'name': 'mine', 'role': 'read',
                                                                   'sites': ['shop-b']})),
                                     ('/v1/admin/keys', dict(json={'name': 'every site', 'role': 'read'}))],
        ('delete', '/v1/admin/keys/{key_id}'): [(f"/v1/admin/keys/{b['key']}", {})],
        ('get', '/v1/samples'): [('/v1/samples', {})],
        ('get', '/v1/samples/{name}'): [(f'/v1/samples/{Path(records[0][0].path).name}', {}),
                                        (f'/v1/samples/{Path(records[4][0].path).name}', {})],
        ('post', '/v1/admin/identities/recluster'): [('/v1/admin/identities/recluster', dict(json={
            'after': (START - timedelta(hours=1)).isoformat(), 'before': (START + timedelta(hours=1)).isoformat()}))],
    }


def values(body, key):
    """Every value of ``key`` anywhere in a JSON body."""
    if isinstance(body, dict):
        for k, v in body.items():
            if k == key:
                yield v
            yield from values(v, key)
    elif isinstance(body, list):
        for item in body:
            yield from values(item, key)


def b_state(client):
    """What B has, as the deployment's admin sees it."""
    get = lambda url, **kw: client.get(url, headers=ADMIN, **kw).json()  # noqa: E731
    return (sorted(i['id'] for i in get('/v1/gallery', params={'limit': 500})['data'] if i['site'] == 'shop-b'),
            sorted((x['id'], x['identity_id'], x['crop_count']) for x in get('/v1/sightings', params={'limit': 500})
                   ['data'] if x['site'] == 'shop-b'),
            sorted((x['id'], x['name'], x['sighting_count']) for x in get('/v1/identities', params={'limit': 500})
                   ['data'] if x['site'] == 'shop-b'),
            [k['revoked_at'] for k in get('/v1/admin/keys')['data'] if k['name'] == 'b writer'])


def test_a_key_of_site_a_never_sees_site_b_through_any_route(shops):
    client, keys, a, b, records = shops
    table = requests_for(a, b, records)
    documented = {(method, path) for path, ops in client.get('/openapi.json').json()['paths'].items()
                  for method in ops}
    assert documented == set(table), ('routes without a cross-site request here', documented ^ set(table))
    b_ids = {i['id'] for i in b['images']}
    b_marks = {i['image_sha256'] for i in b['images']} | {'shopb-', 'shop-b', 'b writer'}
    before = b_state(client)
    for key in ('a reader', 'a writer', 'a admin'):
        headers = {'X-API-Key': keys[key]['key']}
        for (method, _), asks in sorted(table.items()):
            for url, kwargs in asks:
                r = client.request(method.upper(), url, headers=headers, **kwargs)
                what = f'{key}: {method.upper()} {url} -> {r.status_code}'
                assert r.status_code < 500, (what, r.text)
                text = r.text
                # B's names and contents: refused with a status only (a 403 for a write to B names the site)
                if r.status_code != 403:
                    assert not any(mark in text for mark in b_marks), (what, text[:300])
                if r.headers.get('content-type', '').startswith('application/json'):
                    body = r.json()
                    assert not b_ids & set(values(body, 'image_id')), what
                    assert not b_ids & set(values(body, 'best_image_id')), what
                    assert set(values(body, 'site')) <= {'shop-a'}, what
                elif r.status_code == 200 and url.endswith(('/image', '/thumbnail')):
                    pytest.fail(f'{what}: a file of B')
    assert b_state(client) == before  # nothing of B's changed


def test_site_a_keeps_its_own_and_b_its_own(shops):
    client, keys, a, b, records = shops
    reader = {'X-API-Key': keys['a reader']['key']}
    mine = {i['id'] for i in a['images']} | {c['id'] for c in client.get(f"/v1/sightings/{a['sighting']}",
                                                                          headers=reader).json()['crops']}
    listed = client.get('/v1/gallery', headers=reader, params={'limit': 500}).json()
    assert {i['id'] for i in listed['data']} == mine and listed['count'] == len(mine)
    assert client.get(f"/v1/gallery/{a['images'][0]['id']}/thumbnail", headers=reader).status_code == 200
    both = client.get(f'/v1/persons/{BOTH}', headers=reader).json()
    assert both['count'] == 1 and both['data'][0]['site'] == 'shop-a'
    r = client.post('/v1/search', files=files_for([records[3][0].path]), headers=reader,
                    data={'k': '100', 'min_score': '-1'}).json()
    assert {m['image_id'] for m in r['results'][0]['matches']} == mine
    # the deployment's keys see both sites
    assert client.get('/v1/gallery', headers=ADMIN, params={'limit': 500}).json()['count'] == \
        len(a['images']) + len(b['images']) + 3 * 3
    # a write names its site, one of AMG_SITES and of the key's
    writer = {'X-API-Key': keys['a writer']['key']}
    upload = dict(files=files_for([records[2][0].path]), data={'person_id': '7'})
    assert client.post('/v1/gallery', headers={'X-API-Key': 'writer'}, **upload).status_code == 400  # which site?
    r = client.post('/v1/gallery', headers=writer, files=upload['files'], data={'person_id': '7', 'site': 'mars'})
    assert r.status_code == 400 and 'unknown' in r.json()['detail']
    assert client.post('/v1/admin/keys', json={'name': 'z', 'role': 'read', 'sites': ['mars']},
                       headers=ADMIN).status_code == 400
    # erasing a person both sites have takes A's rows only
    r = client.delete(f'/v1/persons/{BOTH}', headers=writer)
    assert r.status_code == 200 and r.json()['images'] == 1
    assert client.get(f'/v1/persons/{BOTH}', headers=ADMIN).json()['count'] == 3
    # A's admin reads A's keys' audit events only
    events = client.get('/v1/admin/audit', headers={'X-API-Key': keys['a admin']['key']},
                        params={'limit': 1000}).json()['data']
    assert events and {e['key_name'] for e in events} <= {'a reader', 'a writer', 'a admin'}
    lines = client.get('/v1/admin/audit', headers={'X-API-Key': keys['a admin']['key']},
                       params={'format': 'jsonl'}).text.splitlines()
    assert {json.loads(line)['key_name'] for line in lines} <= {'a reader', 'a writer', 'a admin'}
