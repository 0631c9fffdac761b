"""torchrun with 2 CPU processes (gloo): the same pruning decisions as one process, DDP fine-tuning and training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.checkpoints import load_model
from pruning.schedule import PruneConfig, prune
from tests.app.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')  # 2 processes on 2 cores
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), '-m', 'app.cli', *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_two_gloo_processes_make_the_same_pruning_decision_as_one(trained, synth_root, tmp_path):
    flags = dict(batch_size=8, prune_mode='head_attn', head_rate=0.5, token_rate=0.3, iter_nums=2,
                 finetune_nums=0, final_finetune=1)
    single = prune(PruneConfig(weight_path=str(trained), data_dir=str(synth_root), output_dir=str(tmp_path),
                               name='single', **flags), progress=False)
    out = torchrun('prune', '--weight-path', str(trained), '--data-dir', str(synth_root), '--output-dir',
                   str(tmp_path), '--name', 'ddp', '--batch-size', '8', '--prune_mode', 'head_attn', '--head_rate',
                   '0.5', '--token_rate', '0.3', '--iter_nums', '2', '--finetune_nums', '0', '--final_finetune', '1')
    assert out.stdout.count('checkpoint:') == 1  # rank 0 reports, rank 1 stays quiet
    one, two = load_model(single.checkpoint), load_model(tmp_path / 'ddp' / 'pruned.safetensors')
    assert two.heads_per_block() == one.heads_per_block()
    assert sum(one.heads_per_block()) == 18  # something was pruned
    assert two.kv_index_per_block() == one.kv_index_per_block()
    assert sum(len(k) - 1 for k in one.kv_index_per_block()) == 8 * 12 - int(8 * 12 * 0.3)  # keys were pruned
    report = json.loads((tmp_path / 'ddp' / 'prune.json').read_text())
    assert report['details']['results']['standard']['mAP'] > 0 and report['details']['heads'] == one.heads_per_block()


def test_training_under_torchrun_writes_one_set_of_checkpoints(synth_root, tmp_path):
    torchrun('train', '--data-dir', str(synth_root), '--output-dir', str(tmp_path), '--name', 'ddp', '--epochs',
             '2', '--batch-size', '8', '--img-size', '64', '32', '--val-fraction', '0.34')
    summary = json.loads((tmp_path / 'ddp' / 'train.json').read_text())
    assert [h['epoch'] for h in summary['history']] == [1, 2] and 'val_mAP' in summary['history'][-1]
    assert load_model(tmp_path / 'ddp' / 'best.safetensors').num_classes == summary['details']['num_classes']
