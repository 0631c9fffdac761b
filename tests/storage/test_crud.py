from datetime import datetime

import numpy as np

from sqlalchemy import func, select

from storage import crud
from storage.db import GalleryTag, make_engine, make_sessionmaker


def test_gallery_filters_models_and_jobs(database_url):
    Session = make_sessionmaker(make_engine(database_url))
    with Session.begin() as s:
        rows = crud.add_images(session=s, rows=[
            dict(person_id=p, camera_id=c, timestamp=datetime(2026, 1, d), tags=t, image_sha256=f'{i:064x}',
                 image_path=f'/x/{i}.jpg')
            for i, (p, c, d, t) in enumerate([(1, 1, 1, ['a']), (1, 2, 2, ['a', 'b']), (2, 1, 3, []), (3, 3, 4, ['b'])])])
        ids = [r.id for r in rows]
        model = crud.add_model(session=s, path='/m.safetensors', min_score=0.5)
        other = crud.add_model(session=s, path='/n.safetensors')
        crud.activate_model(session=s, model_id=model.id)
    def listed(**filters):
        page, total = crud.list_images(session=s, limit=100, **filters)
        assert total == len(page)
        return [r.id for r in page]

    with Session() as s:
        assert listed(person_id=1) == ids[:2]
        assert listed(camera_ids=[1, 3]) == [ids[0], ids[2], ids[3]]
        assert listed(tags=['b']) == [ids[1], ids[3]]
        assert listed(tags=['b', 'a']) == [ids[1]] and listed(tags=['a', 'zz']) == []
        assert listed(tags=['a'], camera_ids=[2]) == [ids[1]]
        assert listed(after=datetime(2026, 1, 2), before=datetime(2026, 1, 3)) == ids[1:3]
        page, total = crud.list_images(session=s, offset=1, limit=2)
        assert total == 4 and [r.id for r in page] == ids[1:3]
        _, total = crud.list_images(session=s, limit=1, tags=['a'])
        assert total == 2  # the count, not the page
        assert crud.active_model(session=s).id == model.id
        assert crud.ids_not_embedded_by(session=s, model_id=model.id).tolist() == []
        assert crud.image_id_array(session=s, chunk=3).tolist() == ids  # read in chunks
        records = crud.gallery_records(session=s, image_ids=ids + [10 ** 6])
        assert sorted(records) == ids and records[ids[1]].tags == ['a', 'b'] and records[ids[2]].tags == []
        assert crud.get_image(session=s, image_id=ids[1]).tags == ['a', 'b']  # the uploader's order
    with Session.begin() as s:
        crud.set_model_version(session=s, image_ids=ids[3:], model_id=other.id)
        assert crud.delete_image(session=s, image_id=ids[1])
    with Session() as s:
        assert crud.ids_not_embedded_by(session=s, model_id=model.id).tolist() == [ids[3]]
        assert s.scalar(select(func.count()).select_from(GalleryTag)) == 2  # the deleted image's tags went too
    with Session.begin() as s:
        job = crud.create_job(session=s, kind='prune', params={})
        crud.update_job(session=s, job_id=job.id, state='running', log_line='x' * 50, max_log_chars=30)
    with Session.begin() as s:
        assert len(crud.get_job(session=s, job_id=job.id).log) == 30  # only the tail is kept
        assert crud.interrupt_running_jobs(session=s) == 1
    with Session() as s:
        assert crud.get_job(session=s, job_id=job.id).state == 'interrupted'


def test_vectors_round_trip_as_float16_and_every_change_is_logged(database_url):
    Session = make_sessionmaker(make_engine(database_url))
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3, 8)).astype(np.float32)
    with Session.begin() as s:
        model = crud.add_model(session=s, path='/m.safetensors')
        other = crud.add_model(session=s, path='/n.safetensors')
        rows = crud.add_images(session=s, vectors=xb, model_id=model.id, rows=[
            dict(person_id=i, image_sha256=f'{i:064x}', image_path=f'/x/{i}.jpg') for i in range(3)])
        ids = [r.id for r in rows]
    with Session.begin() as s:
        got = crud.get_vectors(session=s, model_id=model.id, image_ids=ids + [10 ** 6])
        assert sorted(got) == ids
        for i, row_id in enumerate(ids):
            np.testing.assert_array_equal(got[row_id], xb[i].astype(np.float16).astype(np.float32))
        assert crud.get_vectors(session=s, model_id=other.id, image_ids=ids) == {}
        crud.put_vectors(session=s, model_id=model.id, image_ids=ids[:1], vectors=xb[1:2])  # replaces
        assert crud.delete_image(session=s, image_id=ids[1])
    with Session() as s:
        got = crud.get_vectors(session=s, model_id=model.id, image_ids=ids)
        assert sorted(got) == [ids[0], ids[2]]  # the deleted image's vector went with it
        np.testing.assert_allclose(got[ids[0]], xb[1], atol=1e-2)
        log = crud.changes_after(session=s, seq=0)
        assert [(image_id, op) for _, image_id, op in log] == [(i, 'add') for i in ids] + [(ids[1], 'delete')]
        seqs = [seq for seq, _, _ in log]
        assert seqs == sorted(seqs) and crud.last_change_seq(session=s) == seqs[-1]
        assert crud.changes_after(session=s, seq=seqs[2]) == log[3:]
        assert crud.changes_after(session=s, seq=seqs[-1], also=[seqs[0]]) == log[:1]  # an awaited older seq
        assert crud.count_images(session=s) == 2


