"""Model complexity: the AMG seed's own FLOPs/parameter convention, and a real count with torch's flop counter."""
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from .attention import Attention
from .la_transformer import LATransformer

__all__ = ['seed_flops', 'msa_params', 'count_params', 'real_macs', 'complexity_report']


def seed_flops(model: LATransformer) -> int:
    """Multiply-accumulates of the blocks only, by the seed's formula (what its README calls FLOPs).

    Per block with c kept key tokens, t = 64·heads, d = dim, N tokens:
    attention 3ctd + c²t + heads·c² + c²t + ctd, MLP 2·N·d·4d (the seed uses c for the projections too).
    With token dropping N (and c) are the block's own sequence length.
    """
    d = model.embed_dim
    sequences = model.sequence_positions()
    total = 0
    for i, block in enumerate(model.blocks):
        attn: Attention = block.attn
        N, c = len(sequences[i]), len(model.key_positions(i))
        t, h = attn.attn_dim, attn.num_heads
        total += 3 * c * t * d + c * c * t + h * c * c + c * c * t + c * t * d
        total += 2 * N * d * int(d * model.mlp_ratio)
    return total


def msa_params(model: LATransformer, seed_convention: bool = True) -> int:
    """Parameters of the attention modules (names containing 'attn').

    The seed registers each block's boolean key mask (one entry per token) as an attention parameter and counts
    it; ``seed_convention=True`` does the same, so pruned figures match its table (tiny, one head per block:
    0.597M with the masks, 0.594M without).
    """
    own = sum(p.numel() for name, p in model.named_parameters() if 'attn' in name)
    return own + (len(model.blocks) * model.num_tokens if seed_convention else 0)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextmanager
def _unfused_attention(model: torch.nn.Module) -> Iterator[None]:
    # the flop counter has no formula for every CPU SDPA kernel; the explicit matmul path is counted exactly
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    saved = [m.fused_attn for m in attns]
    for m in attns:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, f in zip(attns, saved):
            m.fused_attn = f


@torch.no_grad()
def real_macs(model: LATransformer, input_size: Optional[Sequence[int]] = None) -> int:
    """Multiply-accumulates of one embedding forward of the whole model (torch.utils.flop_counter FLOPs / 2)."""
    h, w = input_size or model.img_size
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, h, w, device=model.cls_token.device)
    with _unfused_attention(model), FlopCounterMode(display=False) as counter:
        model.embed(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def complexity_report(model: LATransformer) -> Dict[str, float]:
    return dict(
        seed_gflops=seed_flops(model) / 1e9,
        msa_params_m=msa_params(model) / 1e6,
        real_gmacs=real_macs(model) / 1e9,
        params_m=count_params(model) / 1e6,
        heads=sum(model.heads_per_block()),
    )
