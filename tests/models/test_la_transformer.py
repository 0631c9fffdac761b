import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from models.checkpoints import filter_timm_vit
from models.la_transformer import create_model, list_models
from tests.conftest import tiny_model

VARIANTS = {'amg_vit_tiny_patch16_224': (192, 3), 'amg_vit_small_patch16_224': (384, 6),
            'amg_vit_base_patch16_224': (768, 12)}


@pytest.mark.parametrize('name', list_models())
@pytest.mark.parametrize('img_size', [(224, 224), (256, 128)])
def test_backbone_equals_timm(name, img_size):
    dim, heads = VARIANTS[name]
    depth = 12 if name.endswith('tiny_patch16_224') else 2  # full tiny; 2 blocks of the larger ones keep it fast
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
                            num_classes=0).eval()
    ours = create_model(name, img_size=img_size, depth=depth).eval()
    ours.load_state_dict(filter_timm_vit(vit.state_dict()))
    x = torch.randn(2, 3, *img_size)
    with torch.no_grad():
        assert torch.allclose(ours.forward_features(x), vit.forward_features(x), atol=1e-5)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match='amg_vit_base_patch16_224'):
        create_model('vit_huge')


def test_parts_and_embedding_follow_la_transformer():
    model = tiny_model(lmbd=8.0).eval()
    tokens = torch.randn(2, model.num_tokens, model.embed_dim)
    parts = model.forward_parts(tokens)
    rows = tokens[:, 1:].reshape(2, 4, 2, -1).mean(2)  # 4 rows of 2 patches
    expected = (tokens[:, :1] + 8 * rows) / 9
    assert torch.allclose(parts, expected, atol=1e-6)

    emb = model.forward_head(tokens, pre_logits=True)
    assert emb.shape == (2, 4 * model.embed_dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # each row block is the row direction with norm 1/sqrt(parts)
    block = emb[:, :model.embed_dim]
    assert torch.allclose(block * 2, torch.nn.functional.normalize(rows[:, 0], dim=-1), atol=1e-5)


def test_train_mode_gives_part_logits_eval_mode_gives_embedding():
    model = tiny_model(num_classes=7)
    x = torch.randn(3, 3, 64, 32)
    model.train()
    assert model(x).shape == (3, 4, 7)
    model.eval()
    assert model(x).shape == (3, 4 * 192)


def test_per_block_heads_and_kv_tokens():
    model = tiny_model(depth=3, num_heads=[3, 1, 2], kv_index=[None, [0, 2, 5], [0, 1]])
    assert model.heads_per_block() == [3, 1, 2]
    assert model.kv_index_per_block() == [None, [0, 2, 5], [0, 1]]
    assert model.blocks[1].attn.qkv.weight.shape == (3 * 64, 192)
    out = model.eval()(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 4 * 192)


def test_kv_index_must_keep_cls():
    with pytest.raises(ValueError, match='CLS'):
        tiny_model(depth=1, kv_index=[[1, 2]])
