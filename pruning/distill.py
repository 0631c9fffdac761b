"""Knowledge distillation from the unpruned teacher, per LA part."""
from typing import Optional

import torch
import torch.nn.functional as F

from reid.engine import part_ce_loss

from .config import Distill

__all__ = ['distillation_loss', 'Distill']


def distillation_loss(student: torch.Tensor, teacher: Optional[torch.Tensor], y: torch.Tensor, kind: Distill,
                      alpha: float = 0.2, tau: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Sum over parts k of CE(s_k, y) + α·D(s_k, t_k); logits (B, parts, classes). CE is training's part loss
    (label-smoothed by the strong recipe); D is the seed's.

    soft: D = KL(softmax(t_k/τ) || softmax(s_k/τ)) · τ² / numel(s_k) (sum-reduced KL, as the seed);
    hard: D = CE(s_k, argmax t_k); none: CE only.
    """
    B, P, C = student.shape
    s = student.reshape(B * P, C)
    loss = part_ce_loss(student, y, label_smoothing)
    if kind == 'none':
        return loss
    if teacher is None:
        raise ValueError(f'distillation {kind!r} needs teacher logits')
    t = teacher.reshape(B * P, C)
    if kind == 'soft':
        kl = F.kl_div(F.log_softmax(s / tau, dim=-1), F.log_softmax(t / tau, dim=-1), reduction='sum',
                      log_target=True)
        # the seed divides each part's sum by that part's numel (B·C)
        return loss + alpha * kl * tau ** 2 / (B * C)
    if kind == 'hard':
        return loss + alpha * F.cross_entropy(s, t.argmax(-1), reduction='mean') * P
    raise ValueError(f'unknown distillation {kind!r}; choose from none, soft, hard')
