import json
import shutil

import pytest
import torch

from models.checkpoints import load_model, read_metadata
from models.la_transformer import create_model
from reid.datasets import load_dataset
from reid.engine import TrainConfig, apply_blockwise, evaluate_model, part_ce_loss, train


def test_part_loss_is_the_sum_of_per_part_cross_entropies():
    logits = torch.randn(4, 3, 5)
    y = torch.tensor([0, 1, 2, 4])
    expected = sum(torch.nn.functional.cross_entropy(logits[:, p], y) for p in range(3))
    assert torch.allclose(part_ce_loss(logits, y), expected)


def test_blockwise_unfreezing_schedule():
    model = create_model('amg_vit_tiny_patch16_224', depth=6, img_size=(32, 32), num_classes=3)
    trainable = lambda: [all(p.requires_grad for p in b.parameters()) for b in model.blocks]  # noqa: E731
    apply_blockwise(model, epoch=0, every=2)
    assert trainable() == [False] * 4 + [True] * 2 and not model.pos_embed.requires_grad
    apply_blockwise(model, epoch=3, every=2)
    assert trainable() == [False] * 3 + [True] * 3
    apply_blockwise(model, epoch=8, every=2)
    assert all(trainable()) and model.pos_embed.requires_grad
    assert all(p.requires_grad for p in model.classifiers.parameters())


@pytest.mark.slow
def test_training_from_scratch_beats_untrained_and_resumes(learnable_root, trained_run, tmp_path):
    cfg, summary = trained_run
    assert len(summary.history) == 12
    ds = load_dataset(learnable_root)
    trained = load_model(summary.checkpoint)
    _, extra = read_metadata(summary.checkpoint)
    assert 0 < extra['min_score'] < 1  # calibrated "no match" threshold recorded with the model
    torch.manual_seed(0)
    untrained = create_model('amg_vit_tiny_patch16_224', img_size=(128, 64)).eval()
    r_trained = evaluate_model(trained, ds.query, ds.gallery, progress=False)['standard']
    r_untrained = evaluate_model(untrained, ds.query, ds.gallery, progress=False)['standard']
    assert r_trained['mAP'] > r_untrained['mAP'] + 10, (r_trained, r_untrained)

    # resume: two more epochs continue the same run from last.safetensors (in a copy: the run is shared)
    shutil.copytree(cfg.run_dir, tmp_path / 'run')
    resumed = train(cfg.model_copy(update=dict(output_dir=str(tmp_path), epochs=14, resume=True)),
                    progress=False)
    assert [h['epoch'] for h in resumed.history] == list(range(1, 15))
    assert json.loads((tmp_path / 'run' / 'train.json').read_text())['history'][-1]['epoch'] == 14


@pytest.mark.slow
def test_training_is_deterministic_with_seed(learnable_root, tmp_path):
    runs = []
    for name in ('a', 'b'):
        cfg = TrainConfig(data_dir=str(learnable_root), name=name, output_dir=str(tmp_path), img_size=(64, 32),
                          epochs=1, batch_size=32, val_fraction=0, seed=7)
        train(cfg, progress=False)
        runs.append(load_model(tmp_path / name / 'last.safetensors').state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
