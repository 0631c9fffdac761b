"""One home for options: every CLI option of train and prune is a job parameter with the same meaning, and
cancelling a train job and a prune job takes the same path."""
import threading
import time

import pytest

from app.cli import build_parser
from app.jobs import job_config, run_job
from app.schemas import JOB_PARAMS, FinetuneJobParams
from pruning.schedule import PruneConfig
from reid.engine import TrainConfig
from reid.options import config_from_args
from storage import crud
from storage.db import JobKind, JobState, make_engine, make_sessionmaker

# a value other than the default for every option (a new option without one here fails the test: add it)
SAMPLES = {
    'recipe': ('la', 'la'), 'erasing': ('0.25', 0.25), 'paste': ('0.75', 0.75), 'crop_pad': ('6', 6),
    'instances': ('2', 2), 'triplet': ('0.5', 0.5), 'triplet_margin': ('0.2', 0.2), 'label_smoothing': ('0.05', 0.05),
    'data_dir': ('D', 'D'), 'model': ('amg_vit_small_patch16_224', 'amg_vit_small_patch16_224'),
    'dataset': ('o-duke', 'o-duke'), 'weight_path': ('W.safetensors', 'W.safetensors'),
    'img_size': (['96', '48'], (96, 48)), 'epochs': ('7', 7), 'batch_size': ('24', 24), 'lr': ('0.002', 0.002),
    'weight_decay': ('0.01', 0.01), 'lmbd': ('4', 4.0), 'blockwise': (None, True), 'unfreeze_every': ('3', 3),
    'lr_decay': ('0.5', 0.5), 'warmup_epochs': ('1', 1), 'val_fraction': ('0.2', 0.2), 'num_workers': ('1', 1),
    'seed': ('9', 9), 'prune_mode': ('head_entropy', 'head_entropy'), 'prune_rate': ('0.3', 0.3),
    'head_rate': ('0.5', 0.5), 'token_rate': ('0.25', 0.25), 'iter_nums': ('3', 3), 'finetune_nums': ('2', 2),
    'final_finetune': ('4', 4), 'distill_type': ('hard', 'hard'), 'distill_alpha': ('0.4', 0.4),
    'distill_tau': ('2', 2.0), 'token_mode': ('drop', 'drop'), 'drop_blocks': ('2,4', (2, 4)),
    'fuse_token': (None, True), 'score_batches': ('5', 5), 'int8': (None, True), 'visibility': ('0.5', 0.5),
}
BASE = {JobKind.TRAIN: dict(data_dir='D'),
        JobKind.PRUNE: dict(data_dir='D', weight_path='W.safetensors', prune_mode='head_attn', head_rate=0.3)}
CASES = [(kind, name) for kind in (JobKind.TRAIN, JobKind.PRUNE) for name in JOB_PARAMS[kind].model_fields]


def _cli_config(kind: JobKind, name: str):
    command = 'train' if kind == JobKind.TRAIN else 'prune'
    argv = [command]
    for field, value in {**BASE[kind], name: None}.items():
        flag_value = SAMPLES[field][0] if field == name else value
        argv.append(f'--{field.replace("_", "-")}')
        if flag_value is not None:
            argv += flag_value if isinstance(flag_value, list) else [str(flag_value)]
    if kind == JobKind.PRUNE and name == 'prune_mode':
        argv += ['--prune-rate', '0.3']
    args = build_parser().parse_args(argv)
    return config_from_args(TrainConfig if kind == JobKind.TRAIN else PruneConfig, args)


@pytest.mark.parametrize('kind, name', CASES)
def test_a_job_can_ask_for_every_cli_option(kind, name):
    assert name in SAMPLES, f'give the new option {name!r} a sample value here'
    expected = SAMPLES[name][1]
    from_cli = _cli_config(kind, name)
    params = dict(BASE[kind], **{name: expected})
    if kind == JobKind.PRUNE and name == 'prune_mode':
        params['prune_rate'] = 0.3
    stored = JOB_PARAMS[kind](**params).model_dump(mode='json')  # what the API stores in the job row
    from_job = job_config(kind, stored, 'runs', 1)
    assert getattr(from_cli, name) == getattr(from_job, name) == expected
    config = TrainConfig if kind == JobKind.TRAIN else PruneConfig
    assert expected != config.model_fields[name].default  # the test does ask for something


