"""LA-Transformer on an AMG ViT backbone: every block has its own head count and its own kept key/value tokens.

The backbone is timm's ViT (PatchEmbed, Block, Mlp, LayerNorm) with :class:`models.attention.Attention` in each
block. The head is LA-Transformer's locally aware pooling: the patch tokens of each grid row are averaged into one
part, part_i = (cls + λ·row_i) / (1 + λ), and each part has its own classifier.
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_, to_2tuple
from timm.models.vision_transformer import Block
from torch import nn

from .attention import Attention

__all__ = ['LATransformer', 'ClassBlock', 'create_model', 'list_models', 'model_from_architecture']

ARCHITECTURE_VERSION = 1


class ClassBlock(nn.Module):
    """LA-Transformer's per-part classifier: Linear(D, 256) + BN + Dropout(0.5) + Linear(256, num_classes)."""

    def __init__(self, in_dim: int, num_classes: int, bottleneck: int = 256, drop_rate: float = 0.5) -> None:
        super().__init__()
        self.add_block = nn.Sequential(nn.Linear(in_dim, bottleneck), nn.BatchNorm1d(bottleneck), nn.Dropout(drop_rate))
        self.classifier = nn.Linear(bottleneck, num_classes)
        nn.init.kaiming_normal_(self.add_block[0].weight, a=0, mode='fan_out')
        nn.init.zeros_(self.add_block[0].bias)
        nn.init.normal_(self.add_block[1].weight, 1.0, 0.02)
        nn.init.zeros_(self.add_block[1].bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.add_block(x))


