"""Key/value token selection: per-layer L2-normalised scores, a depth bias, one global ranking."""
from typing import List, Optional, Sequence

import torch

from models.la_transformer import LATransformer

__all__ = ['token_prune_count', 'select_kv_tokens', 'apply_kv_tokens', 'select_dropped_tokens']


def token_prune_count(num_patches: int, depth: int, rate: float) -> int:
    """How many keys ``rate`` removes in all (the seed's int(196 · 12 · rate): 940 at 40%)."""
    if not 0 <= rate < 1:
        raise ValueError(f'token rate must be in [0, 1), got {rate}')
    return int(num_patches * depth * rate)


def select_kv_tokens(scores: Sequence[torch.Tensor], kept: Sequence[Optional[Sequence[int]]], num_remove: int,
                     depth_decay: float = 0.03) -> List[List[int]]:
    """Drop the ``num_remove`` lowest-scoring keys over all layers; returns each layer's kept positions.

    Args:
        scores: per layer (N,) scores at token positions.
        kept: per layer the positions currently kept (None: all); only those are candidates (iterative pruning).
        num_remove: keys to drop in this call, over all layers.
        depth_decay: layer i's normalised scores are multiplied by (1 - depth_decay · i), so deeper layers lose
            more keys.

    CLS (position 0) is always kept. A layer may end with CLS as its only key (the seed sets no per-layer minimum).
    """
    N = scores[0].numel()
    candidates, values = [], []
    current = []
    for i, (s, k) in enumerate(zip(scores, kept)):
        positions = torch.arange(N) if k is None else torch.as_tensor(list(k))
        current.append(positions)
        cand = positions[positions != 0]
        layer = s[cand].double()
        layer = layer / layer.norm().clamp_min(1e-12) * (1 - depth_decay * i)
        candidates += [(i, int(p)) for p in cand]
        values.append(layer)
    pool = torch.cat(values)
    if num_remove > pool.numel():
        raise ValueError(f'cannot remove {num_remove} keys: only {pool.numel()} non-CLS keys are left')
    drop = set(torch.argsort(pool, stable=True)[:num_remove].tolist())
    removed = {candidates[j] for j in drop}
    return [[int(p) for p in positions if (i, int(p)) not in removed] for i, positions in enumerate(current)]


def apply_kv_tokens(model: LATransformer, kept: Sequence[Sequence[int]]) -> None:
    N = model.num_tokens
    for block, k in zip(model.blocks, kept):
        block.attn.set_kv_index(None if len(k) == N else k)


def select_dropped_tokens(scores: Sequence[torch.Tensor], alive: Sequence[Sequence[int]], drop_blocks: Sequence[int],
                          keep_ratio: float) -> List[Optional[List[int]]]:
    """Token dropping: at each block of ``drop_blocks`` keep the best ``keep_ratio`` of the surviving patch tokens.

    Args:
        scores: per layer (N,) key scores at token positions (the same attention x gradient scores).
        alive: per block, the positions currently entering it (``model.sequence_positions()``); a token dropped
            earlier cannot come back, so only those are candidates.
        drop_blocks: blocks before which tokens leave the sequence.
        keep_ratio: fraction of the patch tokens kept at each drop (the k-th drop keeps keep_ratio^k of all).

    Returns ``token_keep`` for :meth:`LATransformer.set_token_keep`. Selection at block b ranks by block b's scores.
    """
    if not 0 < keep_ratio <= 1:
        raise ValueError(f'keep ratio must be in (0, 1], got {keep_ratio}')
    depth = len(scores)
    if any(not 0 <= b < depth for b in drop_blocks):
        raise ValueError(f'drop blocks must lie in 0..{depth - 1}, got {list(drop_blocks)}')
    num_patches = scores[0].numel() - 1
    keep: List[Optional[List[int]]] = [None] * depth
    survivors = set(range(num_patches + 1))
    for stage, b in enumerate(sorted(set(drop_blocks)), start=1):
        candidates = [p for p in alive[b] if p > 0 and p in survivors]
        target = max(1, min(len(candidates), int(round(num_patches * keep_ratio ** stage))))
        order = sorted(candidates, key=lambda p: (-float(scores[b][p]), p))
        survivors = {0, *order[:target]}
        keep[b] = sorted(survivors)
    return keep
