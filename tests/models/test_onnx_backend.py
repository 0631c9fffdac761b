import logging

import numpy as np
import pytest
import torch

from models.checkpoints import load_model, save_checkpoint
from models.embedder import Embedder
from models.export import export_onnx, file_sha256
from models.onnx_backend import Spin, onnx_status
from tests.conftest import tiny_model


def _variants():
    unpruned = tiny_model(depth=3)
    heads = tiny_model(depth=3, num_heads=[3, 1, 2])
    kv = tiny_model(depth=3, kv_index=[None, [0, 2, 5, 7], [0, 1]])
    drop = tiny_model(depth=3)
    drop.set_token_keep([None, [0, 1, 3, 5, 8], [0, 3, 8]], fuse=True)
    return dict(unpruned=unpruned, heads=heads, kv=kv, drop=drop)


@pytest.mark.parametrize('kind', ['unpruned', 'heads', 'kv', 'drop'])
def test_onnx_runtime_equals_torch(tmp_path, kind):
    ckpt = save_checkpoint(_variants()[kind], tmp_path / f'{kind}.safetensors')
    export_onnx(load_model(ckpt),
                ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    x = torch.randn(5, 3, 64, 32)
    eager = Embedder(ckpt, backend='torch')
    ort = Embedder(ckpt, backend='onnx')
    assert eager.backend == 'torch' and ort.backend == 'onnx'
    for batch in (x[:1], x):
        assert np.abs(ort(batch) - eager(batch)).max() < 1e-4


def test_onnx_flip_averaging_equals_torch(tmp_path):
    """The ONNX path stays in numpy (no torch op on the model thread); its mirror-averaging must match torch's."""
    ckpt = save_checkpoint(_variants()['kv'], tmp_path / 'kv.safetensors')
    export_onnx(load_model(ckpt), ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    x = torch.randn(3, 3, 64, 32)
    eager, ort = Embedder(ckpt, backend='torch', flip=True), Embedder(ckpt, backend='onnx', flip=True)
    plain = Embedder(ckpt, backend='onnx')
    out = ort(x)
    assert np.abs(out - eager(x)).max() < 1e-4
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.abs(out - plain(x)).max() > 1e-3  # the mirror really went in
    assert np.abs(ort.embed_tensor(x).numpy() - out).max() < 1e-6


def test_stale_or_corrupt_onnx_falls_back_to_torch(tmp_path, caplog):
    model = tiny_model(depth=2)
    ckpt = save_checkpoint(model, tmp_path / 'm.safetensors')
    export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    assert onnx_status(ckpt.with_suffix('.onnx'), ckpt) == (True, 'fresh')
    with torch.no_grad():
        model.blocks[0].attn.proj.bias.add_(1.0)
    save_checkpoint(model, ckpt)  # the checkpoint changed: its export is stale
    with caplog.at_level(logging.WARNING):
        embedder = Embedder(ckpt, backend='auto')
    assert embedder.backend == 'torch' and 'stale' in caplog.text
    ckpt.with_suffix('.onnx').write_bytes(b'garbage')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        embedder = Embedder(ckpt, backend='onnx')
    assert embedder.backend == 'torch' and 'corrupt' in caplog.text
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert np.allclose(embedder(x), model.eval().embed(x).numpy(), atol=1e-6)


@pytest.mark.parametrize('spin, allow, stop', [('off', '0', '0'), ('run', '1', '1'), ('always', '1', '0'),
                                               (True, '1', '0'), ('0', '0', '0')])
def test_spin_modes_reach_the_session(tmp_path, spin, allow, stop):
    model = tiny_model(depth=1)
    ckpt = save_checkpoint(model, tmp_path / 'm.safetensors')
    export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    embedder = Embedder(ckpt, backend='onnx', onnx_spin=spin)
    options = embedder._exported.runner.session.get_session_options()
    assert options.get_session_config_entry('session.intra_op.allow_spinning') == allow
    assert options.get_session_config_entry('session.force_spinning_stop') == stop
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert np.abs(embedder(x) - model.eval().embed(x).numpy()).max() < 1e-4


def test_spin_parse_names_the_choices():
    assert Spin.parse('RUN') == Spin.RUN and Spin.parse(False) == Spin.OFF and Spin.parse('1') == Spin.ALWAYS
    with pytest.raises(ValueError, match='off, run, always'):
        Spin.parse('sometimes')


@pytest.mark.parametrize('backend', ['onnx', 'openvino', 'onnx-int8', 'openvino-int8'])
def test_an_export_with_the_visibility_head_outputs_it_beside_the_embedding(tmp_path, synth_root, backend):
    from models.runtime import open_exported
    from reid.datasets import load_dataset
    if backend.startswith('openvino'):
        pytest.importorskip('openvino', reason='openvino is not installed (pip install -e .[openvino])')
    if backend == 'openvino-int8':
        pytest.importorskip('nncf', reason='nncf is not installed (pip install -e .[openvino])')
    model = tiny_model(num_classes=4, visibility=True)
    with torch.no_grad():
        model.visibility_weight.normal_()
        model.visibility_bias.normal_()
    ckpt = save_checkpoint(model, tmp_path / 'v.safetensors')
    export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    if backend.endswith('int8'):
        from reid.export import export_int8_calibrated
        export_int8_calibrated(ckpt, load_dataset(synth_root).train, count=16, openvino=backend == 'openvino-int8')
    exported = open_exported(ckpt, backend, ov_precision='fp32')
    assert exported.backend == backend and exported.has_visibility
    images = [r.path for r in load_dataset(synth_root).query[:3]]
    eager = Embedder(ckpt, backend='torch')
    with torch.no_grad():
        want = model.eval().visibility(torch.stack([eager.preprocess(p) for p in images])).numpy()
    tolerance = 0.1 if backend.endswith('int8') else 1e-4
    assert np.abs(exported.visibility(images) - want).max() < tolerance
    assert np.abs(exported(images) - eager(images)).max() < tolerance
    plain = save_checkpoint(tiny_model(num_classes=4), tmp_path / 'p.safetensors')
    export_onnx(load_model(plain), plain.with_suffix('.onnx'), checkpoint_sha256=file_sha256(plain))
    assert not open_exported(plain, 'onnx').has_visibility


def test_a_stale_export_is_told_by_its_record_before_any_runtime_opens_it(tmp_path, monkeypatch):
    """The record beside an export says whose checkpoint it came from: a stale export is passed over without an
    ONNX Runtime session or the onnx package, and a hash the caller knows is not computed again."""
    import models.onnx_backend as onnx_backend
    import models.runtime as runtime
    from models.runtime import open_exported
    model = tiny_model(depth=2)
    ckpt = save_checkpoint(model, tmp_path / 'm.safetensors')
    onnx_path = export_onnx(model, ckpt.with_suffix('.onnx'), checkpoint_sha256=file_sha256(ckpt))
    sha = file_sha256(ckpt)
    hashed = []
    monkeypatch.setattr(onnx_backend, 'file_sha256', lambda p: hashed.append(p) or sha)
    monkeypatch.setattr(runtime, 'file_sha256', lambda p: hashed.append(p) or sha)
    monkeypatch.setitem(__import__('sys').modules, 'onnx', None)  # importing onnx now fails
    assert onnx_status(onnx_path, ckpt, sha) == (True, 'fresh')
    assert open_exported(ckpt, 'onnx', checkpoint_sha256=sha).backend == 'onnx' and hashed == []
    sessions = []
    monkeypatch.setattr(runtime, 'OnnxEmbedding', lambda *a, **k: sessions.append(a))
    assert open_exported(ckpt, 'onnx', checkpoint_sha256='0' * 64) is None and sessions == []  # stale: no session
    assert onnx_status(onnx_path, ckpt, '0' * 64)[0] is False
    onnx_path.write_bytes(onnx_path.read_bytes() + b'\0')  # another file than the record's: the record is ignored
    assert onnx_backend.recorded_freshness(onnx_path, ckpt, sha) is None