def test_a_deleted_images_id_is_never_handed_out_again(database_url):
    """A new row never takes a deleted row's id (SQLite without AUTOINCREMENT gives max(id) + 1, so deleting the
    newest image handed its id to the next upload, and replicas showed the old row's cached person for it)."""
    Session = make_sessionmaker(make_engine(database_url))
    row = dict(person_id=1, camera_id=1, image_sha256='0' * 64, image_path='/x/0.jpg')
    with Session.begin() as s:
        first, newest = [r.id for r in crud.add_images(session=s, rows=[dict(row), dict(row)])]
    with Session.begin() as s:
        assert crud.delete_image(session=s, image_id=newest)
    with Session.begin() as s:
        (again,) = [r.id for r in crud.add_images(session=s, rows=[dict(row)])]
    assert again > newest > first


def test_the_migration_to_never_reused_ids_keeps_rows_and_skips_deleted_ids(tmp_path):
    """Revision 0004 on an existing SQLite gallery: its rows and tags stay, and ids the change log handed out
    before (rows deleted since) are not handed out again."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from storage.migrate import _config
    url = f'sqlite:///{tmp_path / "old.db"}'
    old = create_engine(url)
    with old.begin() as conn:
        command.upgrade(_config(conn), '0003')
        conn.execute(text("INSERT INTO gallery_images (id, person_id, camera_id, source_name, image_sha256, "
                          "image_path, created_at) VALUES (1, 7, 2, 'a.jpg', :sha, '/x/a.jpg', '2026-01-01')"),
                     {'sha': '1' * 64})
        conn.execute(text("INSERT INTO gallery_tags (image_id, tag, position) VALUES (1, 'red', 0)"))
        for seq, (image_id, op) in enumerate([(1, 'add'), (2, 'add'), (2, 'delete')], 1):
            conn.execute(text('INSERT INTO gallery_changes (seq, image_id, op, created_at) '
                              "VALUES (:s, :i, :o, '2026-01-01')"), {'s': seq, 'i': image_id, 'o': op})
    Session = make_sessionmaker(make_engine(url))  # migrates to the head
    with Session() as s:
        kept = crud.get_image(session=s, image_id=1)
        assert (kept.person_id, kept.camera_id, kept.tags) == (7, 2, ['red'])
    with Session.begin() as s:
        (new,) = crud.add_images(session=s, rows=[dict(person_id=1, camera_id=1, image_sha256='0' * 64,
                                                       image_path='/x/0.jpg')])
    assert new.id == 3  # 2 was handed out, then deleted


def test_a_sighting_keeps_its_count_and_best_crop_as_images_go(database_url):
    Session = make_sessionmaker(make_engine(database_url))
    with Session.begin() as s:
        sighting = crud.add_sighting(session=s, camera_id=2, first_time=datetime(2026, 1, 1, 8),
                                     last_time=datetime(2026, 1, 1, 9), video='v.mp4', track_id=4)
        rows = crud.add_images(session=s, rows=[
            dict(person_id=None, camera_id=2, sighting_id=sighting.id, frame=f, box=[1.0, 2.0, 3.0, 4.0],
                 image_sha256=f'{f:064x}', image_path=f'/x/{f}.png') for f in (5, 9, 12)])
        crud.count_sighting(session=s, sighting=sighting)
        alone = crud.add_images(session=s, rows=[dict(person_id=1, camera_id=3, image_sha256='f' * 64,
                                                      image_path='/y.jpg', timestamp=datetime(2026, 2, 1))])[0]
    ids = [r.id for r in rows]
    with Session() as s:
        got = crud.get_sighting(session=s, sighting_id=sighting.id)
        assert (got.crop_count, got.best_image_id) == (3, ids[0])
        assert crud.list_images(session=s, sighting_id=sighting.id)[1] == 3
        of_one = crud.get_sighting(session=s, sighting_id=alone.sighting_id)
        assert (of_one.camera_id, of_one.crop_count, of_one.best_image_id, of_one.first_time) == \
            (3, 1, alone.id, datetime(2026, 2, 1))
        assert [r.id for r in crud.list_sightings(session=s, camera_ids=[2])[0]] == [sighting.id]
        assert crud.list_sightings(session=s, after=datetime(2026, 1, 1, 9, 30))[1] == 1  # only the one of Feb 1
    for image_id, left, best in ((ids[0], 2, ids[1]), (ids[2], 1, ids[1])):
        with Session.begin() as s:
            assert crud.delete_image(session=s, image_id=image_id)
        with Session() as s:
            got = crud.get_sighting(session=s, sighting_id=sighting.id)
            assert (got.crop_count, got.best_image_id) == (left, best)
    with Session.begin() as s:
        crud.delete_image(session=s, image_id=ids[1])
    with Session() as s:
        assert crud.get_sighting(session=s, sighting_id=sighting.id) is None  # gone with its last image
