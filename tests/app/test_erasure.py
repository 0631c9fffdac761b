"""Erasure of a person and of an identity: the receipt counts what went, and below the API nothing is left - no
gallery, tag, vector or sighting row, no identity, no file (a file another person's row shares stays), no vector in
the FAISS index (in memory and saved) or the Milvus collection, none in another model's saved index or collection;
the routes answer none of it, on this replica and on another that follows the change log. On SQLite and PostgreSQL, FAISS, Milvus Lite and (slow) a real Milvus standalone."""
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import func, select

from app.engines import index_path
from app.sightings import store_sighting
from storage.db import GalleryChange, GalleryImage, GalleryTag, GalleryVector, Identity, Sighting
from storage.engine import Attributes
from storage.faiss_engine import FaissEngine
from tests.app.conftest import API_KEY, files_for, make_client, wait_for
from tests.app.test_api import same_stores
from tests.app.test_sightings import START, track
from tests.conftest import database_url_for, engine_settings

WRITE = {'X-API-Key': API_KEY}
PERSON, OTHER = 9001, 9002
STALE_MODEL = 999  # another model's copies: a saved FAISS index, a Milvus collection of the same prefix


@pytest.fixture(scope='module', params=['sqlite-faiss', 'postgresql-faiss', 'sqlite-milvus', 'postgresql-milvus',
                                        pytest.param('sqlite-milvusserver', marks=pytest.mark.slow)])
def client(request, tmp_path_factory, service_model):
    database, engine = request.param.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(tmp_path_factory.mktemp('erasure'), service_model, database_url=url, sync_seconds=0.2,
                     **engine_settings(engine, tmp_path_factory, request=request)) as client:
        yield client


def people(dataset, n_people: int, n: int):
    """``n`` gallery records of each of ``n_people`` persons."""
    records = [r for r in dataset.gallery if r.pid > 0]
    pids = [p for p in sorted({r.pid for r in records}) if sum(r.pid == p for r in records) >= n][:n_people]
    return [[r for r in records if r.pid == p][:n] for p in pids]


def upload(client, records, person_id, tags='erasure'):
    r = client.post('/v1/gallery', files=files_for([g.path for g in records]),
                    data={'person_id': str(person_id), 'camera_id': '1', 'tags': tags}, headers=WRITE)
    assert r.status_code == 201, r.text
    return r.json()['data']


def plant_other_model_copies(service, ids):
    """Another model's copies of these ids: this replica's saved FAISS index, and (Milvus) a collection of the
    deployment's prefix."""
    snap = service.current
    vectors = np.eye(len(ids), snap.engine.dim, dtype=np.float32)
    attrs = Attributes.of_rows([SimpleNamespace(person_id=PERSON, camera_id=1, timestamp=None, tags=())] * len(ids))
    saved = FaissEngine(snap.engine.dim, path=index_path(service.index_dir, STALE_MODEL))
    saved.upsert(np.asarray(ids, np.int64), vectors, attrs)
    saved.save()
    if service.settings.vector_engine != 'milvus':
        return None
    from storage.milvus_engine import MilvusEngine, collection_name
    settings = service.settings
    other = MilvusEngine(settings.milvus_uri, collection_name(settings.milvus_collection_prefix, STALE_MODEL),
                         snap.engine.dim, index_type='FLAT', index_params={}, search_params={},
                         prefix=settings.milvus_collection_prefix)
    other.create()
    other.upsert(np.asarray(ids, np.int64), vectors, attrs)
    assert other.count() == len(ids)
    return other


def nothing_left_below_the_api(service, image_ids, paths, sighting_ids, identity_ids=()):
    with service.Session() as s:
        assert s.scalar(select(func.count()).select_from(GalleryImage).where(GalleryImage.id.in_(image_ids))) == 0
        assert s.scalar(select(func.count()).select_from(GalleryTag).where(GalleryTag.image_id.in_(image_ids))) == 0
        assert s.scalar(select(func.count()).select_from(GalleryVector)
                        .where(GalleryVector.image_id.in_(image_ids))) == 0
        assert s.scalar(select(func.count()).select_from(Sighting).where(Sighting.id.in_(sighting_ids))) == 0
        assert s.scalar(select(func.count()).select_from(Identity).where(Identity.id.in_(list(identity_ids)))) == 0
        # every replica's engine follows these
        deleted = set(s.scalars(select(GalleryChange.image_id).where(GalleryChange.op == 'delete',
                                                                      GalleryChange.image_id.in_(image_ids))))
        assert deleted == set(image_ids)
    assert not any(Path(p).exists() for p in paths)
    snap = service.current
    assert not set(image_ids) & set(snap.engine.ids().tolist())
    assert not service.match_rows.cached(image_ids)[0]
    if service.settings.vector_engine == 'milvus':  # the collection itself, read with Strong consistency
        rows = snap.engine.client.query(snap.engine.collection, filter=f'id in {list(image_ids)}',
                                        output_fields=['id'], consistency_level='Strong')
        assert rows == []
    else:  # the saved index too
        service.save_index()
        saved = FaissEngine.load(index_path(service.index_dir, snap.model_id), snap.engine.dim)
        assert len(saved.ids()) == snap.engine.count() and not set(image_ids) & set(saved.ids().tolist())


