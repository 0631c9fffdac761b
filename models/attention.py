"""Multi-head self-attention whose heads and key/value tokens can be pruned.

Same parameter names and layout as ``timm.layers.Attention`` (``qkv``, ``proj``), so timm weights load as they are.
Two things differ:

* ``head_dim`` is fixed (64 for every AMG model) instead of ``dim // num_heads``, so a block may keep any number of
  heads; :meth:`Attention.prune_heads` slices ``qkv`` and ``proj`` physically.
* ``kv_index`` (optional) lists the token positions that serve as keys and values. Queries, the residual stream and
  the MLP keep every token. K and V are projected only for the kept tokens, so key pruning saves real time.
"""
from typing import Final, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['Attention']


class Attention(nn.Module):
    fused_attn: Final[bool]

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            head_dim: int = 64,
            qkv_bias: bool = True,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            kv_index: Optional[Sequence[int]] = None,
            **kwargs,  # timm's Block passes options we do not support (qk_norm, ...); they must be off
    ) -> None:
        super().__init__()
        for unsupported in ('qk_norm', 'scale_norm'):
            if kwargs.get(unsupported):
                raise ValueError(f'Attention does not support {unsupported}=True')
        if num_heads < 1:
            raise ValueError(f'num_heads must be >= 1, got {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.fused_attn = hasattr(F, 'scaled_dot_product_attention')
        self.qkv = nn.Linear(dim, 3 * self.attn_dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(self.attn_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer('kv_index', None, persistent=False)
        self.set_kv_index(kv_index)
        # When True, forward keeps the post-softmax attention map (with its gradient) in ``attn_map`` for scoring.
        self.record_attn = False
        self.attn_map: Optional[torch.Tensor] = None

    @property
    def attn_dim(self) -> int:
        return self.num_heads * self.head_dim

    def set_kv_index(self, kv_index: Optional[Sequence[int]]) -> None:
        """Keep only these token positions as keys/values (``None`` keeps all). Position 0 (CLS) must be kept."""
        if kv_index is None:
            self.kv_index = None
            return
        index = torch.as_tensor(list(kv_index), dtype=torch.long, device=self.qkv.weight.device)
        if index.numel() == 0 or index[0].item() != 0 or bool((index[1:] <= index[:-1]).any()):
            raise ValueError('kv_index must be sorted, unique, non-empty and start with the CLS token (0)')
        self.kv_index = index

    @torch.no_grad()
    def prune_heads(self, keep: Sequence[int]) -> None:
        """Physically remove all heads but ``keep`` (indices into the current heads)."""
        keep = sorted(set(int(h) for h in keep))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_heads:
            raise ValueError(f'heads to keep must be a non-empty subset of 0..{self.num_heads - 1}, got {keep}')
        H, hd, D = self.num_heads, self.head_dim, self.dim
        idx = torch.tensor(keep, device=self.qkv.weight.device)
        qkv_w = self.qkv.weight.reshape(3, H, hd, D)[:, idx].reshape(-1, D)
        proj_w = self.proj.weight.reshape(D, H, hd)[:, idx].reshape(D, -1)
        qkv = nn.Linear(D, qkv_w.shape[0], bias=self.qkv.bias is not None).to(qkv_w)
        qkv.weight.copy_(qkv_w)
        if self.qkv.bias is not None:
            qkv.bias.copy_(self.qkv.bias.reshape(3, H, hd)[:, idx].reshape(-1))
        proj = nn.Linear(proj_w.shape[1], D).to(proj_w)
        proj.weight.copy_(proj_w)
        proj.bias.copy_(self.proj.bias)
        self.qkv, self.proj = qkv, proj
        self.num_heads = len(keep)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, **kwargs) -> torch.Tensor:
        B, N, C = x.shape
        H, hd, A = self.num_heads, self.head_dim, self.attn_dim
        if self.kv_index is None:
            q, k, v = self.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            # keys/values only for the kept tokens: the pruned ones are never projected
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x, w[:A], None if b is None else b[:A]).reshape(B, N, H, hd).transpose(1, 2)
            x_kv = x.index_select(1, self.kv_index)
            K = x_kv.shape[1]
            kv = F.linear(x_kv, w[A:], None if b is None else b[A:]).reshape(B, K, 2, H, hd)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)

        if self.fused_attn and not self.record_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask
            attn = attn.softmax(dim=-1)
            if self.record_attn:
                if attn.requires_grad:
                    attn.retain_grad()
                self.attn_map = attn
            x = self.attn_drop(attn) @ v

        x = x.transpose(1, 2).reshape(B, N, A)
        return self.proj_drop(self.proj(x))