def test_cli_options_and_job_parameters_are_the_same_set():
    for kind, config, command in ((JobKind.TRAIN, TrainConfig, 'train'), (JobKind.PRUNE, PruneConfig, 'prune')):
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        flags = {a.dest for a in sub._actions if a.dest != 'help'}
        params = set(JOB_PARAMS[kind].model_fields)
        assert params == flags - set(config.SERVER_OWNED)
        assert set(config.SERVER_OWNED) - {'extra'} <= flags  # the CLI also sets what the server owns for jobs
    assert set(FinetuneJobParams.model_fields) < set(JOB_PARAMS[JobKind.PRUNE].model_fields)


@pytest.mark.parametrize('bad', [dict(lr=float('nan')), dict(lr=float('inf')), dict(epochs=0),
                                 dict(img_size=[8, 8]), dict(output_dir='/etc'), dict(recipe='sgd')])
def test_bad_job_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        JOB_PARAMS[JobKind.TRAIN](data_dir='D', **bad)


@pytest.mark.slow
def test_cancelling_a_train_job_and_a_prune_job_take_the_same_path(tmp_path, synth_root, trained, monkeypatch):
    monkeypatch.setattr('app.jobs._yield_to_queries', lambda nice: None)  # this is the test process
    url = f'sqlite:///{tmp_path / "jobs.db"}'
    Session = make_sessionmaker(make_engine(url))
    params = {JobKind.TRAIN: dict(data_dir=str(synth_root), img_size=[64, 32], epochs=100, batch_size=8,
                                  val_fraction=0.0),
              JobKind.PRUNE: dict(data_dir=str(synth_root), weight_path=str(trained), batch_size=8,
                                  prune_mode='attn', prune_rate=0.3, iter_nums=50, finetune_nums=1)}
    ends = {}
    for kind, p in params.items():
        with Session.begin() as s:
            job_id = crud.create_job(session=s, kind=kind, params=p).id

        def cancel_when_running() -> None:  # as POST /v1/admin/jobs/{id}/cancel does
            deadline = time.time() + 120
            while time.time() < deadline:
                with Session.begin() as s:
                    if crud.get_job(session=s, job_id=job_id).state == JobState.RUNNING:
                        crud.update_job(session=s, job_id=job_id, state=JobState.CANCELLING)
                        return
                time.sleep(0.01)
        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        run_job(job_id, url, str(tmp_path / kind))
        canceller.join()
        with Session() as s:
            job = crud.get_job(session=s, job_id=job_id)
            ends[kind] = (job.state, job.error, job.log.splitlines()[-1], job.result_model_id)
    assert ends[JobKind.TRAIN] == ends[JobKind.PRUNE] == (JobState.CANCELLED, None, 'cancelled', None)


def test_the_openapi_document_shows_every_job_option_of_every_kind(tmp_path):
    from tests.app.conftest import make_client
    with make_client(tmp_path) as client:
        doc = client.get('/openapi.json').json()
    body = doc['paths']['/v1/admin/jobs']['post']['requestBody']['content']['application/json']['schema']
    schemas = doc['components']['schemas']
    mapping = body['discriminator']['mapping']
    assert body['discriminator']['propertyName'] == 'kind' and set(mapping) == {'train', 'prune', 'finetune', 'adapt'}
    for kind, model in (('train', JOB_PARAMS[JobKind.TRAIN]), ('prune', JOB_PARAMS[JobKind.PRUNE]),
                        ('finetune', FinetuneJobParams), ('adapt', JOB_PARAMS[JobKind.ADAPT])):
        create = schemas[mapping[kind].rsplit('/', 1)[1]]
        params = schemas[create['properties']['params']['$ref'].rsplit('/', 1)[1]]
        assert set(params['properties']) == set(model.model_fields), kind
        assert params.get('additionalProperties') is False
    train = schemas['TrainJobParams']['properties']
    assert train['epochs']['minimum'] == 1 and 'data_dir' in schemas['TrainJobParams']['required']
