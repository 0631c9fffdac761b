"""Background jobs through the admin API: a prune job runs in a worker process, its model is activated and serves."""
import time

import pytest

from tests.app.conftest import API_KEY, files_for, make_client, ready_with

ADMIN = {'X-API-Key': API_KEY}
DONE = ('succeeded', 'failed', 'cancelled', 'interrupted')


def wait_for(client, job_id, states, timeout=300):
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f'/v1/admin/jobs/{job_id}', headers=ADMIN).json()
        seen.append(job)
        if job['state'] in states:
            return job, seen
        time.sleep(0.5)
    raise AssertionError(f'job {job_id} did not reach {states}: {seen[-1]}')


@pytest.mark.slow
def test_prune_job_progress_activation_and_serving(tmp_path, service_model, dataset, learnable_root):
    with make_client(tmp_path, service_model) as client:
        gallery = [g for g in dataset.gallery if g.pid > 0][:60]
        r = client.post('/v1/gallery', files=files_for([g.path for g in gallery]),
                        data={'person_id': ','.join(str(g.pid) for g in gallery),
                              'camera_id': ','.join(str(g.camid) for g in gallery)})
        assert r.status_code == 201
        r = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'prune', 'params': {
            'data_dir': str(learnable_root), 'prune_mode': 'head_attn', 'head_rate': 0.5, 'token_rate': 0.3,
            'iter_nums': 2, 'finetune_nums': 1, 'final_finetune': 1, 'score_batches': 2, 'batch_size': 32}})
        assert r.status_code == 202, r.text
        job_id = r.json()['id']
        job, seen = wait_for(client, job_id, DONE)
        assert job['state'] == 'succeeded', job
        assert any(0 < s['progress'] < 1 for s in seen) or job['progress'] == 1.0
        assert job['result_model_id'] is not None and 'mAP' in job['metrics']
        assert 'pruned' in job['log_tail'] and job['params']['weight_path'] == str(service_model.resolve())
        listed = client.get('/v1/admin/jobs', headers=ADMIN).json()
        assert listed['data'][0]['id'] == job_id

        new_id = job['result_model_id']
        models = client.get('/v1/admin/models', headers=ADMIN).json()
        assert [m['active'] for m in models['data']] == [True, False]
        assert client.post(f'/v1/admin/models/{new_id}/activate', headers=ADMIN).status_code == 202
        deadline = time.time() + 120
        while client.get('/v1/admin/models', headers=ADMIN).json()['activation']['state'] == 'running':
            assert time.time() < deadline
            time.sleep(0.3)
        assert client.get('/v1/admin/models', headers=ADMIN).json()['activation']['state'] == 'done'
        ready = ready_with(client, model_id=new_id, gallery_vectors=len(gallery))
        # the worker exported the pruned model, so OpenVINO (where installed) or ONNX Runtime serves it
        from models.openvino_backend import openvino_available
        assert ready['backend'] == ('openvino' if openvino_available() else 'onnx')
        assert f'amg_embed_backend{{backend="{ready["backend"]}",precision="{ready["precision"]}"}} 1.0' in \
            client.get('/metrics').text
        r = client.post('/v1/search', files=files_for([gallery[0].path]), data={'min_score': '-1'}).json()
        assert r['model_id'] == new_id and r['results'][0]['matches'][0]['cosine'] > 0.99  # finds itself
        assert client.post('/v1/admin/models/999/activate', headers=ADMIN).status_code == 404


@pytest.mark.slow
def test_cancel_and_interrupted_jobs(tmp_path, learnable_root):
    params = {'data_dir': str(learnable_root), 'epochs': 200, 'batch_size': 16, 'img_size': [64, 32],
              'val_fraction': 0.0}
    with make_client(tmp_path) as client:  # no model: the admin API still trains one
        job_id = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'train', 'params': params}).json()['id']
        wait_for(client, job_id, ('running',), timeout=120)
        r = client.post(f'/v1/admin/jobs/{job_id}/cancel', headers=ADMIN)
        assert r.status_code == 202, (r.text, client.get(f'/v1/admin/jobs/{job_id}', headers=ADMIN).json())
        job, _ = wait_for(client, job_id, DONE, timeout=120)
        assert job['state'] == 'cancelled'
        assert client.post(f'/v1/admin/jobs/{job_id}/cancel', headers=ADMIN).status_code == 409
        assert client.post('/v1/admin/jobs/9999/cancel', headers=ADMIN).status_code == 404
        bad = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'prune', 'params': {
            'data_dir': str(learnable_root), 'prune_rate': 0.5}})
        assert bad.status_code == 409 and 'no active model' in bad.json()['detail']
        second = client.post('/v1/admin/jobs', headers=ADMIN, json={'kind': 'train', 'params': params}).json()['id']
        wait_for(client, second, ('running',), timeout=120)
    # the service stopped while the job ran: after a restart it is reported as interrupted
    with make_client(tmp_path) as client:
        job = client.get(f'/v1/admin/jobs/{second}', headers=ADMIN).json()
        assert job['state'] == 'interrupted' and 'stopped' in job['error']
