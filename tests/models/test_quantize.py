"""INT8 export: every model kind quantises, loads and runs in ONNX Runtime; on a trained model the INT8 embedding
points where the fp32 one does; the service serves it and says so."""
import logging
import shutil

import numpy as np
import pytest
import torch

from models.checkpoints import save_checkpoint
from models.embedder import Embedder
from models.quantize import int8_path_for
from reid.datasets import load_dataset
from reid.export import export_int8_calibrated
from tests.models.test_onnx_backend import _variants


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize('kind', ['unpruned', 'heads', 'kv', 'drop'])
def test_every_model_kind_quantises_and_runs(tmp_path, synth_root, kind):
    ckpt = save_checkpoint(_variants()[kind], tmp_path / f'{kind}.safetensors')
    out = export_int8_calibrated(ckpt, load_dataset(synth_root).train, count=32)
    assert out == int8_path_for(ckpt) and out.is_file()
    import onnx
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops  # QDQ format
    int8 = Embedder(ckpt, backend='onnx-int8')
    assert int8.backend == 'onnx-int8'
    x = torch.randn(3, 3, 64, 32)
    got, want = int8(x), Embedder(ckpt, backend='torch')(x)
    assert got.shape == want.shape and np.isfinite(got).all()
    assert _cosines(got, want).min() > 0.9  # random weights: loose; the trained model's bound is below
    from tests.app.conftest import files_for, make_client
    image = load_dataset(synth_root).gallery[0].path
    with make_client(tmp_path / 'service', ckpt, backend='onnx-int8') as client:  # the service serves it
        assert client.get('/readyz').json()['backend'] == 'onnx-int8'
        assert client.post('/v1/gallery', files=files_for([image]), data={'person_id': '1'}).status_code == 201
        match = client.post('/v1/search', files=files_for([image]), data={'min_score': '-1'}).json()
        assert match['results'][0]['matches'][0]['cosine'] > 0.99


def test_int8_embeddings_of_a_trained_model_match_fp32(tmp_path, trained_run, learnable_root):
    ckpt = shutil.copy(trained_run[1].checkpoint, tmp_path / 'model.safetensors')
    ds = load_dataset(learnable_root)
    export_int8_calibrated(ckpt, ds.train, count=100)
    images = [r.path for r in ds.query[:40]]
    int8, fp32 = Embedder(ckpt, backend='onnx-int8'), Embedder(ckpt, backend='torch')
    cos = _cosines(int8(images), fp32(images))
    assert cos.mean() >= 0.98 and cos.min() >= 0.95, (cos.mean(), cos.min())


def test_int8_is_chosen_only_when_asked_and_fresh(tmp_path, synth_root, caplog):
    model = _variants()['unpruned']
    ckpt = save_checkpoint(model, tmp_path / 'm.safetensors')
    assert Embedder(ckpt, backend='auto', prefer_int8=True).backend == 'torch'  # nothing exported yet
    export_int8_calibrated(ckpt, load_dataset(synth_root).train, count=16, openvino=False)
    assert Embedder(ckpt, backend='auto').backend == 'torch'  # no fp32 export; INT8 not asked for
    assert Embedder(ckpt, backend='auto', prefer_int8=True).backend == 'onnx-int8'
    with torch.no_grad():
        model.blocks[0].attn.proj.bias.add_(1.0)
    save_checkpoint(model, ckpt)  # the checkpoint changed: its INT8 export is stale
    with caplog.at_level(logging.WARNING):
        assert Embedder(ckpt, backend='onnx-int8').backend == 'torch'
    assert 'stale' in caplog.text
