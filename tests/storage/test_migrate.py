"""Schema migrations: a database made by the schema before migrations existed is stamped and upgraded with its rows;
a fresh one migrated from nothing matches the tables in storage.db exactly."""
import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

from storage.db import Base, GalleryImage, Job, make_engine
from storage.migrate import current_revision, head_revision, upgrade


def test_a_database_from_before_migrations_is_upgraded_with_its_rows(database_url):
    old = create_engine(database_url)
    Base.metadata.create_all(old)  # what make_engine did before migrations existed
    with old.begin() as conn:
        conn.execute(insert(Job).values(kind='train', state='succeeded', params={'data_dir': 'd', 'wd': 0.01,
                                                                                   'workers': 2}))
        conn.execute(insert(GalleryImage).values(person_id=3, image_sha256='a' * 64, image_path='/x.jpg'))
    old.dispose()
    engine = make_engine(database_url)
    assert current_revision(engine) == head_revision() != '0001'
    with engine.connect() as conn:
        assert conn.execute(select(Job.params)).scalar_one() == {'data_dir': 'd', 'weight_decay': 0.01,
                                                                  'num_workers': 2}
        assert conn.execute(select(GalleryImage.person_id)).scalar_one() == 3


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