def no_route_answers(client, items, sighting_ids, query_path):
    for item in items:
        for url in (f"/v1/gallery/{item['id']}", item['image_url'], item['thumbnail_url']):
            assert client.get(url).status_code == 404, url
    for sighting_id in sighting_ids:
        assert client.get(f'/v1/sightings/{sighting_id}').status_code == 404
    gone = {item['id'] for item in items}
    listed = client.get('/v1/gallery', params={'limit': 500}).json()['data']
    assert not gone & {i['id'] for i in listed}
    r = client.post('/v1/search', files=files_for([query_path]), data={'k': '100', 'min_score': '-1'})
    assert r.status_code == 200 and not gone & {m['image_id'] for m in r.json()['results'][0]['matches']}


def test_erasing_a_person_leaves_nothing_behind(client, dataset, service_model, tmp_path):
    service = client.app.state.service
    mine, theirs = people(dataset, 2, 3)
    items = upload(client, mine, PERSON)
    # another person's row of the same bytes as one of mine: that file stays, named by their row
    shared = upload(client, mine[:1], OTHER) + upload(client, theirs, OTHER)
    ids = [i['id'] for i in items]
    sightings = [i['sighting_id'] for i in items]
    with service.Session() as s:
        paths = [s.get(GalleryImage, i).image_path for i in ids]
    other_model = plant_other_model_copies(service, ids)
    replica = make_client(tmp_path / 'replica', service_model, index_dir=tmp_path / 'replica-index',
                          **same_stores(client))
    replica.__enter__()
    # the replica has them in its engine and its cached rows before the erasure
    wait_for(lambda: set(ids) <= set(replica.app.state.service.current.engine.ids().tolist()), what='replica filled')
    assert replica.post('/v1/search', files=files_for([mine[0].path]), data={'k': '100', 'min_score': '-1'}
                        ).status_code == 200

    r = client.delete(f'/v1/persons/{PERSON}', headers=WRITE)
    assert r.status_code == 200, r.text
    assert r.json() == {'erased': f'person {PERSON}', 'images': 3, 'image_files': 2, 'vectors': 3, 'sightings': 3,
                        'identities': 0}
    nothing_left_below_the_api(service, ids, paths[1:], sightings)
    assert Path(paths[0]).is_file()  # the other person's row names it
    assert not index_path(service.index_dir, STALE_MODEL).exists()
    if other_model is not None:
        assert other_model.count() == 0
        other_model.drop()
    no_route_answers(client, items, sightings, mine[0].path)
    try:  # another replica follows the change log: its engine and cached rows forget them too
        follower = replica.app.state.service
        wait_for(lambda: not set(ids) & set(follower.current.engine.ids().tolist()), what='the replica followed')
        wait_for(lambda: not follower.match_rows.cached(ids)[0], what="the replica's cache followed")
        no_route_answers(replica, items, sightings, mine[0].path)
    finally:
        replica.__exit__(None, None, None)
    assert client.get(f'/v1/persons/{PERSON}').status_code == 404
    assert client.get('/v1/gallery', params={'person_id': PERSON}).json()['count'] == 0
    # the other person is untouched, their shared file answered
    assert client.get(f'/v1/persons/{OTHER}').json()['count'] == len(shared)
    assert client.get(shared[0]['image_url']).status_code == 200
    assert client.delete(f'/v1/persons/{PERSON}', headers=WRITE).status_code == 404
    assert client.delete('/v1/persons/-1', headers=WRITE).status_code == 422


def test_erasing_an_enrolled_identity_takes_its_sightings_and_name(client, dataset):
    service = client.app.state.service
    person, bystander = people(dataset, 4, 3)[2:]
    first = store_sighting(service, track(person, camera='1', start=START))
    later = store_sighting(service, track(person, camera='2', start=START + timedelta(minutes=1)))
    elsewhere = store_sighting(service, track(bystander, camera='3', start=START + timedelta(hours=5)))

    def identity_of(sighting_id):
        return client.get(f'/v1/sightings/{sighting_id}').json()['identity_id']
    wait_for(lambda: all(identity_of(s) for s in (first, later, elsewhere)), what='every sighting linked')
    identity = identity_of(first)
    assert identity_of(later) == identity != identity_of(elsewhere)
    assert client.patch(f'/v1/identities/{identity}', json={'name': 'visitor 9'}, headers=WRITE).status_code == 200
    crops = [c for s in (first, later) for c in client.get(f'/v1/sightings/{s}').json()['crops']]
    ids = [c['id'] for c in crops]
    with service.Session() as s:
        paths = [s.get(GalleryImage, i).image_path for i in ids]

    r = client.delete(f'/v1/identities/{identity}', headers=WRITE)
    assert r.status_code == 200, r.text
    # both tracks hold the same crops: six rows, three files
    assert r.json() == {'erased': f'identity {identity}', 'images': 6, 'image_files': 3, 'vectors': 6,
                        'sightings': 2, 'identities': 1}
    nothing_left_below_the_api(service, ids, paths, [first, later], [identity])
    no_route_answers(client, crops, [first, later], person[0].path)
    assert client.get(f'/v1/identities/{identity}').status_code == 404
    assert identity not in {i['id'] for i in client.get('/v1/identities', params={'limit': 500}).json()['data']}
    assert client.get(f'/v1/sightings/{elsewhere}').status_code == 200
    assert client.delete(f'/v1/identities/{identity}', headers=WRITE).status_code == 404
