"""Schema migrations: a database made by the schema before migrations existed is stamped and upgraded with its rows;
a fresh one migrated from nothing matches the tables in storage.db exactly."""
import threading

from datetime import datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, DateTime, Integer, String, column, create_engine, insert, select, table, text

from storage import crud
from storage.db import Base, GalleryImage, Job, make_engine, make_sessionmaker
from storage.migrate import FIRST_REVISION, _config, current_revision, head_revision, upgrade


def test_a_database_from_before_migrations_is_upgraded_with_its_rows(database_url):
    old = create_engine(database_url)
    with old.begin() as conn:  # revision 0001's schema, without alembic_version: what make_engine made before
        cfg = _config(conn)
        command.upgrade(cfg, FIRST_REVISION)
        conn.execute(text('DROP TABLE alembic_version'))
    images = table('gallery_images', column('id', Integer), column('person_id', Integer), column('tags', JSON),
                   column('image_sha256', String), column('image_path', String), column('camera_id', Integer),
                   column('source_name', String), column('created_at', DateTime))
    with old.begin() as conn:
        conn.execute(insert(Job).values(kind='train', state='succeeded', params={'data_dir': 'd', 'wd': 0.01,
                                                                                   'workers': 2}))
        conn.execute(insert(images), [
            dict(person_id=3, image_sha256='a' * 64, image_path='/x.jpg', camera_id=0, source_name='',
                 created_at=datetime(2026, 1, 1), tags=tags) for tags in (['b', 'a', 'b'], [], None)])
    old.dispose()
    engine = make_engine(database_url)
    assert current_revision(engine) == head_revision() != '0001'
    with engine.connect() as conn:
        assert conn.execute(select(Job.params)).scalar_one() == {'data_dir': 'd', 'weight_decay': 0.01,
                                                                  'num_workers': 2}
        assert conn.execute(select(GalleryImage.person_id)).scalars().all() == [3, 3, 3]
    with make_sessionmaker(engine)() as s:  # the JSON tags became rows, in the uploader's order, once each
        assert [r.tags for r in s.scalars(select(GalleryImage).order_by(GalleryImage.id))] == [['b', 'a'], [], []]
        assert crud.list_images(session=s, tags=['a'])[1] == 1


def test_migrations_build_exactly_the_declared_tables(database_url):
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={'compare_type': True}), Base.metadata)
    assert diff == []  # a change to storage/db.py without its migration fails here


def test_replicas_starting_together_migrate_one_at_a_time(tmp_path):
    url = f'sqlite:///{tmp_path / "amg.db"}'
    errors = []

    def start():
        try:
            upgrade(create_engine(url))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and current_revision(create_engine(url)) == head_revision()


def test_an_existing_gallery_becomes_sightings_of_one(database_url):
    """Migration 0005 on a gallery at revision 0004: every image is a sighting of one (its camera, its timestamp as
    the time range, itself as the best crop), ids go on where they were, and new uploads keep working."""
    old = create_engine(database_url)
    with old.begin() as conn:
        command.upgrade(_config(conn), '0004')
    images = table('gallery_images', column('id', Integer), column('person_id', Integer),
                   column('image_sha256', String), column('image_path', String), column('camera_id', Integer),
                   column('source_name', String), column('timestamp', DateTime), column('created_at', DateTime))
    taken = datetime(2026, 5, 1, 12, 30)
    with old.begin() as conn:
        conn.execute(insert(images), [
            dict(person_id=pid, image_sha256='a' * 64, image_path='/x.jpg', camera_id=cam, source_name='',
                 timestamp=ts, created_at=datetime(2026, 1, 1)) for pid, cam, ts in ((3, 1, taken), (4, 2, None),
                                                                                      (5, 0, None))])
        conn.execute(images.delete().where(images.c.person_id == 5))  # the newest id, handed out, then deleted
        conn.execute(text("INSERT INTO gallery_changes (image_id, op, created_at) VALUES (3, 'add', '2026-01-01'), "
                          "(3, 'delete', '2026-01-01')"))
    old.dispose()
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as s:
        rows = list(s.scalars(select(GalleryImage).order_by(GalleryImage.id)))
        assert [(r.id, r.person_id, r.sighting_id, r.frame, r.box) for r in rows] == [(1, 3, 1, None, None),
                                                                                      (2, 4, 2, None, None)]
        one, two = (crud.get_sighting(session=s, sighting_id=i) for i in (1, 2))
        assert (one.camera_id, one.first_time, one.last_time, one.crop_count, one.best_image_id) == (1, taken, taken,
                                                                                                      1, 1)
        assert (two.camera_id, two.first_time, two.crop_count, two.best_image_id) == (2, None, 1, 2)
    with make_sessionmaker(engine).begin() as s:  # an upload after the migration: ids never reused
        new = crud.add_images(session=s, rows=[dict(person_id=None, camera_id=7, image_sha256='b' * 64,
                                                    image_path='/y.jpg')])[0]
    with make_sessionmaker(engine)() as s:
        assert new.id == 4 and new.person_id is None  # 3 was handed out before
        sighting = crud.get_sighting(session=s, sighting_id=new.sighting_id)
        assert sighting.id > 2 and (sighting.camera_id, sighting.crop_count, sighting.best_image_id) == (7, 1, 4)
