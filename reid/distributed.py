"""Training and pruning under ``torchrun``: one process per device, DistributedDataParallel (NCCL on GPUs, gloo on
CPU). Without torchrun everything runs as one process and these helpers do nothing.

Every rank walks the same seeded shuffle and takes its own slice of each global batch, so the global batches (and,
for the pruning scores, the numbers) are those of a single process with the same ``--batch-size``.
"""
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from models.la_transformer import LATransformer

__all__ = ['Distributed', 'setup_distributed', 'SINGLE']


class _ShardedBatches(Sampler[List[int]]):
    """Rank r of w gets ``batch[r::w]`` of every global batch."""

    def __init__(self, batches: Sampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self.batches:
            yield list(batch)[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.batches)


class _TrainOutputs(nn.Module):
    def __init__(self, model: LATransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        return self.model.forward_train(x)


class DistributedModel(nn.Module):
    """``forward_logits`` and ``forward_train`` through DistributedDataParallel (gradients are averaged across ranks
    in backward; the embedding adds no parameters, so a loss on the logits alone still reaches every one)."""

    def __init__(self, model: LATransformer, device: torch.device) -> None:
        super().__init__()
        self.ddp = DistributedDataParallel(_TrainOutputs(model),
                                           device_ids=[device] if device.type == 'cuda' else None)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x)[0]

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        return self.ddp(x)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, loader: DataLoader) -> DataLoader:
        """The same loader (same generator, so re-seeding it still works), yielding this rank's slice of each
        global batch."""
        if not self.enabled:
            return loader
        if loader.batch_size is not None and loader.batch_size < self.world:
            raise ValueError(f'batch size {loader.batch_size} is smaller than the {self.world} processes')
        return DataLoader(loader.dataset, batch_sampler=_ShardedBatches(loader.batch_sampler, self.rank, self.world),
                          num_workers=loader.num_workers, generator=loader.generator)

    def wrap(self, model: LATransformer):
        """What to train: the model itself, or a DistributedDataParallel wrapper with the same ``forward_logits``.
        Wrap again after the architecture or the trainable parameters change (pruning, blockwise unfreezing)."""
        return DistributedModel(model, self.device) if self.enabled else model

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place; returned for chaining)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = Distributed()


def setup_distributed(device: str = 'cpu') -> Distributed:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT), if any."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return Distributed(device=torch.device(device))
    cuda = device.startswith('cuda')
    if cuda:
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", "0"))}'
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if cuda else 'gloo')
    return Distributed(rank=dist.get_rank(), world=dist.get_world_size(), device=torch.device(device))
