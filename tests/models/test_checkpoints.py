import pickle

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from models.checkpoints import CheckpointError, load_model, read_metadata, save_checkpoint
from tests.conftest import tiny_model

X = torch.randn(2, 3, 64, 32)


def _same_outputs(a, b):
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a.embed(X), b.embed(X))
        assert torch.equal(a.forward_logits(X), b.forward_logits(X))


def test_round_trip_of_uneven_heads_and_kept_tokens(tmp_path):
    model = tiny_model(depth=3, num_heads=[3, 1, 2], kv_index=[[0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 4, 8], None])
    model.blocks[0].attn.prune_heads([0, 2])
    path = save_checkpoint(model, tmp_path / 'pruned.safetensors', extra={'min_score': 0.5})
    loaded = load_model(path)  # no flags: the architecture comes from the file
    assert loaded.heads_per_block() == [2, 1, 2]
    assert loaded.kv_index_per_block() == model.kv_index_per_block()
    assert loaded.img_size == (64, 32) and loaded.num_classes == 5
    assert read_metadata(path)[1] == {'min_score': 0.5}
    _same_outputs(model, loaded)


def _timm_vit(img_size=224):
    torch.manual_seed(0)
    return VisionTransformer(img_size=img_size, patch_size=16, embed_dim=192, depth=2, num_heads=3, num_classes=10)


@pytest.mark.parametrize('fmt', ['pth', 'safetensors', 'wrapped'])
def test_timm_weights_import_and_pos_embed_resampling(tmp_path, fmt):
    vit = _timm_vit()
    sd = vit.state_dict()
    if fmt == 'safetensors':
        path = tmp_path / 'vit.safetensors'
        save_file(sd, str(path))
    else:
        path = tmp_path / 'vit.pth'
        torch.save({'state_dict': sd} if fmt == 'wrapped' else sd, path)
    model = load_model(path, 'amg_vit_tiny_patch16_224', depth=2)
    assert model.num_classes == 0  # the ImageNet head is dropped
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), vit.eval().forward_features(x), atol=1e-5)
    person = load_model(path, 'amg_vit_tiny_patch16_224', depth=2, img_size=(256, 128))
    assert person.pos_embed.shape == (1, 1 + 16 * 8, 192)


def _la_state_dict(num_classes=6, parts=4, depth=2):
    """A state dict with the key names LA-Transformer's own module tree produces."""
    sd = {f'model.{k}': v for k, v in _timm_vit(img_size=(64, 32)).state_dict().items()}
    for i in range(parts):
        sd[f'classifier{i}.add_block.0.weight'] = torch.randn(256, 192)
        sd[f'classifier{i}.add_block.0.bias'] = torch.randn(256)
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            sd[f'classifier{i}.add_block.1.{name}'] = torch.rand(256) + 0.5
        sd[f'classifier{i}.add_block.1.num_batches_tracked'] = torch.tensor(3)
        sd[f'classifier{i}.classifier.0.weight'] = torch.randn(num_classes, 256)
        sd[f'classifier{i}.classifier.0.bias'] = torch.randn(num_classes)
    return sd


def test_la_transformer_pth_import(tmp_path):
    sd = _la_state_dict()
    torch.save(sd, tmp_path / 'la.pth')
    model = load_model(tmp_path / 'la.pth', 'amg_vit_tiny_patch16_224', depth=2, img_size=(64, 32))
    assert model.num_classes == 6
    assert torch.equal(model.classifiers[3].classifier.weight, sd['classifier3.classifier.0.weight'])
    assert torch.equal(model.classifiers[1].add_block[1].running_var, sd['classifier1.add_block.1.running_var'])
    assert torch.equal(model.blocks[1].attn.qkv.weight, sd['model.blocks.1.attn.qkv.weight'])


def test_amg_seed_pruned_checkpoint_import(tmp_path):
    sd = _la_state_dict()
    # block 0 keeps heads 0 and 2 (the seed slices qkv to (3, heads, 64, D)) and tokens 0, 3, 4
    qkv = sd['model.blocks.0.attn.qkv.weight'].reshape(3, 3, 64, 192)[:, [0, 2]].reshape(-1, 192)
    sd['model.blocks.0.attn.qkv.weight'] = qkv
    sd['model.blocks.0.attn.qkv.bias'] = sd['model.blocks.0.attn.qkv.bias'].reshape(3, 3, 64)[:, [0, 2]].reshape(-1)
    sd['model.blocks.0.attn.proj.weight'] = sd['model.blocks.0.attn.proj.weight'].reshape(192, 3, 64)[:, [0, 2]].reshape(192, -1)
    mask = torch.zeros(9, dtype=torch.bool)
    mask[[0, 3, 4]] = True
    sd['model.blocks.0.attn.token_index'] = mask
    sd['model.blocks.1.attn.token_index'] = torch.ones(9, dtype=torch.bool)
    torch.save({'state_dict': sd, 'channels': [3, 9], 'heads': [2, 3]}, tmp_path / 'seed.pth')
    model = load_model(tmp_path / 'seed.pth', 'amg_vit_tiny_patch16_224', depth=2, img_size=(64, 32))
    assert model.heads_per_block() == [2, 3]
    assert model.kv_index_per_block() == [[0, 3, 4], None]
    assert torch.equal(model.blocks[0].attn.qkv.weight, qkv)
    with torch.no_grad():
        assert torch.isfinite(model.embed(X)).all()

    torch.save({'state_dict': sd, 'channels': [3, 9], 'heads': [3, 3]}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match='disagree'):
        load_model(tmp_path / 'bad.pth', 'amg_vit_tiny_patch16_224', depth=2, img_size=(64, 32))


class Evil:
    def __reduce__(self):
        return (print, ('pwned',))


def test_untrusted_pickles_are_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': Evil()}, f)
    with pytest.raises(CheckpointError, match='weights-only'):
        load_model(path, 'amg_vit_tiny_patch16_224')


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match='not found'):
        load_model(tmp_path / 'missing.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(CheckpointError, match='cannot read'):
        load_model(tmp_path / 'junk.safetensors')
    save_file({'x': torch.zeros(1)}, str(tmp_path / 'foreign.safetensors'))
    with pytest.raises(CheckpointError, match='--model'):
        load_model(tmp_path / 'foreign.safetensors')
    torch.save(_timm_vit().state_dict(), tmp_path / 'vit.pth')
    with pytest.raises(CheckpointError, match='does not fit'):
        load_model(tmp_path / 'vit.pth', 'amg_vit_small_patch16_224', depth=2)


def test_the_visibility_head_round_trips_and_survives_head_and_token_pruning(tmp_path):
    from pruning.heads import apply_heads
    model = tiny_model(num_classes=4, visibility=True)
    with torch.no_grad():
        model.visibility_weight.normal_()
        model.visibility_bias.normal_()
    x = torch.randn(2, 3, 64, 32)
    want = model.eval().visibility(x)
    again = load_model(save_checkpoint(model, tmp_path / 'v.safetensors'))
    assert again.has_visibility and torch.allclose(again.eval().visibility(x), want)
    apply_heads(again, [[1, 2], [0, 1, 2], [0, 1, 2]])  # a head of block 0 removed: the visibility head stays
    again.set_token_keep([None, [0, 1, 2, 3, 4, 5], None])  # token dropping: rows without survivors use CLS
    assert again.has_visibility and again.visibility(x).shape == (2, 4)
    plain = load_model(save_checkpoint(tiny_model(num_classes=4), tmp_path / 'p.safetensors'))
    assert not plain.has_visibility  # checkpoints without it load as before