class LATransformer(nn.Module):
    """ViT backbone + locally aware head.

    Args:
        img_size: input (height, width); any multiple of the patch size, e.g. (256, 128) person crops.
        patch_size: patch size.
        embed_dim: token width D.
        depth: number of blocks.
        num_heads: heads per block, one int for all or one per block (head_dim is fixed at 64).
        kv_index: per block, the token positions kept as keys/values (None keeps all), CLS (0) always kept.
        token_keep: token dropping: per block, the token positions that stay in the sequence from that block on
            (None: no drop before this block); each list must be a subset of the one before, CLS (0) included.
            Dropped tokens leave queries, residual and MLP; the LA rows are pooled over each row's survivors.
        fuse_dropped: merge the dropped tokens into one extra token (their running mean), EViT-style.
        num_classes: identities for the part classifiers; 0 builds an embedding-only model.
        visibility: a visibility head: one logit per LA part (is this row of the person seen, or occluded?), a
            linear map of each part token (:meth:`forward_visibility`); trained by the recipe's ``visibility`` loss.
        lmbd: λ, the weight of the row average against CLS in each part.
        mlp_ratio: MLP hidden width / D.
        drop_path_rate: stochastic depth of the last block (linear over depth).
        name: registry name, recorded in the architecture.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            embed_dim: int = 192,
            depth: int = 12,
            num_heads: Union[int, Sequence[int]] = 3,
            kv_index: Optional[Sequence[Optional[Sequence[int]]]] = None,
            token_keep: Optional[Sequence[Optional[Sequence[int]]]] = None,
            fuse_dropped: bool = False,
            num_classes: int = 0,
            lmbd: float = 8.0,
            mlp_ratio: float = 4.0,
            drop_path_rate: float = 0.0,
            name: str = 'amg_vit_tiny_patch16_224',
            visibility: bool = False,
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f'img_size {img_size} must be a multiple of patch_size {patch_size}')
        heads = [num_heads] * depth if isinstance(num_heads, int) else list(num_heads)
        kv_index = [None] * depth if kv_index is None else list(kv_index)
        if len(heads) != depth or len(kv_index) != depth:
            raise ValueError(f'num_heads and kv_index need one entry per block ({depth})')
        self.name = name
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.lmbd = lmbd
        self.mlp_ratio = mlp_ratio
        self.num_classes = num_classes

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_parts = self.grid_size[0]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads=h, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i],
                  norm_layer=partial(nn.LayerNorm, eps=1e-6), attn_layer=Attention)
            for i, h in enumerate(heads)])
        for block, index in zip(self.blocks, kv_index):
            block.attn.set_kv_index(index)
        self.set_token_keep(token_keep, fuse_dropped)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.classifiers = nn.ModuleList(
            [ClassBlock(embed_dim, num_classes) for _ in range(self.num_parts)] if num_classes > 0 else [])
        self.set_visibility_head(visibility)
        trunc_normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.blocks.apply(_init_vit_weights)

    # ---- architecture -------------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return 1 + self.patch_embed.num_patches

    @property
    def embedding_dim(self) -> int:
        return self.num_parts * self.embed_dim

    def heads_per_block(self) -> List[int]:
        return [b.attn.num_heads for b in self.blocks]

    def kv_index_per_block(self) -> List[Optional[List[int]]]:
        return [None if b.attn.kv_index is None else b.attn.kv_index.tolist() for b in self.blocks]

    def set_token_keep(self, token_keep: Optional[Sequence[Optional[Sequence[int]]]], fuse: bool = False) -> None:
        """Configure token dropping (see the class docstring); None turns it off."""
        depth, N = len(self.blocks), self.num_tokens
        keep = [None] * depth if token_keep is None else [None if k is None else sorted(int(t) for t in k)
                                                           for k in token_keep]
        if len(keep) != depth:
            raise ValueError(f'token_keep needs one entry per block ({depth})')
        if any(k is not None for k in keep) and any(b.attn.kv_index is not None for b in self.blocks):
            raise ValueError('token dropping and key/value pruning cannot be combined in one model')
        self.token_keep = keep
        self.fuse_dropped = bool(fuse) and any(k is not None for k in keep)
        alive, fused_count = list(range(N)), 0
        self._sequence: List[List[int]] = []  # per block: absolute positions entering it (-1: the fused token)
        self._drops: List[Optional[Tuple[int, int]]] = []  # per block: (dropped count, fused count before)
        for i, k in enumerate(keep):
            for name in (f'keep_index_{i}', f'drop_index_{i}'):
                self._buffers.pop(name, None)
            if k is None:
                self._drops.append(None)
            else:
                if not k or k[0] != 0 or not set(k) <= set(alive):
                    raise ValueError(f'token_keep[{i}] must keep CLS (0) and only tokens still alive')
                rel = {p: j for j, p in enumerate(alive)}
                keep_rel = [rel[p] for p in k]
                drop_rel = [rel[p] for p in alive if p not in set(k)]
                device = self.cls_token.device
                self.register_buffer(f'keep_index_{i}', torch.tensor(keep_rel, device=device), persistent=False)
                self.register_buffer(f'drop_index_{i}', torch.tensor(drop_rel, device=device, dtype=torch.long),
                                     persistent=False)
                self._drops.append((len(drop_rel), fused_count))
                if self.fuse_dropped:
                    fused_count += len(drop_rel)
                alive = list(k)
            self._sequence.append(alive + ([-1] if self.fuse_dropped and fused_count else []))
        # LA rows over the surviving patch tokens: a fixed averaging matrix, CLS stands in for an emptied row
        final = [p for p in alive if p > 0]
        weights = torch.zeros(self.grid_size[0], len(final))
        for j, p in enumerate(final):
            weights[(p - 1) // self.grid_size[1], j] = 1.0
        counts = weights.sum(1, keepdim=True)
        device = self.cls_token.device
        self.register_buffer('row_weights', (weights / counts.clamp_min(1)).to(device), persistent=False)
        self.register_buffer('row_empty', (counts.squeeze(1) == 0).to(device), persistent=False)

    @property
    def drops_tokens(self) -> bool:
        return any(k is not None for k in self.token_keep)

    def sequence_positions(self) -> List[List[int]]:
        """Per block, the absolute positions of the tokens entering it (-1 for the fused token)."""
        return [list(s) for s in self._sequence]

    def key_positions(self, block: int) -> List[int]:
        seq = self._sequence[block]
        kv = self.blocks[block].attn.kv_index
        return seq if kv is None else [seq[i] for i in kv.tolist()]

    def architecture(self) -> Dict[str, Any]:
        """Everything needed to rebuild this (possibly pruned) model, JSON-serialisable."""
        return dict(
            version=ARCHITECTURE_VERSION, model=self.name, img_size=list(self.img_size), patch_size=self.patch_size,
            embed_dim=self.embed_dim, depth=len(self.blocks), mlp_ratio=self.mlp_ratio, lmbd=self.lmbd,
            num_classes=self.num_classes, num_heads=self.heads_per_block(), kv_index=self.kv_index_per_block(),
            token_keep=self.token_keep, fuse_dropped=self.fuse_dropped, visibility=self.has_visibility)

    @property
    def has_visibility(self) -> bool:
        return self.visibility_weight is not None

    def set_visibility_head(self, enabled: bool) -> None:
        """Add (zero-initialised: every part starts at p = 0.5) or remove the visibility head."""
        if not enabled:
            self.register_parameter('visibility_weight', None)
            self.register_parameter('visibility_bias', None)
        elif getattr(self, 'visibility_weight', None) is None:
            device = self.cls_token.device
            self.visibility_weight = nn.Parameter(torch.zeros(self.num_parts, self.embed_dim, device=device))
            self.visibility_bias = nn.Parameter(torch.zeros(self.num_parts, device=device))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifiers = nn.ModuleList(
            [ClassBlock(self.embed_dim, num_classes) for _ in range(self.num_parts)] if num_classes > 0 else [])
        self.classifiers.to(self.cls_token.device)

    def backbone_parameters(self) -> List[nn.Parameter]:
        """Parameters outside the blocks and classifiers (embeddings), for blockwise unfreezing."""
        return [self.cls_token, self.pos_embed, *self.patch_embed.parameters()]

    @torch.jit.ignore
    def no_weight_decay(self):
        return {'pos_embed', 'cls_token'}

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, 3, H, W) -> normalised tokens (B, N, D); without token dropping N = 1 + num_patches and
        the result equals timm's forward_features."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        if not self.drops_tokens:
            return self.norm(self.blocks(x))
        for i, block in enumerate(self.blocks):
            if self._drops[i] is not None:
                x = self._drop_tokens(x, i)
            x = block(x)
        return self.norm(x)

    def _drop_tokens(self, x: torch.Tensor, i: int) -> torch.Tensor:
        # N changes here: the dropped tokens leave the sequence (or are folded into the fused token at the end)
        n_drop, n_fused = self._drops[i]
        keep, drop = getattr(self, f'keep_index_{i}'), getattr(self, f'drop_index_{i}')
        if not self.fuse_dropped:
            return x.index_select(1, keep)
        body = x[:, :-1] if n_fused else x
        total = body.index_select(1, drop).sum(1)
        if n_fused:
            total = total + x[:, -1] * n_fused
        fused = total / max(n_drop + n_fused, 1)
        return torch.cat([body.index_select(1, keep), fused.unsqueeze(1)], dim=1)

    def pool_rows(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, N, D) -> (cls (B, D), row averages (B, parts, D)) over each row's surviving patch tokens."""
        B, N, D = tokens.shape
        cls = tokens[:, 0]
        if not self.drops_tokens:
            return cls, tokens[:, 1:].reshape(B, self.grid_size[0], self.grid_size[1], D).mean(dim=2)
        patches = tokens[:, 1:1 + self.row_weights.shape[1]]
        rows = torch.einsum('rm,bmd->brd', self.row_weights, patches)
        return cls, torch.where(self.row_empty[None, :, None], cls[:, None], rows)

    def forward_parts(self, tokens: torch.Tensor) -> torch.Tensor:
        """The LA parts (B, parts, D): (cls + λ·row) / (1 + λ)."""
        cls, rows = self.pool_rows(tokens)
        return (cls.unsqueeze(1) + self.lmbd * rows) / (1 + self.lmbd)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens -> part logits (B, parts, num_classes); with ``pre_logits`` the retrieval embedding (B, parts·D)."""
        if pre_logits:
            _, rows = self.pool_rows(tokens)
            # each row unit-length / sqrt(parts): the concatenation has unit norm, so inner product = cosine
            rows = F.normalize(rows, dim=-1) / self.num_parts ** 0.5
            return rows.flatten(1)
        if not self.classifiers:
            raise RuntimeError('this model has no classifiers (num_classes=0); use embed()')
        parts = self.forward_parts(tokens)
        return torch.stack([clf(parts[:, i]) for i, clf in enumerate(self.classifiers)], dim=1)

    def forward_visibility(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> visibility logits (B, parts): one per LA part token, its own linear map."""
        if not self.has_visibility:
            raise RuntimeError('this model has no visibility head (visibility=False)')
        parts = self.forward_parts(tokens)
        return torch.einsum('bpd,pd->bp', parts, self.visibility_weight) + self.visibility_bias

    def visibility(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> per-part visibility probabilities (B, parts)."""
        return torch.sigmoid(self.forward_visibility(self.forward_features(x)))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(part logits, retrieval embedding, visibility logits or None without the head) from one pass, for the
        losses on each."""
        tokens = self.forward_features(x)
        visibility = self.forward_visibility(tokens) if self.has_visibility else None
        return self.forward_head(tokens), self.forward_head(tokens, pre_logits=True), visibility

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> unit-norm retrieval embedding (B, parts·D)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: part logits (B, parts, num_classes). Eval (inference): the embedding only."""
        if self.training and self.classifiers:
            return self.forward_logits(x)
        return self.embed(x)


def _init_vit_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# ---- registry ---------------------------------------------------------------------------------------------------
_MODEL_ARGS: Dict[str, Dict[str, Any]] = {
    'amg_vit_tiny_patch16_224': dict(patch_size=16, embed_dim=192, depth=12, num_heads=3),
    'amg_vit_small_patch16_224': dict(patch_size=16, embed_dim=384, depth=12, num_heads=6),
    'amg_vit_base_patch16_224': dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
}


def list_models() -> List[str]:
    return sorted(_MODEL_ARGS)


def create_model(name: str, **kwargs: Any) -> LATransformer:
    """Build a registered model; keyword arguments override the variant's defaults (img_size, depth, ...)."""
    if name not in _MODEL_ARGS:
        raise ValueError(f'unknown model {name!r}; available: {", ".join(list_models())}')
    return LATransformer(name=name, **{**_MODEL_ARGS[name], **kwargs})


def model_from_architecture(arch: Dict[str, Any]) -> LATransformer:
    """Rebuild a model (random weights) from :meth:`LATransformer.architecture`."""
    if arch.get('version') != ARCHITECTURE_VERSION:
        raise ValueError(f'unsupported architecture record version {arch.get("version")!r}')
    return LATransformer(
        img_size=tuple(arch['img_size']), patch_size=arch['patch_size'], embed_dim=arch['embed_dim'],
        depth=arch['depth'], num_heads=arch['num_heads'], kv_index=arch['kv_index'],
        token_keep=arch.get('token_keep'), fuse_dropped=arch.get('fuse_dropped', False),
        num_classes=arch['num_classes'], lmbd=arch['lmbd'], mlp_ratio=arch['mlp_ratio'], name=arch['model'],
        visibility=arch.get('visibility', False))
