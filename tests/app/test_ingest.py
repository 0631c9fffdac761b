"""Video ingest through the API: an uploaded recording becomes sightings in a background job, searchable once the
service has embedded their crops; the same file is ingested once; bad input is refused and nothing is kept."""
import pytest

for module in ('av', 'cv2', 'trackers'):
    pytest.importorskip(module, reason='video ingest tests skipped: the video extra is not installed')

from video.synthetic import VideoSynthConfig, generate_videos  # noqa: E402

from .conftest import API_KEY, files_for, make_client, ready_with, wait_for  # noqa: E402

ONE_CAMERA = VideoSynthConfig(num_people=3, num_cams=1, seconds=6, size=(256, 192), crossing_seconds=(2.0, 3.0),
                              travel_seconds=(0.5, 1.0), seed=5)
ADMIN = {'X-API-Key': API_KEY}


@pytest.fixture(scope='module')
def recording(tmp_path_factory):
    root = tmp_path_factory.mktemp('ingest-video')
    video = generate_videos(root, ONE_CAMERA)[1]
    return video, root / 'cam1.gt.txt'


def upload(client, video, boxes=None, camera='4', start='2026-05-01T08:00:00Z'):
    files = [('video', (video.name, video.read_bytes(), 'video/mp4'))]
    if boxes is not None:
        files.append(('boxes', ('gt.txt', boxes, 'text/plain')))
    return client.post('/v1/videos', files=files, data={'camera_id': camera, 'start_time': start, 'max_crops': '4'},
                       headers=ADMIN)


def finished(client, job_id):
    def done():
        job = client.get(f'/v1/admin/jobs/{job_id}', headers=ADMIN).json()
        return job if job['state'] in ('succeeded', 'failed', 'cancelled') else None
    return wait_for(done, 180, f'ingest job {job_id}')


@pytest.mark.slow
def test_a_video_becomes_searchable_sightings_once(tmp_path, service_model, recording):
    video, truth = recording
    with make_client(tmp_path, service_model, sync_seconds=0.2) as client:
        r = upload(client, video, truth.read_bytes())
        assert r.status_code == 202, r.text
        assert str(tmp_path) not in r.text and r.json()['params']['video_name'] == video.name  # no server path
        # the same bytes on another camera with boxes that do not parse: refused, and the file the first job
        # reads stays
        assert upload(client, video, b'1,1,x\n', camera='5').status_code == 400
        kept = client.get(f'/v1/admin/jobs/{r.json()["id"]}', headers=ADMIN).json()['params']
        assert (tmp_path / 'videos').joinpath(kept['video_path'].rsplit('/', 1)[-1]).exists()
        job = finished(client, r.json()['id'])
        followed = client.get(f'/v1/videos/{job["id"]}', headers=ADMIN).json()  # the uploader's view of it
        assert followed['state'] == 'succeeded' and followed['metrics'] == job['metrics']
        assert 'video_path' not in followed['params'] and followed['log_tail'] == ''
        assert job['state'] == 'succeeded', job
        made = job['metrics']
        assert made['sightings'] >= 3 and made['crops'] >= made['sightings']  # three people walk past
        assert made['chosen_by_visibility'] is False  # the active model has no visibility head
        listed = client.get('/v1/sightings', params={'camera_id': '4', 'limit': 100}).json()
        sightings = listed['data']
        assert len(sightings) == made['sightings']
        assert all(s['camera_id'] == 4 and s['video'] == video.name for s in sightings)  # the upload's name
        assert min(s['first_time'] for s in sightings) >= '2026-05-01T08:00:00'
        # the service embeds the crops the worker stored when it follows the change log
        ready_with(client, 60, status='ready', gallery_vectors=made['crops'])
        one = client.get(f'/v1/sightings/{sightings[0]["id"]}').json()
        crops = one['crops']
        assert 1 <= len(crops) <= 4 and all(c['frame'] is not None and c['box'] for c in crops)
        found = client.post(f'/v1/sightings/{sightings[0]["id"]}/search', params={'min_score': '-1'})
        assert found.status_code == 200, found.text
        own = {c['id'] for c in crops}
        assert not own & {m['image_id'] for m in found.json()['results'][0]['matches']}

        again = upload(client, video, truth.read_bytes())  # the same bytes on the same camera: that job
        assert again.status_code == 200 and again.json()['id'] == job['id']
        assert client.get('/v1/sightings', params={'limit': 100}).json()['count'] == made['sightings']
        frame_viewer(client, one, crops[0])


