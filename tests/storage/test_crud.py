from datetime import datetime

from storage import crud
from storage.db import make_engine, make_sessionmaker


def test_gallery_filters_models_and_jobs(tmp_path):
    Session = make_sessionmaker(make_engine(f'sqlite:///{tmp_path / "t.db"}'))
    with Session.begin() as s:
        rows = crud.add_images(session=s, rows=[
            dict(person_id=p, camera_id=c, timestamp=datetime(2026, 1, d), tags=t, image_sha256=f'{i:064x}',
                 image_path=f'/x/{i}.jpg')
            for i, (p, c, d, t) in enumerate([(1, 1, 1, ['a']), (1, 2, 2, ['a', 'b']), (2, 1, 3, []), (3, 3, 4, ['b'])])])
        ids = [r.id for r in rows]
        model = crud.add_model(session=s, path='/m.safetensors', min_score=0.5)
        crud.activate_model(session=s, model_id=model.id)
    with Session() as s:
        assert crud.filter_image_ids(session=s, person_id=1) == ids[:2]
        assert crud.filter_image_ids(session=s, camera_ids=[1, 3]) == [ids[0], ids[2], ids[3]]
        assert crud.filter_image_ids(session=s, tags=['b']) == [ids[1], ids[3]]
        assert crud.filter_image_ids(session=s, after=datetime(2026, 1, 2), before=datetime(2026, 1, 3)) == ids[1:3]
        page, total = crud.list_images(session=s, offset=1, limit=2)
        assert total == 4 and [r.id for r in page] == ids[1:3]
        assert crud.active_model(session=s).id == model.id
        assert all(r.model_version == model.id for r in crud.all_images(session=s))
        assert crud.images_needing_vectors(session=s, indexed_ids=ids[:3], model_id=model.id)[0].id == ids[3]
    with Session.begin() as s:
        job = crud.create_job(session=s, kind='prune', params={})
        crud.update_job(session=s, job_id=job.id, state='running', log_line='x' * 50, max_log_chars=30)
    with Session.begin() as s:
        assert len(crud.get_job(session=s, job_id=job.id).log) == 30  # only the tail is kept
        assert crud.interrupt_running_jobs(session=s) == 1
    with Session() as s:
        assert crud.get_job(session=s, job_id=job.id).state == 'interrupted'
