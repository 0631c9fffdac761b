"""Entropy head pruning: remove the heads whose average attention is most spread out, globally."""
from typing import List, Sequence

import torch

from models.la_transformer import LATransformer

__all__ = ['head_prune_count', 'select_heads', 'apply_heads']


def head_prune_count(heads: Sequence[int], rate: float) -> int:
    """How many heads ``rate`` removes in all (tiny 67%: 24 of 36; base 40%: 58 of 144, leaving the seed's 86).

    Raises ValueError when the rate would empty a block (one head per block must stay).
    """
    if not 0 <= rate < 1:
        raise ValueError(f'head rate must be in [0, 1), got {rate}')
    total, depth = sum(heads), len(heads)
    n = int(round(total * rate))
    if n > total - depth:
        raise ValueError(f'head rate {rate} removes {n} of {total} heads, which would empty a block: at most '
                         f'{total - depth} can go (rate <= {(total - depth) / total:.3f}), one per block must stay')
    return n


def select_heads(entropy: Sequence[torch.Tensor], num_remove: int, depth_bias: float = 0.02) -> List[List[int]]:
    """Heads to keep per layer after removing the ``num_remove`` highest (depth-biased) entropies.

    Layers down to one head are not candidates; eligible layers' entropies are multiplied by 1 + depth_bias · k,
    k the layer's index among eligible layers. A layer never loses its last head within one call either.
    """
    heads = [e.numel() for e in entropy]
    ranked = []
    k = 0
    for layer, e in enumerate(entropy):
        if heads[layer] <= 1:
            continue
        for h, v in enumerate((e.double() * (1 + depth_bias * k)).tolist()):
            ranked.append((v, layer, h))
        k += 1
    ranked.sort(key=lambda t: (-t[0], t[1], t[2]))
    remaining = list(heads)
    removed = set()
    for v, layer, h in ranked:
        if len(removed) == num_remove:
            break
        if remaining[layer] > 1:
            removed.add((layer, h))
            remaining[layer] -= 1
    if len(removed) < num_remove:
        raise ValueError(f'cannot remove {num_remove} heads without emptying a block')
    return [[h for h in range(n) if (layer, h) not in removed] for layer, n in enumerate(heads)]


def apply_heads(model: LATransformer, keep: Sequence[Sequence[int]]) -> None:
    for block, k in zip(model.blocks, keep):
        if len(k) != block.attn.num_heads:
            block.attn.prune_heads(k)