@pytest.mark.slow
def test_an_ingest_job_chooses_crops_with_the_active_models_visibility_head(tmp_path, visibility_checkpoint,
                                                                          recording):
    video, truth = recording
    with make_client(tmp_path, visibility_checkpoint) as client:
        r = upload(client, video, truth.read_bytes())
        assert r.status_code == 202, r.text
        job = finished(client, r.json()['id'])
        assert job['state'] == 'succeeded', job
        assert job['metrics']['chosen_by_visibility'] is True and job['metrics']['sightings'] >= 3


def frame_viewer(client, sighting, crop):
    """A crop's frame: every box tracked in it, the crop's own among them as its sighting's; the frame's pixels
    where the crop was cut are the crop's; frames outside the track and uploaded crops have none."""
    import io

    import numpy as np
    from PIL import Image

    from video.quality import clip_box
    r = client.get(f"/v1/sightings/{sighting['id']}/frames/{crop['frame']}")
    assert r.status_code == 200, r.text
    view = r.json()
    assert (view['width'], view['height']) == ONE_CAMERA.size
    assert view['first_frame'] <= crop['frame'] <= view['last_frame']
    mine = [b for b in view['boxes'] if b['sighting_id'] == sighting['id']]
    assert len(mine) == 1 and mine[0]['track_id'] == sighting['track_id']
    np.testing.assert_allclose([mine[0][k] for k in 'xywh'], crop['box'], atol=0.01)
    image = client.get(view['image_url'])
    assert image.status_code == 200 and image.headers['content-type'] == 'image/jpeg'
    assert 'private' in image.headers['cache-control']
    pixels = np.asarray(Image.open(io.BytesIO(image.content)).convert('RGB'), dtype=np.float32)
    assert pixels.shape == (ONE_CAMERA.size[1], ONE_CAMERA.size[0], 3)
    x0, y0, x1, y1 = clip_box(tuple(crop['box']), *ONE_CAMERA.size)
    stored = client.get(f"/v1/gallery/{crop['id']}/image")
    assert stored.status_code == 200
    cut = np.asarray(Image.open(io.BytesIO(stored.content)).convert('RGB'), dtype=np.float32)
    assert np.abs(pixels[y0:y1, x0:x1] - cut).mean() < 6  # the same pixels, but for the frame's JPEG
    outside = view['last_frame'] + 1
    assert client.get(f"/v1/sightings/{sighting['id']}/frames/{outside}").status_code == 404
    assert client.get(f"/v1/sightings/{sighting['id']}/frames/{outside}/image").status_code == 404
    upload = client.post('/v1/gallery', data={'person_id': '1'}, headers=ADMIN,
                         files=[('images', ('a.png', stored.content, 'image/png'))])
    assert upload.status_code == 201, upload.text
    alone = upload.json()['data'][0]['sighting_id']
    missing = client.get(f'/v1/sightings/{alone}/frames/0')
    assert missing.status_code == 404 and 'no recording' in missing.json()['detail']


def test_bad_input_is_refused_and_nothing_is_kept(tmp_path, service_model, recording):
    video, _ = recording
    with make_client(tmp_path, service_model) as client:
        r = upload(client, video, b'1,1,10,10,20,40,1\nnot,a,mot,line\n')
        assert r.status_code == 400 and r.json()['detail'].startswith('boxes:'), r.text
        garbage = tmp_path / 'garbage.mp4'
        garbage.write_bytes(b'\x00not a video' * 100)
        r = upload(client, garbage)
        assert r.status_code == 400 and r.json()['detail'].startswith('video:'), r.text
        assert str(tmp_path) not in r.json()['detail']  # where the server keeps uploads is not shown
        assert upload(client, video, camera='-1').status_code == 422
        assert upload(client, video, start='yesterday').status_code == 400
        assert [p.name for p in (tmp_path / 'videos').iterdir()] == []
        assert client.get('/v1/admin/jobs', headers=ADMIN).json()['count'] == 0
        # a server path outside the data roots is answered as missing
        r = client.post('/v1/admin/videos', headers=ADMIN, json={
            'video_path': '/etc/hostname', 'camera_id': 1, 'start_time': '2026-05-01T08:00:00'})
        assert r.status_code == 400 and 'AMG_DATA_ROOTS' in r.json()['detail']


