"""Training recipes: LA-Transformer's (the seed's) and a stronger, occlusion-robust Re-ID recipe (the default).

The strong recipe is standard Re-ID practice, each part an option that 0 switches off:
- ``erasing``: torchvision's random erasing (2-33% of the crop, mean colour), the usual occlusion augmentation; off
  by default: on our CPU budgets it cost accuracy (docs/benchmarks.md), the pasted strips below help instead
  (:func:`random_erase`: the training dataset applies it and records which rows it hid);
- ``paste``: a strip cut from another identity's image in the batch pasted over 10-50% of the crop, from the bottom
  or a side, as cars, boards and passers-by occlude people (:func:`paste_occluders`);
- ``crop_pad``: pad + random crop back to size;
- ``instances``: an identity sampler (P identities x K images per batch, :class:`IdentitySampler`), which the
  batch-hard ``triplet`` loss on the retrieval embedding needs (:func:`batch_hard_triplet_loss`);
- ``label_smoothing`` of the part cross-entropies;
- warmup + cosine learning rate (training only; timm's scheduler);
- ``visibility``: the weight of the visibility head's loss: per LA part, the share of the part that the pasted strip,
  random erasing and the occluders the data records (``ImageRecord.hidden``) leave visible
  (:func:`visibility_targets`).
"""
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from models.transforms import ResizeNormalize

from .config import Recipe, RecipeOptions, RecipeSettings

__all__ = ['Recipe', 'RecipeOptions', 'RecipeSettings', 'train_transform', 'IdentitySampler', 'paste_occluders',
           'random_erase', 'box_hidden_by_band', 'visibility_targets',
           'batch_hard_triplet_loss', 'warmup_cosine', 'PASTE_AREA', 'ERASING_SCALE']

PASTE_AREA = (0.1, 0.5)  # share of the crop a pasted strip covers
ERASING_SCALE = (0.02, 0.33)  # torchvision's default erasing area


def train_transform(img_size: Sequence[int], settings: Optional[RecipeSettings] = None) -> T.Compose:
    """Random flip [, resize + pad + random crop], ImageNet normalisation. Random erasing comes after it, in the
    training dataset (:func:`random_erase`), which records the rows it hides.

    With the LA recipe (no crop, no erasing) this is LA-Transformer's: flip, then bicubic resize and normalise."""
    h, w = int(img_size[0]), int(img_size[1])
    steps: List = [T.RandomHorizontalFlip()]
    if settings is not None and settings.crop_pad:
        steps += [T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC), T.Pad(settings.crop_pad),
                  T.RandomCrop((h, w))]
    steps.append(ResizeNormalize((h, w)))
    return T.Compose(steps)


Box = Tuple[int, int, int, int]  # (top, left, bottom, right), exclusive ends


def random_erase(x: torch.Tensor, prob: float) -> Tuple[torch.Tensor, Optional[Box]]:
    """torchvision's RandomErasing (``ERASING_SCALE`` of the crop, aspect 0.3-3.3, value 0 = the mean colour after
    normalisation, the same draws from torch's generator) on one normalised image (C, H, W), and the erased box or
    None."""
    if torch.rand(1) >= prob:
        return x, None
    top, left, h, w, value = T.RandomErasing.get_params(x, scale=ERASING_SCALE, ratio=(0.3, 3.3), value=[0])
    return TF.erase(x, top, left, h, w, value), (top, left, top + h, left + w)


def box_hidden_by_band(box: Box, height: int, width: int, bands: int) -> torch.Tensor:
    """Per band of ``height / bands`` pixel rows, the share of the band's area that ``box`` covers (bands,)."""
    t, left, b, right = box
    edges = torch.linspace(0, height, bands + 1)
    rows = (torch.minimum(edges[1:], torch.tensor(float(b))) - torch.maximum(edges[:-1], torch.tensor(float(t))))
    return rows.clamp_min(0) / (height / bands) * (right - left) / width


