"""Retention: the sweeper removes what was stored longer ago than its camera's retention (or the default), in
batches, with its files, vectors, emptied sightings and identities, and spares enrolled identities when told to;
/metrics counts it; bad retention settings stop the start. On SQLite + FAISS and PostgreSQL + Milvus Lite."""
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from app.cli import main
from app.settings import Settings
from app.sightings import store_sighting
from storage.db import GalleryImage, Identity, Sighting, utcnow
from tests.app.conftest import API_KEY, files_for, make_client, wait_for
from tests.app.test_erasure import people
from tests.app.test_sightings import START, track
from tests.conftest import database_url_for, engine_settings

WRITE = {'X-API-Key': API_KEY}


def age(service, image_ids, days):
    """Make these rows look stored ``days`` ago."""
    with service.Session.begin() as s:
        s.execute(update(GalleryImage).where(GalleryImage.id.in_(image_ids))
                  .values(created_at=utcnow() - timedelta(days=days)))


@pytest.mark.parametrize('kind', ['sqlite-faiss', 'postgresql-milvus'])
def test_the_sweeper_removes_what_expired_and_nothing_else(request, kind, tmp_path, tmp_path_factory,
                                                           service_model, dataset):
    database, engine = kind.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    with make_client(tmp_path, service_model, database_url=url, sync_seconds=0.2, retention_days=30,
                     retention_camera_days={5: 1}, retention_keep_named=True, retention_seconds=0.2,
                     retention_batch=2, **engine_settings(engine, tmp_path_factory)) as client:
        service = client.app.state.service
        a, b, c, enrolled, passer = people(dataset, 5, 3)

        def upload(records, camera):
            r = client.post('/v1/gallery', files=files_for([g.path for g in records]), headers=WRITE,
                            data={'person_id': str(records[0].pid), 'camera_id': str(camera)})
            assert r.status_code == 201, r.text
            return [i['id'] for i in r.json()['data']]
        old, old_on_5 = upload(a, 1), upload(b, 5)
        young, young_on_5 = upload(c[:2], 1), upload(c[2:], 5)
        named = store_sighting(service, track(enrolled, camera='1', start=START))
        unnamed = store_sighting(service, track(passer, camera='2', start=START + timedelta(hours=3)))

        def identity_of(sighting_id):
            return client.get(f'/v1/sightings/{sighting_id}').json()['identity_id']
        wait_for(lambda: identity_of(named) and identity_of(unnamed), what='both sightings linked')
        identities = identity_of(named), identity_of(unnamed)
        assert client.patch(f'/v1/identities/{identities[0]}', json={'name': 'staff 1'},
                            headers=WRITE).status_code == 200
        crops = {s: [c['id'] for c in client.get(f'/v1/sightings/{s}').json()['crops']] for s in (named, unnamed)}
        with service.Session() as s:
            paths = [s.get(GalleryImage, i).image_path for i in old + old_on_5 + crops[unnamed]]

        age(service, old + crops[named] + crops[unnamed], days=40)  # past the default 30 days
        age(service, old_on_5, days=2)  # past camera 5's one day
        age(service, young, days=10)
        age(service, young_on_5, days=0.5)
        expired = old + old_on_5 + crops[unnamed]

        def removed():
            text = client.get('/metrics').text
            return text if f'amg_retention_removed_total{{what="images"}} {float(len(expired))}' in text else None
        text = wait_for(removed, what='the sweeper removed the expired images')
        assert f'amg_retention_removed_total{{what="sightings"}} {float(len(old + old_on_5) + 1)}' in text
        assert 'amg_retention_removed_total{what="identities"} 1.0' in text
        assert f'amg_retention_removed_total{{what="vectors"}} {float(len(expired))}' in text

        with service.Session() as s:
            left = {i for i in old + old_on_5 + young + young_on_5 + crops[named] + crops[unnamed]
                    if s.get(GalleryImage, i) is not None}
            assert left == set(young + young_on_5 + crops[named])
            assert s.get(Sighting, unnamed) is None and s.get(Sighting, named) is not None
            assert s.get(Identity, identities[1]) is None and s.get(Identity, identities[0]).name == 'staff 1'
        assert not any(Path(p).exists() for p in paths)
        assert not set(expired) & set(service.current.engine.ids().tolist())
        r = client.post('/v1/search', files=files_for([a[0].path]), data={'k': '100', 'min_score': '-1'})
        assert not set(expired) & {m['image_id'] for m in r.json()['results'][0]['matches']}
        assert client.get(f'/v1/persons/{a[0].pid}').status_code == 404
        # a sweep now finds nothing more
        assert service.retention.sweep()['images'] == 0


@pytest.mark.parametrize('env', [{'AMG_RETENTION_DAYS': '0'}, {'AMG_RETENTION_DAYS': '-7'},
                                 {'AMG_RETENTION_CAMERA_DAYS': '{"3": 0}'},
                                 {'AMG_RETENTION_CAMERA_DAYS': '{"3": "soon"}'}])
def test_a_retention_of_no_days_stops_the_start_saying_why(env, monkeypatch, tmp_path, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
    assert main(['serve', '--data-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'amg-reid serve: error' in err and 'retention' in err
