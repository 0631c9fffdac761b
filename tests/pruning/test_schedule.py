import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from app.cli import main
from models.checkpoints import load_model
from models.export import export_onnx
from pruning.distill import distillation_loss
from pruning.schedule import PruneConfig, _round_targets, prune
from reid.progress import Cancelled


def test_soft_distillation_matches_the_formula():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 6), torch.randn(4, 3, 6)
    y = torch.tensor([0, 1, 2, 3])
    alpha, tau = 0.2, 2.0
    expected = 0
    for k in range(3):
        kl = F.kl_div(F.log_softmax(s[:, k] / tau, -1), F.softmax(t[:, k] / tau, -1), reduction='sum')
        expected = expected + F.cross_entropy(s[:, k], y) + alpha * kl * tau ** 2 / s[:, k].numel()
    assert torch.allclose(distillation_loss(s, t, y, 'soft', alpha, tau), expected, atol=1e-5)
    hard = sum(F.cross_entropy(s[:, k], y) + alpha * F.cross_entropy(s[:, k], t[:, k].argmax(-1)) for k in range(3))
    assert torch.allclose(distillation_loss(s, t, y, 'hard', alpha, tau), hard, atol=1e-5)
    assert torch.allclose(distillation_loss(s, t, y, 'none'), sum(F.cross_entropy(s[:, k], y) for k in range(3)))


def test_round_targets_add_up():
    assert _round_targets(24, 24) == [1] * 24
    assert sum(_round_targets(940, 3)) == 940
    assert _round_targets(0, 2) == [0, 0]


@pytest.mark.parametrize('kwargs, message', [
    (dict(prune_mode='attn', prune_rate=1.0), 'less than 1'),
    (dict(prune_mode='attn', prune_rate=-0.1), 'greater than or equal to 0'),
    (dict(prune_mode='heads'), "'attn', 'head_entropy' or 'head_attn'"),
    (dict(prune_mode='head_attn'), 'head_rate'),
    (dict(prune_mode='attn', prune_rate=0.2, iter_nums=0), 'iter_nums'),
    (dict(prune_mode='attn', prune_rate=0.2, lr=float('inf')), 'finite number'),
    (dict(prune_mode='attn', recipe='strong', instances=0), 'instances >= 2'),
])
def test_bad_flags(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(weight_path='x', data_dir='y', **kwargs)


@pytest.mark.parametrize('mode, rates, heads', [
    ('attn', dict(prune_rate=0.4), 36),
    ('head_entropy', dict(prune_rate=0.67), 12),
    ('head_attn', dict(head_rate=0.5, token_rate=0.25), 18),
])
def test_schedule_end_to_end(trained, synth_root, tmp_path, mode, rates, heads):
    events = []
    cfg = PruneConfig(weight_path=str(trained), data_dir=str(synth_root), name=mode, output_dir=str(tmp_path),
                      batch_size=8, prune_mode=mode, iter_nums=2, finetune_nums=1, final_finetune=1,
                      score_batches=2, **rates)
    summary = prune(cfg, progress=False, on_progress=events.append)
    model = load_model(summary.checkpoint)
    assert sum(model.heads_per_block()) == heads
    kept = sum(len(k) - 1 if k is not None else 8 for k in model.kv_index_per_block())
    token_rate = rates.get('prune_rate' if mode == 'attn' else 'token_rate', 0.0)
    assert kept == 8 * 12 - int(8 * 12 * token_rate)
    stages = [e.stage for e in events]
    assert stages == ['pruned', 'finetune', 'pruned', 'finetune', 'final', 'done']
    assert events[-2].progress == pytest.approx(1.0)
    assert summary.details['after']['seed_gflops'] < summary.details['before']['seed_gflops']
    assert json.loads((tmp_path / mode / 'prune.json').read_text())['details']['heads'] == model.heads_per_block()


def test_cancel_stops_the_schedule(trained, synth_root, tmp_path):
    cfg = PruneConfig(weight_path=str(trained), data_dir=str(synth_root), output_dir=str(tmp_path), batch_size=8,
                      prune_mode='attn', prune_rate=0.2, iter_nums=3, final_finetune=2, score_batches=1)
    with pytest.raises(Cancelled):
        prune(cfg, progress=False, on_progress=lambda e: True)
    assert not (tmp_path / 'pruned' / 'pruned.safetensors').exists()


def test_cli_prune_and_onnx_export(trained, synth_root, tmp_path, capsys):
    assert main(['prune', '--data-dir', str(synth_root), '--weight-path', str(trained), '--batch-size', '8',
                 '--prune_mode', 'head_attn', '--head_rate', '0.3', '--token_rate', '0.3', '--iter_nums', '1',
                 '--final_finetune', '1', '--output-dir', str(tmp_path), '--name', 'both']) == 0
    out = capsys.readouterr().out
    assert 'heads 36 -> 25' in out and 'standard' in out
    ckpt = tmp_path / 'both' / 'pruned.safetensors'
    assert main(['export', '--weight-path', str(ckpt)]) == 0
    model = load_model(ckpt)
    x = torch.randn(3, 3, 64, 32)
    session = ort.InferenceSession(str(ckpt.with_suffix('.onnx')))
    onnx_out = session.run(None, {'images': x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(onnx_out - model.embed(x).numpy()).max() < 1e-4
    assert main(['prune', '--data-dir', str(synth_root), '--weight-path', str(trained), '--prune_mode', 'attn',
                 '--prune_rate', '1.5']) == 2
    assert 'prune_rate' in (err := capsys.readouterr().err) and 'less than 1' in err


@pytest.mark.parametrize('fuse', [False, True])
def test_token_drop_mode_end_to_end_and_onnx(trained, synth_root, tmp_path, fuse):
    cfg = PruneConfig(weight_path=str(trained), data_dir=str(synth_root), name='drop', output_dir=str(tmp_path),
                      batch_size=8, prune_mode='attn', prune_rate=0.5, token_mode='drop', drop_blocks=(3, 6, 9),
                      fuse_token=fuse, iter_nums=2, finetune_nums=0, final_finetune=1, score_batches=2)
    summary = prune(cfg, progress=False)
    model = load_model(summary.checkpoint)
    lengths = [len(s) for s in model.sequence_positions()]
    # 8 patches: 4, then 2, then 1 survive (+ CLS, + the fused token)
    assert lengths == [9, 9, 9] + [5 + fuse] * 3 + [3 + fuse] * 3 + [2 + fuse] * 3
    assert summary.details['after']['real_gmacs'] < 0.7 * summary.details['before']['real_gmacs']
    path = export_onnx(model, tmp_path / 'drop.onnx')
    x = torch.randn(4, 3, 64, 32)
    out = ort.InferenceSession(str(path)).run(None, {'images': x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - model.embed(x).numpy()).max() < 1e-4