def test_an_interrupted_ingest_leaves_whole_sightings_and_a_rerun_adds_only_the_rest(tmp_path):
    """The job's own code against a database (no service): a cancel midway keeps the sightings it finished, each
    whole; the run again over the same file stores the tracks it had not, none twice."""
    import datetime as dt

    from sqlalchemy import func, select

    from app.ingest import IngestParams, run_ingest
    from reid.progress import Cancelled
    from storage.db import GalleryImage, Sighting, make_engine, make_sessionmaker
    from storage.images import ImageStore
    from storage.migrate import upgrade

    # long enough for some tracks to end before the cancel (a track ends 2 s after its last box)
    video = generate_videos(tmp_path / 'video', VideoSynthConfig(
        num_people=4, num_cams=1, seconds=14, size=(256, 192), crossing_seconds=(2.0, 3.0),
        travel_seconds=(0.5, 1.0), seed=5))[1]
    truth = tmp_path / 'video' / 'cam1.gt.txt'
    database = make_engine(f'sqlite:///{tmp_path / "gallery.db"}')
    upgrade(database)
    Session = make_sessionmaker(database)
    images = ImageStore(tmp_path / 'images')
    params = IngestParams(video_path=str(video), camera_id=3, start_time=dt.datetime(2026, 5, 1, 8),
                          boxes_path=str(truth), max_crops=3)
    reports = []

    def stop_midway(event) -> bool:
        reports.append(event)
        return len(reports) >= 12  # 120 frames of 140 in: some tracks have ended, one is open

    with pytest.raises(Cancelled):
        run_ingest(params, Session, database, images, stop_midway)

    def whole_sightings():
        with Session() as s:
            counts = dict(s.execute(select(GalleryImage.sighting_id, func.count(GalleryImage.id))
                                    .group_by(GalleryImage.sighting_id)).all())
            sightings = s.scalars(select(Sighting)).all()
            assert all(counts.get(x.id) == x.crop_count >= 1 for x in sightings)  # no half sighting
            return sorted((x.track_id, x.first_time) for x in sightings)

    partial = whole_sightings()
    assert partial
    done = run_ingest(params, Session, database, images, lambda event: False)
    everything = whole_sightings()
    assert set(partial) < set(everything) and len(set(everything)) == len(everything)  # the rest, none twice
    assert done['sightings'] == len(everything) - len(partial)
    again = run_ingest(params, Session, database, images, lambda event: False)
    assert again['sightings'] == 0 and whole_sightings() == everything


def test_the_active_models_visibility_head_chooses_the_crops(tmp_path, visibility_checkpoint):
    """An ingest lends the active model's visibility head to the choice of each track's crops (their quality times
    the share of the person each shows); without a model, or one it cannot open, the crops are chosen as before."""
    import datetime as dt

    import numpy as np
    from sqlalchemy import select

    from app.ingest import IngestParams, active_visible_share, run_ingest
    from app.registry import register_checkpoint
    from models.embedder import Embedder
    from storage import crud
    from storage.db import GalleryImage, Sighting, make_engine, make_sessionmaker
    from storage.images import ImageStore
    from storage.migrate import upgrade
    from video import sightings_from_video

    database = make_engine(f'sqlite:///{tmp_path / "gallery.db"}')
    upgrade(database)
    Session = make_sessionmaker(database)
    assert active_visible_share(Session) is None  # no model yet
    with Session.begin() as s:
        model = register_checkpoint(s, str(visibility_checkpoint), name='vis')
        crud.activate_model(session=s, model_id=model.id)
    share = active_visible_share(Session)
    video = generate_videos(tmp_path / 'video', ONE_CAMERA)[1]
    start = dt.datetime(2026, 5, 1, 8)
    expected = list(sightings_from_video(video, '3', start, tmp_path / 'video' / 'cam1.gt.txt', max_crops=2,
                                         visible_share=share))
    crops = [c.image for s in expected for c in s.crops]
    head = Embedder(str(visibility_checkpoint)).embed_with_visibility(crops)[1].mean(1)
    np.testing.assert_allclose([c.visible for s in expected for c in s.crops], head, atol=1e-3)
    assert np.ptp(head) > 0.05  # the head's shares differ: the choice depends on them

    params = IngestParams(video_path=str(video), camera_id=3, start_time=start,
                          boxes_path=str(tmp_path / 'video' / 'cam1.gt.txt'), max_crops=2)
    done = run_ingest(params, Session, database, ImageStore(tmp_path / 'images'), lambda event: False,
                      visible_share=share)
    assert done['chosen_by_visibility'] and done['sightings'] == len(expected)
    with Session() as s:
        stored = s.scalars(select(Sighting).order_by(Sighting.first_time, Sighting.track_id)).all()
        frames = {x.id: sorted(s.scalars(select(GalleryImage.frame).where(GalleryImage.sighting_id == x.id)))
                  for x in stored}
    by_track = {(x.track_id, x.first_time): x for x in stored}
    for sighting in expected:
        row = by_track[(sighting.track_id, sighting.first_time.replace(tzinfo=None))]  # stored naive UTC
        assert row.quality == pytest.approx(sighting.crops[0].quality, abs=1e-6)  # the chosen best crop's
        assert frames[row.id] == sorted(c.frame for c in sighting.crops)

    with Session.begin() as s:  # a model whose file has gone: crops chosen without it, logged
        crud.active_model(session=s).path = str(tmp_path / 'gone.safetensors')
    assert active_visible_share(Session) is None
