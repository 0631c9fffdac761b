import torch

from models.attention import Attention


def _attn(heads=3, kv_index=None):
    torch.manual_seed(0)
    return Attention(192, num_heads=heads, kv_index=kv_index).eval()


def test_kv_pruning_equals_masking_the_dropped_keys():
    x = torch.randn(2, 9, 192)
    full = _attn()
    kept = [0, 2, 3, 7]
    pruned = _attn(kv_index=kept)
    pruned.load_state_dict(full.state_dict())
    mask = torch.full((9,), float('-inf'))
    mask[kept] = 0
    with torch.no_grad():
        assert torch.allclose(pruned(x), full(x, attn_mask=mask.expand(9, 9)), atol=1e-5)


def test_head_removal_equals_zeroing_the_heads_output():
    x = torch.randn(2, 9, 192)
    attn = _attn(heads=3)
    with torch.no_grad():
        reference = attn.state_dict()
        zeroed = _attn(heads=3)
        zeroed.load_state_dict(reference)
        zeroed.proj.weight.view(192, 3, 64)[:, 1] = 0  # head 1 contributes nothing
        expected = zeroed(x)
        attn.prune_heads([0, 2])
    assert attn.num_heads == 2
    assert attn.qkv.weight.shape == (2 * 3 * 64, 192) and attn.proj.weight.shape == (192, 128)
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_recorded_attention_map_has_gradient():
    attn = _attn(kv_index=[0, 1, 4])
    attn.record_attn = True
    x = torch.randn(2, 9, 192, requires_grad=True)
    attn(x).sum().backward()
    assert attn.attn_map.shape == (2, 3, 9, 3)
    assert attn.attn_map.grad is not None
    assert torch.allclose(attn.attn_map.sum(-1), torch.ones(2, 3, 9), atol=1e-5)


def test_fused_and_explicit_paths_agree():
    x = torch.randn(2, 9, 192)
    attn = _attn(kv_index=[0, 3, 4, 8])
    with torch.no_grad():
        fused = attn(x)
        attn.fused_attn = False
        assert torch.allclose(attn(x), fused, atol=1e-5)
