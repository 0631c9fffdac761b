"""Torch datasets and loaders over :class:`reid.datasets.ImageRecord` lists."""
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.imaging import open_image
from models.transforms import build_transform

from .datasets import HIDDEN_BANDS, ImageRecord
from .recipe import IdentitySampler, RecipeSettings, box_hidden_by_band, random_erase, train_transform

__all__ = ['ImageDataset', 'make_loader', 'split_validation']


class ImageDataset(Dataset):
    """(image, pid, camera) with the test transform; with ``train`` (augmentation) (image, pid, hidden): the
    recipe's augmentation [+ random erasing], and per band of rows (``HIDDEN_BANDS``) the share the record's
    occluders and the erasing hide (0 where nothing is recorded): the visibility head's labels. The recorded bands
    are the stored image's; the recipe's pad + random crop shifts them by up to ``crop_pad`` rows (a few percent of
    the height), left uncorrected in these soft labels."""

    def __init__(self, records: Sequence[ImageRecord], img_size: Sequence[int], train: bool = False,
                 settings: Optional[RecipeSettings] = None) -> None:
        self.records = list(records)
        self.train = train
        self.erasing = settings.erasing if train and settings is not None else 0.0
        self.transform = train_transform(img_size, settings) if train else build_transform(img_size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int, Union[int, torch.Tensor]]:
        r = self.records[i]
        x = self.transform(open_image(r.path))
        if not self.train:
            return x, r.pid, r.camid
        hidden = torch.tensor(r.hidden, dtype=torch.float32) if r.hidden else torch.zeros(HIDDEN_BANDS)
        if self.erasing:
            x, box = random_erase(x, self.erasing)
            if box is not None:
                erased = box_hidden_by_band(box, x.shape[1], x.shape[2], HIDDEN_BANDS)
                hidden = 1 - (1 - hidden) * (1 - erased)
        return x, r.pid, hidden


def make_loader(records: Sequence[ImageRecord], img_size: Sequence[int], batch_size: int, train: bool = False,
                num_workers: int = 0, seed: int = 0, augment: Optional[bool] = None,
                settings: Optional[RecipeSettings] = None) -> DataLoader:
    """Training loaders shuffle with a seeded generator (and drop the last partial batch, which BatchNorm needs);
    they augment by the recipe ``settings`` (flips only without) unless ``augment=False`` (the pruning scores: the
    same on any number of ranks). ``settings.instances`` > 0 draws P identities x K images per batch."""
    generator = torch.Generator().manual_seed(seed)
    augment = train if augment is None else augment
    dataset = ImageDataset(records, img_size, train=augment, settings=settings)
    if train and augment and settings is not None and settings.instances:
        # the sampler draws with the loader's generator, so re-seeding the loader re-seeds the epoch
        sampler = IdentitySampler([r.pid for r in records], batch_size, settings.instances, generator)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(records) > batch_size,
                      num_workers=num_workers, generator=generator, persistent_workers=False)


def split_validation(train: List[ImageRecord], val_fraction: float, seed: int = 0
                     ) -> Tuple[List[ImageRecord], Optional[Tuple[List[ImageRecord], List[ImageRecord]]]]:
    """Hold out a fraction of training identities as a small query/gallery set for model selection.

    Returns (train records relabelled 0..C-1, (val query, val gallery) or None). One image per (pid, camera) goes to
    the validation query, the rest to its gallery; identities seen by one camera only stay in training.
    """
    if val_fraction <= 0:
        return train, None
    rng = np.random.default_rng(seed)
    by_pid = {}
    for r in train:
        by_pid.setdefault(r.pid, []).append(r)
    eligible = sorted(p for p, rs in by_pid.items() if len({r.camid for r in rs}) > 1)
    n_val = int(round(len(by_pid) * val_fraction))
    if n_val < 2 or len(eligible) < n_val:
        return train, None
    val_pids = set(rng.choice(eligible, size=n_val, replace=False).tolist())
    query, gallery, kept = [], [], []
    for pid, rs in sorted(by_pid.items()):
        if pid not in val_pids:
            kept += rs
            continue
        seen = set()
        for r in rs:
            (gallery if r.camid in seen else query).append(r)
            seen.add(r.camid)
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in kept}))}
    kept = [replace(r, pid=mapping[r.pid]) for r in kept]
    return kept, (query, gallery)
