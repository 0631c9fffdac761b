import pytest

from reid.engine import TrainConfig, train


@pytest.fixture(scope='package')
def trained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')
    cfg = TrainConfig(data_dir=str(synth_root), name='teacher', output_dir=str(out), img_size=(64, 32), epochs=1,
                      batch_size=8, val_fraction=0.34, extra={}, seed=0)
    train(cfg, progress=False)
    return out / 'teacher' / 'best.safetensors'
