"""app.search_service.MatchRows: gallery rows for search answers, from memory once read, forgotten by the change log."""
from contextlib import contextmanager

from app.row_cache import MatchRows
from storage import crud
from storage.db import make_engine, make_sessionmaker

def _gallery(tmp_path, n=5):
    engine = make_engine(f'sqlite:///{tmp_path / "db.sqlite"}')
    Session = make_sessionmaker(engine)
    with Session.begin() as s:
        rows = crud.add_images(session=s, rows=[dict(person_id=10 + i, camera_id=i % 2, image_sha256=f'{i:064x}',
                                                     image_path=f'/x/{i}.jpg', source_name=f'{i}.jpg',
                                                     tags=['t']) for i in range(n)])
        ids = [r.id for r in rows]
    queries = []

    @contextmanager
    def counting_session():
        queries.append(1)
        with Session() as s:
            yield s
    return Session, counting_session, ids, queries

def test_rows_are_read_once_and_match_the_database(tmp_path):
    Session, counting, ids, queries = _gallery(tmp_path)
    cache = MatchRows(counting)
    first = cache.get(ids[:3])
    assert sorted(first) == ids[:3] and len(queries) == 1
    assert [first[i].person_id for i in ids[:3]] == [10, 11, 12] and first[ids[0]].tags == ['t']
    again = cache.get(ids[:3] + [ids[3], 999_999])  # three from memory, one read, one that does not exist
    assert len(queries) == 2 and sorted(again) == ids[:4]
    assert cache.get(ids[:4]) == again and len(queries) == 2

def test_forgotten_rows_are_read_again_and_deleted_ones_disappear(tmp_path):
    Session, counting, ids, queries = _gallery(tmp_path)
    cache = MatchRows(counting)
    cache.get(ids)
    with Session.begin() as s:
        crud.delete_image(session=s, image_id=ids[0])
    assert ids[0] in cache.get(ids)  # until the change log's follower says so
    cache.forget([ids[0]])
    assert ids[0] not in cache.get(ids) and len(queries) == 2

def test_a_read_that_raced_a_forget_is_not_kept(tmp_path):
    Session, counting, ids, queries = _gallery(tmp_path)

    @contextmanager
    def racing_session():  # the change log is followed while this search reads the database
        with counting() as s:
            cache.forget([ids[1]])
            yield s
    cache = MatchRows(racing_session)
    assert sorted(cache.get(ids[:2])) == ids[:2]
    cache._session_factory = counting
    cache.get(ids[:2])
    assert len(queries) == 2  # read again: nothing from the raced read was kept

def test_least_recently_used_rows_go_beyond_the_bound(tmp_path):
    Session, counting, ids, queries = _gallery(tmp_path)
    cache = MatchRows(counting, max_rows=3)
    cache.get(ids[:3])
    cache.get([ids[0]])  # ids[0] is now the most recent
    cache.get([ids[3]])  # evicts ids[1]
    before = len(queries)
    cache.get([ids[0], ids[2], ids[3]])
    assert len(queries) == before
    cache.get([ids[1]])
    assert len(queries) == before + 1
