"""One scoring pass over training data: attention x gradient per key token, and mean-map entropy per head."""
from dataclasses import dataclass
from typing import List, Optional

import torch
from tqdm import tqdm

from models.la_transformer import LATransformer
from reid.distributed import SINGLE, Distributed

__all__ = ['AttentionScores', 'score_model', 'token_scores_from_map', 'head_entropy_from_mean_map']


@dataclass
class AttentionScores:
    """Per block: ``token`` (N,) key scores at full token positions (0 where not a candidate: CLS and keys already
    pruned); ``entropy`` (heads,) mean row entropy of each head's average attention map (bits)."""
    token: List[torch.Tensor]
    entropy: List[torch.Tensor]
    num_samples: int


def signed_token_sums(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Sum over batch, heads and queries of attention x gradient, one signed sum per key (K,): what ranks add up
    before the absolute value."""
    return (attn * grad).sum(dim=(0, 1, 2))


def token_scores_from_sums(sums: torch.Tensor, batch: int, heads: int, queries: int) -> torch.Tensor:
    """|signed sums| / (batch·heads·queries)."""
    return (sums / (batch * heads * queries)).abs()


def token_scores_from_map(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """|sum over batch, heads and queries of attention x gradient| / (B·heads·queries), one score per key (K,)."""
    B, H, Nq, _ = attn.shape
    return token_scores_from_sums(signed_token_sums(attn, grad), B, H, Nq)


def head_entropy_from_mean_map(mean_map: torch.Tensor) -> torch.Tensor:
    """Mean attention map (heads, Nq, K) -> each head's entropy -sum p log2 p per query row, averaged over rows."""
    p = mean_map.clamp_min(1e-12)
    return -(mean_map * p.log2()).sum(-1).mean(-1)


def score_model(model: LATransformer, loader, device: torch.device, loss_fn, max_batches: Optional[int] = None,
                progress: bool = True, dist: Distributed = SINGLE) -> AttentionScores:
    """Forward + backward over ``loader`` without an optimiser step; ``loss_fn(model, x, y) -> (loss, logits)``.

    Runs in eval mode (no dropout: the same data always gives the same scores), and leaves no gradients behind.
    Under torchrun each rank holds a slice of every global batch: its loss is weighted so that the gradients are
    those of the global batch's mean loss, and the signed sums are added across ranks before the absolute value,
    so every rank gets the scores (and pruning decision) of one process.
    """
    was_training = model.training
    model.eval()
    attns = [b.attn for b in model.blocks]
    N = model.num_tokens
    token = [torch.zeros(N, dtype=torch.float64) for _ in attns]
    map_sums: List[Optional[torch.Tensor]] = [None] * len(attns)
    samples = 0
    for a in attns:
        a.record_attn = True
    try:
        for i, (x, y, _) in enumerate(tqdm(loader, desc='scoring', leave=False, disable=not progress)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            batch = int(dist.all_reduce(torch.tensor([x.shape[0]], dtype=torch.float64)).item())
            model.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model, x, y)
            (loss * (x.shape[0] / batch)).backward()
            samples += batch
            sums, maps = [], []
            for a in attns:
                attn_map = a.attn_map
                sums.append(signed_token_sums(attn_map.detach(), attn_map.grad).double().cpu())
                maps.append(attn_map.detach().sum(0).double().cpu())
            flat = dist.all_reduce(torch.cat([t.flatten() for t in sums + maps]))  # one collective per batch
            sums, maps = _unflatten(flat, sums), _unflatten(flat[sum(t.numel() for t in sums):], maps)
            for layer, a in enumerate(attns):
                _, H, Nq, _ = a.attn_map.shape
                keys = torch.tensor(model.key_positions(layer))
                real = keys >= 0  # the fused token (-1) has no position to score
                scores = token_scores_from_sums(sums[layer], batch, H, Nq)
                token[layer][keys[real]] += scores[real]
                map_sums[layer] = maps[layer] if map_sums[layer] is None else map_sums[layer] + maps[layer]
    finally:
        for a in attns:
            a.record_attn = False
            a.attn_map = None
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if samples == 0:
        raise ValueError('the scoring pass saw no data')
    for t in token:
        t[0] = 0.0  # CLS is never a candidate
    entropy = [head_entropy_from_mean_map(s / samples) for s in map_sums]
    return AttentionScores(token=token, entropy=entropy, num_samples=samples)


def _unflatten(flat: torch.Tensor, like: List[torch.Tensor]) -> List[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out
