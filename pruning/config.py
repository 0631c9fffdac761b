"""What pruning takes, as plain settings (torch-free, as :mod:`reid.config`). The method is
:mod:`pruning.schedule`."""
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Optional, Tuple

from pydantic import Field, model_validator

from reid.config import DatasetName, RecipeOptions
from reid.options import ImageSize

__all__ = ['PruneConfig', 'PruneMode', 'TokenMode', 'Distill']


class Distill(StrEnum):
    NONE = 'none'
    SOFT = 'soft'
    HARD = 'hard'


class PruneMode(StrEnum):
    ATTN = 'attn'  # key/value tokens (the seed's name)
    HEAD_ENTROPY = 'head_entropy'  # heads
    HEAD_ATTN = 'head_attn'  # both


class TokenMode(StrEnum):
    KV = 'kv'  # pruned tokens stop being keys/values; every query stays (the paper)
    DROP = 'drop'  # tokens leave the sequence before --drop_blocks


class PruneConfig(RecipeOptions):
    """The seed's ``finetune.py`` flags (each field is a CLI flag and a job parameter). ``prune_rate`` is the token
    rate for ``attn``, the head rate for ``head_entropy``; ``head_attn`` takes ``head_rate`` and ``token_rate``.
    Fine-tuning follows ``recipe`` (augmentation, sampler, losses) with the seed's optimiser, schedule and
    distillation."""
    SERVER_OWNED: ClassVar[Tuple[str, ...]] = ('name', 'output_dir', 'device')

    weight_path: str = Field(description='the trained checkpoint to prune')
    data_dir: str = Field(description='the dataset it was trained on (Market-1501 or ImageFolder layout)')
    name: str = Field('pruned', description='run name: outputs go to OUTPUT_DIR/NAME/')
    model: Optional[str] = Field(None, description='registry name, only for foreign checkpoints')
    output_dir: str = Field('runs', description='where runs are written')
    dataset: Optional[DatasetName] = Field(None, description='look for this dataset under --data-dir')
    img_size: Optional[ImageSize] = Field(None, description='input height and width (default: the checkpoint\'s)')
    batch_size: int = Field(32, ge=2, le=512)
    prune_mode: PruneMode = Field(PruneMode.ATTN, description='attn: key/value tokens; head_entropy: heads; '
                                                              'head_attn: both')
    prune_rate: float = Field(0.0, ge=0, lt=1, description='share removed: tokens for attn, heads for head_entropy')
    head_rate: float = Field(0.0, ge=0, lt=1, description='head_attn: share of heads removed')
    token_rate: float = Field(0.0, ge=0, lt=1, description='head_attn: share of key/value tokens removed')
    iter_nums: int = Field(1, ge=1, le=1000, description='prune rounds')
    finetune_nums: int = Field(0, ge=0, le=1000, description='fine-tune epochs after each round')
    final_finetune: int = Field(10, ge=0, le=1000, description='fine-tune epochs after the last round')
    lr: float = Field(1e-4, gt=0, le=1, description='Adam learning rate of the fine-tuning')
    weight_decay: float = Field(1e-3, ge=0, le=1)
    distill_type: Distill = Field(Distill.SOFT, description='distillation from the unpruned teacher')
    distill_alpha: float = Field(0.2, ge=0, le=100)
    distill_tau: float = Field(1.0, gt=0, le=100)
    token_mode: TokenMode = Field(TokenMode.KV, description='kv: prune keys/values only (the paper); drop: tokens '
                                                            'leave the sequence from --drop_blocks')
    drop_blocks: Tuple[int, ...] = Field((3, 6, 9), description='blocks before which tokens are dropped '
                                         '(token_mode drop); each drop removes the token rate')
    fuse_token: bool = Field(False, description='merge dropped tokens into one extra token (token_mode drop)')
    score_batches: Optional[int] = Field(None, ge=1, le=100000, description='limit the scoring pass to this many '
                                                                            'batches')
    num_workers: int = Field(0, ge=0, le=32, description='data loader worker processes')
    seed: int = Field(0, ge=0, le=2 ** 31 - 1)
    device: str = Field('cpu', description='torch device')

    @model_validator(mode='after')
    def _check(self) -> 'PruneConfig':
        self.rates()
        self.settings()
        return self

    def rates(self) -> Tuple[float, float]:
        """(head rate, token rate) after mode resolution."""
        if self.prune_mode == PruneMode.ATTN:
            head, token = 0.0, self.prune_rate
        elif self.prune_mode == PruneMode.HEAD_ENTROPY:
            head, token = self.prune_rate, 0.0
        else:
            head, token = self.head_rate, self.token_rate
            if head == 0 and token == 0:
                raise ValueError('head_attn needs --head_rate and/or --token_rate')
        if self.token_mode == TokenMode.DROP and not self.drop_blocks:
            raise ValueError('token mode drop needs --drop_blocks')
        return head, token

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