class IdentitySampler(Sampler[List[int]]):
    """Batches of P identities x K images (``batch_size // K`` identities); K images are drawn without replacement
    where an identity has K, with replacement otherwise. ``len(labels) // batch_size`` batches an epoch, drawn with
    ``generator`` (re-seed it for a reproducible epoch)."""

    def __init__(self, labels: Sequence[int], batch_size: int, instances: int,
                 generator: Optional[torch.Generator] = None) -> None:
        if instances < 1:
            raise ValueError(f'instances must be >= 1, got {instances}')
        self.by_label: dict = {}
        for i, label in enumerate(labels):
            self.by_label.setdefault(int(label), []).append(i)
        self.labels = sorted(self.by_label)
        self.instances = instances
        self.identities = max(1, min(len(self.labels), batch_size // instances))
        self.num_batches = max(1, len(labels) // (self.identities * instances))
        self.generator = generator

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[List[int]]:
        g = self.generator
        for _ in range(self.num_batches):
            batch: List[int] = []
            for p in torch.randperm(len(self.labels), generator=g)[:self.identities].tolist():
                pool = self.by_label[self.labels[p]]
                if len(pool) >= self.instances:
                    picks = torch.randperm(len(pool), generator=g)[:self.instances].tolist()
                else:
                    picks = torch.randint(len(pool), (self.instances,), generator=g).tolist()
                batch += [pool[k] for k in picks]
            yield batch


def paste_occluders(x: torch.Tensor, y: torch.Tensor, prob: float, area: Tuple[float, float] = PASTE_AREA,
                    generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, List[Optional[Box]]]:
    """Occlude images of a batch with the same region of another identity's image (another person, or what stood
    behind them): a bottom strip or a side strip covering a uniform ``area`` share of the crop.

    Returns the new batch (``x`` is not modified) and, per image, the pasted box or None."""
    B, _, H, W = x.shape
    out = x.clone()
    boxes: List[Optional[Box]] = [None] * B
    r = torch.rand(B, 3, generator=generator)
    for i in range(B):
        others = (y != y[i]).nonzero().flatten()
        if r[i, 0] >= prob or len(others) == 0:
            continue
        j = int(others[int(r[i, 1] * len(others)) % len(others)])
        frac = area[0] + (area[1] - area[0]) * float(r[i, 2])
        side = int(torch.randint(3, (1,), generator=generator))
        if side == 0:  # from the bottom, like a car or a box
            n = max(1, round(frac * H))
            box = (H - n, 0, H, W)
        else:  # from the left or right, like a board or a passer-by
            n = max(1, round(frac * W))
            box = (0, 0, H, n) if side == 1 else (0, W - n, H, W)
        t, left, b, right = box
        out[i, :, t:b, left:right] = x[j, :, t:b, left:right]
        boxes[i] = box
    return out, boxes


def visibility_targets(boxes: Sequence[Optional[Box]], height: int, width: int, parts: int,
                       hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per image and LA part (a band of ``height / parts`` pixel rows), the share of the part left visible, in
    [0, 1]: the visibility head's soft targets (B, parts). What hides it: the pasted strip ``boxes`` (the share of
    the part's area under it) and ``hidden`` (B, bands): what the dataset recorded per band of rows (the share of
    the figure the data's own occluders hide, and of the area random erasing covered; bands averaged over each
    part's rows). Independent occluders: the visible shares multiply."""
    out = torch.ones(len(boxes), parts)
    for i, box in enumerate(boxes):
        if box is not None:
            out[i] = 1 - box_hidden_by_band(box, height, width, parts)
    if hidden is not None:
        bands = hidden.shape[1]
        # overlap of part p's rows with band k, as a share of the part: a (parts, bands) averaging matrix
        part_edges, band_edges = torch.linspace(0, 1, parts + 1), torch.linspace(0, 1, bands + 1)
        overlap = (torch.minimum(part_edges[1:, None], band_edges[None, 1:])
                   - torch.maximum(part_edges[:-1, None], band_edges[None, :-1])).clamp_min(0) * parts
        out = out * (1 - hidden.float().cpu() @ overlap.T)
    return out.clamp(0, 1)


def batch_hard_triplet_loss(embedding: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Hermans et al.'s batch-hard triplet loss: for each anchor its farthest positive and nearest negative
    (Euclidean), mean of relu(d_ap - d_an + margin) over anchors that have both."""
    sq = embedding.pow(2).sum(1)
    dist = (sq[:, None] + sq[None] - 2 * embedding @ embedding.T).clamp_min(1e-12).sqrt()
    same = y[:, None] == y[None]
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    positive = same & ~eye
    hardest_pos = dist.masked_fill(~positive, float('-inf')).max(1).values
    hardest_neg = dist.masked_fill(same, float('inf')).min(1).values
    valid = positive.any(1) & (~same).any(1)
    if not valid.any():
        return embedding.sum() * 0
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def warmup_cosine(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int) -> Callable[[int], None]:
    """Per-epoch learning rate: linear warmup from 10% then cosine to 1% (timm's CosineLRScheduler)."""
    from timm.scheduler import CosineLRScheduler
    base = optimizer.param_groups[0]['lr']
    warmup = min(warmup_epochs, max(0, epochs - 1))
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, epochs - warmup), lr_min=base * 0.01, warmup_t=warmup,
                                  warmup_lr_init=base * 0.1, warmup_prefix=True)
    return scheduler.step

