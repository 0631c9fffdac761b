"""OpenVINO's CPU plugin on the ONNX export: the same embeddings as eager PyTorch for every model kind (fp32 to
1e-4; bf16 where the CPU runs it, cosine >= 0.999), picked by ``auto`` when installed, and falling back like ONNX
Runtime does. Skipped where the openvino package is absent."""
import logging

import numpy as np
import pytest
import torch

from models.checkpoints import load_model, save_checkpoint
from models.embedder import Embedder
from models.export import export_onnx, file_sha256
from tests.conftest import tiny_model
from tests.models.test_onnx_backend import _variants

ov = pytest.importorskip('openvino', reason='openvino is not installed (pip install -e .[openvino])')


def exported(tmp_path, kind):
    ckpt = save_checkpoint(_variants()[kind], tmp_path / f'{kind}.safetensors')
    export_onnx(load_model(ckpt), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    return ckpt


def cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize('kind', ['unpruned', 'heads', 'kv', 'drop'])
def test_openvino_equals_torch(tmp_path, kind):
    ckpt = exported(tmp_path, kind)
    x = torch.randn(5, 3, 64, 32)
    eager = Embedder(ckpt, backend='torch')
    fp32 = Embedder(ckpt, backend='openvino', ov_precision='fp32')
    assert fp32.backend == 'openvino' and fp32.precision == 'fp32'
    for batch in (x[:1], x):
        assert np.abs(fp32(batch) - eager(batch)).max() < 1e-4
    from models.openvino_backend import cpu_precision
    if cpu_precision() != 'bf16':
        pytest.skip('this CPU runs no bf16 (no AMX or AVX-512 BF16): fp32 only')
    bf16 = Embedder(ckpt, backend='openvino', ov_precision='bf16')
    assert bf16.precision == 'bf16'
    assert cosines(bf16(x), eager(x)).min() >= 0.999


def test_auto_picks_openvino_and_precision_follows_the_cpu(tmp_path):
    from models.openvino_backend import cpu_precision
    ckpt = exported(tmp_path, 'kv')
    auto = Embedder(ckpt, backend='auto')
    assert auto.backend == 'openvino' and auto.precision == {'bf16': 'bf16', 'f32': 'fp32'}[cpu_precision()]
    assert Embedder(ckpt, backend='auto', prefer_int8=True).backend == 'openvino'  # no INT8 export: next choice
    with pytest.raises(ValueError, match='precision'):
        Embedder(ckpt, backend='openvino', ov_precision='int4')


def test_a_stale_export_falls_back_to_torch(tmp_path, caplog):
    model = tiny_model(depth=2)
    ckpt = save_checkpoint(model, tmp_path / 'm.safetensors')
    export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    with torch.no_grad():
        model.blocks[0].attn.proj.bias.add_(1.0)
    save_checkpoint(model, ckpt)
    with caplog.at_level(logging.WARNING):
        embedder = Embedder(ckpt, backend='openvino')
    assert embedder.backend == 'torch' and 'stale' in caplog.text


# ---- NNCF INT8 (CHECKPOINT.int8.xml) --------------------------------------------------------------------------
def _nncf():
    pytest.importorskip('nncf', reason='nncf is not installed (pip install -e .[openvino])')


@pytest.mark.parametrize('kind', ['unpruned', 'heads', 'kv', 'drop'])
def test_nncf_int8_runs_every_model_kind(tmp_path, synth_root, kind):
    _nncf()
    from models.openvino_backend import ov_int8_path_for
    from reid.datasets import load_dataset
    from reid.export import export_openvino_int8_calibrated
    ckpt = save_checkpoint(_variants()[kind], tmp_path / f'{kind}.safetensors')  # no fp32 export yet: made first
    out = export_openvino_int8_calibrated(ckpt, load_dataset(synth_root).train, count=32)
    assert out == ov_int8_path_for(ckpt) and out.is_file() and out.with_suffix('.bin').is_file()
    assert 'FakeQuantize' in {op.get_type_name() for op in ov.Core().read_model(str(out)).get_ops()}
    int8 = Embedder(ckpt, backend='openvino-int8')
    assert int8.backend == 'openvino-int8' and int8.precision == 'int8'
    x = torch.randn(3, 3, 64, 32)
    got, want = int8(x), Embedder(ckpt, backend='torch')(x)
    assert got.shape == want.shape and np.isfinite(got).all()
    assert cosines(got, want).min() > 0.9  # random weights: loose; the trained model's bound is below


def test_nncf_int8_of_a_trained_model_matches_fp32_and_auto_prefers_it(tmp_path, trained_run, learnable_root,
                                                                       caplog):
    _nncf()
    import shutil

    from reid.datasets import load_dataset
    from reid.export import export_int8_calibrated
    ckpt = shutil.copy(trained_run[1].checkpoint, tmp_path / 'model.safetensors')
    ds = load_dataset(learnable_root)
    export_int8_calibrated(ckpt, ds.train, count=100)  # both INT8 models, where nncf is installed
    images = [r.path for r in ds.query[:40]]
    int8, fp32 = Embedder(ckpt, backend='openvino-int8'), Embedder(ckpt, backend='torch')
    cos = cosines(int8(images), fp32(images))
    assert cos.mean() >= 0.98 and cos.min() >= 0.95, (cos.mean(), cos.min())
    assert Embedder(ckpt, backend='auto', prefer_int8=True).backend == 'openvino-int8'
    assert Embedder(ckpt, backend='onnx-int8').backend == 'onnx-int8'  # and ONNX Runtime's beside it
    model = load_model(ckpt)
    with torch.no_grad():
        model.blocks[0].attn.proj.bias.add_(1.0)
    save_checkpoint(model, ckpt)  # the checkpoint changed: both INT8 models are stale
    with caplog.at_level(logging.WARNING):
        assert Embedder(ckpt, backend='openvino-int8').backend == 'torch'
    assert 'not using OpenVINO INT8' in caplog.text and 'stale' in caplog.text
