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
