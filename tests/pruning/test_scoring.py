import math

import pytest
import torch

from models.attention import Attention
from pruning.heads import apply_heads, head_prune_count, select_heads
from pruning.scoring import head_entropy_from_mean_map, score_model, token_scores_from_map
from pruning.tokens import apply_kv_tokens, select_kv_tokens, token_prune_count
from reid.engine import ce_step
from tests.conftest import tiny_model


def test_token_scores_equal_hand_computed_attention_times_gradient():
    # toy block: one attention layer, loss = sum of outputs weighted by w, so the gradient is known
    torch.manual_seed(0)
    attn = Attention(192, num_heads=2).eval()
    attn.record_attn = True
    x = torch.randn(2, 5, 192)
    w = torch.randn(2, 5, 192)
    (attn(x) * w).sum().backward()
    A, G = attn.attn_map.detach(), attn.attn_map.grad
    # by hand: for each key j, |sum_{b,h,q} A[b,h,q,j] * G[b,h,q,j]| / (B*H*Nq)
    expected = torch.tensor([abs(sum(float(A[b, h, q, j] * G[b, h, q, j]) for b in range(2) for h in range(2)
                                     for q in range(5))) / (2 * 2 * 5) for j in range(5)])
    assert torch.allclose(token_scores_from_map(A, G), expected, atol=1e-6)


def test_entropy_equals_hand_computation():
    mean_map = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],   # head 0: rows with 0 and 2 bits
                             [[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]])      # head 1: 1 bit each
    assert torch.allclose(head_entropy_from_mean_map(mean_map), torch.tensor([1.0, 1.0]), atol=1e-6)
    p = torch.tensor([[[0.7, 0.2, 0.1]]])
    assert head_entropy_from_mean_map(p).item() == pytest.approx(-sum(v * math.log2(v) for v in (0.7, 0.2, 0.1)))


def test_global_token_ranking_with_depth_bias():
    # two layers, 4 tokens (CLS + 3); after per-layer L2 normalisation both layers look alike, the depth bias
    # (1 - 0.03 i) makes layer 1's keys cheaper, so its weakest key goes first
    scores = [torch.tensor([9.0, 1.0, 2.0, 2.0]), torch.tensor([9.0, 2.0, 4.0, 4.0])]
    kept = select_kv_tokens(scores, [None, None], num_remove=1)
    assert kept == [[0, 1, 2, 3], [0, 2, 3]]
    kept = select_kv_tokens(scores, [None, None], num_remove=2)
    assert kept == [[0, 2, 3], [0, 2, 3]]
    # iterative: only currently kept keys are candidates, and CLS is never dropped
    kept = select_kv_tokens(scores, [[0, 2, 3], [0, 2, 3]], num_remove=4)
    assert kept == [[0], [0]]
    with pytest.raises(ValueError, match='only'):
        select_kv_tokens(scores, [[0], [0, 1]], num_remove=2)
    assert token_prune_count(196, 12, 0.4) == 940


def test_global_head_ranking_with_depth_bias_never_empties_a_layer():
    entropy = [torch.tensor([1.0, 3.0, 2.0]), torch.tensor([2.9, 1.0]), torch.tensor([5.0])]
    # weighted: layer 0 x1.00 -> [1, 3, 2]; layer 1 x1.02 -> [2.958, 1.02]; layer 2 has one head: not eligible
    assert select_heads(entropy, 1) == [[0, 2], [0, 1], [0]]
    assert select_heads(entropy, 2) == [[0, 2], [1], [0]]
    # removing 3: layer 1 is left with its last head, so the next-highest in layer 0 goes instead
    assert select_heads(entropy, 3) == [[0], [1], [0]]
    with pytest.raises(ValueError, match='emptying'):
        select_heads(entropy, 4)
    assert head_prune_count([3] * 12, 0.67) == 24
    assert head_prune_count([12] * 12, 0.4) == 58  # the seed's 86-head LA-Base
    with pytest.raises(ValueError, match='empty a block'):
        head_prune_count([3] * 12, 0.7)
    with pytest.raises(ValueError, match=r'\[0, 1\)'):
        token_prune_count(196, 12, 1.0)


def test_pruned_model_equals_unpruned_with_weights_zeroed_and_keys_masked(synth_root):
    model = tiny_model(depth=3).eval()
    x = torch.randn(2, 3, 64, 32)
    reference = tiny_model(depth=3).eval()
    keep_heads = [[0, 2], [1], [0, 1, 2]]
    keep_tokens = [[0, 1, 4, 5], [0, 2, 3, 6, 7, 8], None]
    with torch.no_grad():
        for block, heads, tokens in zip(reference.blocks, keep_heads, keep_tokens):
            for h in set(range(3)) - set(heads):
                block.attn.proj.weight.view(192, 3, 64)[:, h] = 0  # the head contributes nothing
        # masked keys: an attention mask of -inf on the dropped keys, hooked into each block
        masks = []
        for tokens in keep_tokens:
            m = torch.zeros(9, 9)
            if tokens is not None:
                m[:, [t for t in range(9) if t not in tokens]] = float('-inf')
            masks.append(m)
        for block, m in zip(reference.blocks, masks):
            block.attn.forward = (lambda a, m: lambda x, attn_mask=None, **kw: type(a).forward(a, x, m))(block.attn, m)
        expected = reference.embed(x)
        apply_kv_tokens(model, [t if t is not None else list(range(9)) for t in keep_tokens])
        apply_heads(model, keep_heads)
        assert torch.allclose(model.embed(x), expected, atol=1e-5)
    assert model.heads_per_block() == [2, 1, 3]


def test_scoring_pass_shapes_and_candidates(synth_root):
    from reid.data import make_loader
    from reid.datasets import load_dataset
    ds = load_dataset(synth_root)
    model = tiny_model(depth=2, num_classes=ds.num_train_pids, kv_index=[None, [0, 3, 5]])
    loader = make_loader(ds.train, (64, 32), batch_size=8, train=True)
    scores = score_model(model, loader, torch.device('cpu'), ce_step, max_batches=2, progress=False)
    assert scores.num_samples == 16
    assert [s.shape for s in scores.token] == [(9,), (9,)]
    assert scores.token[0][0] == 0 and (scores.token[0][1:] > 0).all()
    assert scores.token[1].nonzero().flatten().tolist() == [3, 5]  # only kept, non-CLS keys are candidates
    assert [e.shape for e in scores.entropy] == [(3,), (3,)]
    assert all(p.grad is None for p in model.parameters())
    assert all(not b.attn.record_attn for b in model.blocks)


def test_token_drop_selection_is_monotone_and_follows_each_blocks_scores():
    from pruning.tokens import select_dropped_tokens
    scores = [torch.tensor([0., 1, 2, 3, 4]), torch.tensor([0., 4, 3, 2, 1]), torch.tensor([0., 1, 9, 9, 1])]
    alive = [list(range(5))] * 3
    keep = select_dropped_tokens(scores, alive, drop_blocks=[1, 2], keep_ratio=0.5)
    # block 1 keeps 2 of 4 patches by block 1's scores (1, 2); block 2 keeps 1 of those by block 2's (2)
    assert keep == [None, [0, 1, 2], [0, 2]]
    # tokens dropped earlier are never candidates again
    keep = select_dropped_tokens(scores, [list(range(5)), [0, 3, 4], [0, 3, 4]], drop_blocks=[1], keep_ratio=0.5)
    assert keep == [None, [0, 3, 4], None]
    with pytest.raises(ValueError, match='drop blocks'):
        select_dropped_tokens(scores, alive, drop_blocks=[5], keep_ratio=0.5)
