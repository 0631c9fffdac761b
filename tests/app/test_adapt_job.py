"""Adapt jobs: the gallery's unlabelled crops (its video sightings the tracks) adapt the served model through the
admin API; the model is activated and searched; bad options are a clear 4xx; a failed clustering registers nothing."""
import datetime as dt
import time

import pytest

from app.adaptation import gallery_crops
from reid.config import AdaptConfig
from storage import crud
from storage.db import make_engine, make_sessionmaker
from storage.images import ImageStore
from tests.app.conftest import API_KEY, files_for, make_client, ready_with
from tests.app.test_jobs import DONE, wait_for

ADMIN = {'X-API-Key': API_KEY}
T0 = dt.datetime(2026, 5, 1, 8, 0, 0)


def test_gallery_crops_are_tracks_by_video_sighting_within_the_window(tmp_path):
    Session = make_sessionmaker(make_engine(f'sqlite:///{tmp_path / "db.sqlite"}'))
    store = ImageStore(tmp_path / 'images')
    with Session.begin() as s:
        track = crud.add_sighting(session=s, camera_id=2, first_time=T0, last_time=T0 + dt.timedelta(seconds=4),
                                  video='cam2.mp4', track_id=5)
        rows = [dict(camera_id=2, sighting_id=track.id, timestamp=T0 + dt.timedelta(seconds=i), image_sha256=str(i),
                     image_path=str(tmp_path / 'images' / f'{i}.jpg')) for i in range(2)]
        rows += [dict(camera_id=3, timestamp=T0, image_sha256='u', image_path=str(tmp_path / 'images' / 'u.jpg')),
                 dict(camera_id=2, timestamp=T0 - dt.timedelta(days=1), image_sha256='old',
                      image_path=str(tmp_path / 'images' / 'old.jpg'))]
        crud.add_images(session=s, rows=rows)
    with Session() as s:
        crops = gallery_crops(s, store, AdaptConfig(weight_path='m', since=T0))
        assert [(c.camid, c.track, c.end - c.start if c.track else None) for c in crops] == [
            (2, track.id, 4.0), (2, track.id, 4.0), (3, None, None)]  # an uploaded crop is no track
        assert len(gallery_crops(s, store, AdaptConfig(weight_path='m', cameras=(3,)))) == 1
        assert len(gallery_crops(s, store, AdaptConfig(weight_path='m', until=T0))) == 1


@pytest.mark.slow
def test_adapt_job_from_the_gallery_activated_and_searched(tmp_path, service_model, dataset, learnable_root):
    with make_client(tmp_path, service_model) as client:
        crops = [g for g in dataset.gallery if g.pid > 0][:80]
        r = client.post('/v1/gallery', files=files_for([g.path for g in crops]),  # unlabelled: no person ids
                        data={'camera_id': ','.join(str(g.camid) for g in crops)})
        assert r.status_code == 201, r.text
        for bad, why in (({'cameras': [99]}, 'no crops'), ({'check_dir': '/etc'}, 'check_dir'),
                         ({'folder_tracks': True}, 'folder_tracks'), ({'data_dir': '/'}, 'data_dir')):
            r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'adapt', 'params': bad})
            assert r.status_code == 400 and why in r.text, (bad, r.text)
        r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'adapt', 'params': {'epochs': -1}})
        assert r.status_code == 422

        r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'adapt', 'params': {
            'epochs': 2, 'eps': 0.5, 'k1': 8, 'min_samples': 2, 'batch_size': 16, 'check_dir': str(learnable_root),
            'max_cluster_share': 1.0}})
        assert r.status_code == 202, r.text
        job, seen = wait_for(client, r.json()['id'], DONE, timeout=900)  # an idle-priority worker
        assert job['state'] == 'succeeded', job
        assert job['params']['weight_path'] == str(service_model.resolve())
        metrics = job['metrics']
        assert metrics['crops'] == len(crops) and metrics['clusters'] >= 2
        assert 'check_before_mAP' in metrics and 'check_mAP' in metrics

        new_id = job['result_model_id']
        assert client.post(f'/v1/admin/models/{new_id}/activate', headers=ADMIN).status_code == 202
        deadline = time.time() + 120
        while client.get('/v1/admin/models', headers=ADMIN).json()['activation']['state'] == 'running':
            assert time.time() < deadline
            time.sleep(0.3)
        ready_with(client, model_id=new_id, gallery_vectors=len(crops))  # the gallery re-embedded by it
        r = client.post('/v1/search', files=files_for([crops[0].path]), data={'min_score': '-1'}).json()
        assert r['model_id'] == new_id and r['results'][0]['matches'][0]['cosine'] > 0.99  # finds itself

        # a clustering its own indicators call failed ends the job with that reason and registers no model
        models = len(client.get('/v1/admin/models', headers=ADMIN).json()['data'])
        r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'adapt', 'params': {
            'epochs': 1, 'min_clustered': 1.0, 'eps': 0.05, 'batch_size': 16}})
        job, _ = wait_for(client, r.json()['id'], DONE, timeout=900)
        assert job['state'] == 'failed' and 'nearly everything unclustered' in job['error']
        assert job['result_model_id'] is None
        assert len(client.get('/v1/admin/models', headers=ADMIN).json()['data']) == models
