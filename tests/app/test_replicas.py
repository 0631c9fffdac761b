"""Two API replicas on one database (SQLite file and PostgreSQL): with FAISS each keeps its own index, with Milvus both
share one collection (and hold no vectors themselves); either way each follows the other's uploads, deletions and
model activations through the database's gallery change log."""

import pytest
import torch

from app.state import register_checkpoint
from models.checkpoints import load_model, save_checkpoint
from tests.app.conftest import API_KEY, files_for, make_client, ready_with, wait_for
from storage.faiss_engine import FaissEngine
from tests.conftest import database_url_for, engine_settings

pytestmark = pytest.mark.slow


def matches(client, path, k=20):
    r = client.post('/v1/search', files=files_for([path]), data={'min_score': '-1', 'k': str(k)})
    assert r.status_code == 200, r.text
    body = r.json()
    return body['model_id'], [(m['image_id'], round(m['score'], 5)) for m in body['results'][0]['matches']]


@pytest.mark.parametrize('kind', ['sqlite-faiss', 'postgresql-faiss', 'sqlite-milvus', 'postgresql-milvus',
                                  'postgresql-milvusserver'])
def test_two_replicas_share_one_database(request, kind, tmp_path, tmp_path_factory, service_model, dataset):
    database, engine = kind.split('-')
    url = database_url_for(request, database, tmp_path_factory)
    shared = tmp_path / 'shared'  # images on a shared volume; indexes per replica
    server = request.getfixturevalue('milvus_lite_server') if engine == 'milvus' else ''
    common = dict(database_url=url, sync_seconds=0.2,
                  **engine_settings(engine, tmp_path_factory, uri=server, request=request))
    with make_client(shared, service_model, index_dir=tmp_path / 'a', **common) as a, \
            make_client(shared, service_model, index_dir=tmp_path / 'b', **common) as b:
        gallery = [r for r in dataset.gallery if r.pid > 0][:30]
        r = a.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                   data={'person_id': ','.join(str(g.pid) for g in gallery)})
        assert r.status_code == 201
        query = dataset.query[0].path
        model_a, on_a = matches(a, query)
        assert len(on_a) == 20
        wait_for(lambda: matches(b, query) == (model_a, on_a))  # same ids, same scores (float16 vectors in the DB)

        victim = on_a[0][0]
        assert b.delete(f'/v1/gallery/{victim}').status_code == 200
        wait_for(lambda: a.app.state.service.snapshot().engine.count() == len(gallery) - 1)
        assert victim not in [i for i, _ in matches(a, query)[1]]
        ready_with(a, gallery_vectors=len(gallery) - 1)
        for client in (a, b):  # on Milvus no replica holds vectors of its own
            assert isinstance(client.app.state.service.snapshot().engine, FaissEngine) == (engine == 'faiss')

        # a second model, activated on replica A: B follows, reading the vectors A stored instead of re-embedding
        model = load_model(service_model)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        path = save_checkpoint(model, tmp_path / 'second.safetensors')
        with a.app.state.service.Session.begin() as s:
            second = register_checkpoint(s, str(path), name='second').id
        def images_embedded_on_b() -> float:
            return b.app.state.service.metrics.registry.get_sample_value('amg_embed_batch_size_sum')
        embeds_on_b = images_embedded_on_b()
        assert a.post(f'/v1/admin/models/{second}/activate', headers={'X-API-Key': API_KEY}).status_code == 202
        wait_for(lambda: matches(a, query)[0] == second)
        # wait on B without searching (each search embeds its query), then search once
        wait_for(lambda: b.get('/readyz').json().get('model_id') == second)
        model_b, on_b = matches(b, query)
        assert model_b == second and on_b == matches(a, query)[1] and on_b != on_a
        assert images_embedded_on_b() - embeds_on_b == 1  # the one query: no gallery image was embedded again
        for client in (a, b):  # each as its maintenance loop last checked it (a round: sync_seconds)
            ready_with(client, status='ready', model_id=second, gallery_vectors=len(gallery) - 1)


@pytest.mark.parametrize('engine', ['faiss', 'milvus'])
def test_a_replica_forgets_rows_another_replica_changed(request, engine, tmp_path, tmp_path_factory, service_model,
                                                        dataset):
    """Each replica's row caches follow the change log on their own position: on a shared engine the other replica
    applied the change to the engine (so this one's engine sync finds nothing to do), and a cached deleted row must
    still be forgotten here."""
    url = database_url_for(request, 'sqlite', tmp_path_factory)
    server = request.getfixturevalue('milvus_lite_server') if engine == 'milvus' else ''
    common = dict(database_url=url, sync_seconds=0.2,
                  **engine_settings(engine, tmp_path_factory, uri=server, request=request))
    shared = tmp_path / 'shared'
    with make_client(shared, service_model, index_dir=tmp_path / 'a', **common) as a, \
            make_client(shared, service_model, index_dir=tmp_path / 'b', **common) as b:
        gallery = [r for r in dataset.gallery if r.pid > 0][:12]
        assert a.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                      data={'person_id': ','.join(str(g.pid) for g in gallery)}).status_code == 201
        query = dataset.query[0].path
        wait_for(lambda: len(matches(b, query)[1]) == len(gallery))
        victim = matches(a, query)[1][0][0]  # A has its row cached now
        rows_a = a.app.state.service.match_rows
        assert victim in rows_a.cached([victim])[0]
        assert b.delete(f'/v1/gallery/{victim}').status_code == 200
        wait_for(lambda: victim not in rows_a.cached([victim])[0], what='replica A forgetting the deleted row')
        assert victim not in [i for i, _ in matches(a, query)[1]]
