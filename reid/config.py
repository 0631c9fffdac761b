"""What training takes, as plain settings (torch-free: the service builds its job schemas from these without
importing torch). The training itself is :mod:`reid.engine` and :mod:`reid.recipe`."""
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple

from pydantic import Field

from .options import ImageSize, RunConfig

__all__ = ['Recipe', 'RecipeSettings', 'RecipeOptions', 'TrainConfig', 'AdaptConfig', 'DatasetName']

DatasetName = Literal['market', 'o-duke']


class Recipe(StrEnum):
    STRONG = 'strong'
    LA = 'la'


@dataclass(frozen=True)
class RecipeSettings:
    """Every recipe option resolved to a number."""
    erasing: float
    paste: float
    crop_pad: int
    instances: int
    triplet: float
    triplet_margin: float
    label_smoothing: float
    warmup_epochs: int
    cosine: bool
    visibility: float = 0.0


_DEFAULTS = {
    Recipe.STRONG: dict(erasing=0.0, paste=0.5, crop_pad=4, instances=4, triplet=1.0, label_smoothing=0.1,
                        warmup_epochs=2, cosine=True, visibility=1.0),
    Recipe.LA: dict(erasing=0.0, paste=0.0, crop_pad=0, instances=0, triplet=0.0, label_smoothing=0.0,
                    warmup_epochs=0, cosine=False, visibility=0.0),
}


class RecipeOptions(RunConfig):
    """The recipe and its parts; a part left unset (None) takes the recipe's value."""
    recipe: Recipe = Field(Recipe.STRONG, description='strong: occlusion-robust Re-ID recipe; la: LA-Transformer\'s '
                                                      '(the seed\'s: random flips and the part cross-entropy only)')
    erasing: Optional[float] = Field(None, ge=0, le=1, description='random-erasing probability (strong: 0, measured '
                                   'to cost accuracy on short CPU runs; 0.5 is the usual value)')
    paste: Optional[float] = Field(None, ge=0, le=1, description='probability of pasting a strip of another '
                                   'identity\'s image over 10-50% of the crop (strong: 0.5)')
    crop_pad: Optional[int] = Field(None, ge=0, le=64, description='pad by this many pixels, crop back at random '
                                    '(strong: 4)')
    instances: Optional[int] = Field(None, ge=0, le=64, description='K images per identity in a batch of '
                                     'batch-size/K identities; 0: plain shuffling (strong: 4)')
    triplet: Optional[float] = Field(None, ge=0, le=100, description='weight of the batch-hard triplet loss on the '
                                     'embedding (strong: 1; needs --instances >= 2)')
    triplet_margin: float = Field(0.3, gt=0, le=2, description='triplet margin (embedding distances are in [0, 2])')
    label_smoothing: Optional[float] = Field(None, ge=0, lt=1, description='label smoothing of the part '
                                             'cross-entropies (strong: 0.1)')

    visibility: Optional[float] = Field(None, ge=0, le=100, description='weight of the visibility loss: a per-part '
                                        'visible/occluded logit learned from what hides each part: the pasted strips, '
                                        'random erasing, the occluders the data records (amg-reid synth writes '
                                        'them); adds the visibility head and weights each part\'s identity loss by '
                                        'its visible share (0: off; strong: 1, la: 0). Pruning keeps a head the '
                                        'model has and adds one only when asked')

    def settings(self, **extra) -> RecipeSettings:
        values = dict(_DEFAULTS[self.recipe], triplet_margin=self.triplet_margin)
        for name in ('erasing', 'paste', 'crop_pad', 'instances', 'triplet', 'label_smoothing', 'visibility', *extra):
            own = extra[name] if name in extra else getattr(self, name)
            if own is not None:
                values[name] = own
        if values['triplet'] and values['instances'] < 2:
            raise ValueError('the triplet loss needs --instances >= 2 (positives in every batch), or --triplet 0')
        return RecipeSettings(**values)


class TrainConfig(RecipeOptions):
    """What ``amg-reid train`` and train jobs take (each field is a CLI flag and a job parameter)."""
    SERVER_OWNED: ClassVar[Tuple[str, ...]] = ('name', 'output_dir', 'device', 'resume', 'extra')

    data_dir: str = Field(description='dataset folder (Market-1501 or ImageFolder layout)')
    name: str = Field('LA-tiny', description='run name: outputs go to OUTPUT_DIR/NAME/')
    model: str = Field('amg_vit_tiny_patch16_224', description='registry name (see `amg-reid models`)')
    output_dir: str = Field('runs', description='where runs are written')
    dataset: Optional[DatasetName] = Field(None, description='look for this dataset under --data-dir')
    weight_path: Optional[str] = Field(None, description='weights to start from (timm ViT or LA-Transformer)')
    img_size: ImageSize = Field((224, 224), description='input height and width')
    epochs: int = Field(30, ge=1, le=1000)
    batch_size: int = Field(32, ge=2, le=512)
    lr: float = Field(3e-4, gt=0, le=1, description='Adam learning rate')
    weight_decay: float = Field(5e-4, ge=0, le=1)
    lmbd: float = Field(8.0, ge=0, le=1000, description='weight of the row average against CLS in each part')
    blockwise: Optional[bool] = Field(None, description='blockwise unfreezing (default: on with --weight-path, off '
                                                        'from scratch)')
    unfreeze_every: int = Field(2, ge=1, le=1000, description='blockwise: epochs between unfreezing blocks')
    lr_decay: float = Field(0.8, gt=0, le=1, description='blockwise, LA recipe: learning rate factor at each '
                                                         'unfreezing')
    warmup_epochs: Optional[int] = Field(None, ge=0, le=1000, description='linear warmup, then cosine decay '
                                         '(strong: 2); the LA recipe keeps a constant rate')
    val_fraction: float = Field(0.1, ge=0, lt=1, description='train identities held out for model selection')
    num_workers: int = Field(0, ge=0, le=32, description='data loader worker processes')
    seed: int = Field(0, ge=0, le=2 ** 31 - 1)
    resume: bool = Field(False, description='continue from OUTPUT_DIR/NAME/last.safetensors')
    device: str = Field('cpu', description='torch device')
    extra: Dict[str, Any] = Field(default_factory=dict, description='recorded in the checkpoints')

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def recipe_settings(self) -> RecipeSettings:
        return self.settings(warmup_epochs=self.warmup_epochs)


class AdaptConfig(RunConfig):
    """What ``amg-reid adapt`` and adapt jobs take: unsupervised adaptation of a trained model to unlabelled crops
    (reid.adapt: Cluster Contrast with the tracks' must-link / cannot-link and distillation from the start)."""
    SERVER_OWNED: ClassVar[Tuple[str, ...]] = ('name', 'output_dir', 'device', 'extra')

    weight_path: str = Field(description='the model to adapt (a job: the active model unless given)')
    data_dir: Optional[str] = Field(None, description='a folder of unlabelled crops (any layout: every image under '
                                    'it; a Market-1501 dataset: its bounding_box_train; camera ids read from '
                                    'Market-1501 names where they have them). Without it, the gallery\'s crops '
                                    '(its sightings are the tracks)')
    folder_tracks: bool = Field(False, description='with --data-dir: each sub-folder is one track (the crops of one '
                                'person, as MARS lays them out)')
    cameras: Optional[Tuple[int, ...]] = Field(None, description='gallery: only these cameras\' crops')
    since: Optional[datetime] = Field(None, description='gallery: only crops seen at or after this time (ISO 8601)')
    until: Optional[datetime] = Field(None, description='gallery: only crops seen before this time (ISO 8601)')
    check_dir: Optional[str] = Field(None, description='a small labelled check set (Market-1501 layout: query/ and '
                                     'bounding_box_test/): its mAP before, after each epoch and at the end')
    name: str = Field('adapted', description='run name: outputs go to OUTPUT_DIR/NAME/')
    output_dir: str = Field('runs', description='where runs are written')
    epochs: int = Field(8, ge=1, le=1000)
    cluster_every: int = Field(1, ge=1, le=1000, description='re-cluster every this many epochs (with '
                               'teacher_path: clustered once)')
    tracks: bool = Field(True, description='use the tracks: a track\'s crops are one pseudo-identity, never split, '
                         'and two tracks one camera saw at overlapping times are never one')
    eps: float = Field(0.6, gt=0, lt=1, description='DBSCAN radius on the k-reciprocal Jaccard distance')
    min_samples: int = Field(4, ge=1, le=1000, description='DBSCAN: crops that make a core point (a track counts '
                             'its crops)')
    k1: int = Field(20, ge=2, le=200, description='k-reciprocal neighbours of the Jaccard distance')
    k2: int = Field(6, ge=1, le=100, description='query expansion of the Jaccard distance')
    camera_centring: bool = Field(True, description='cluster on features with each camera\'s mean taken out '
                                  '(where crops come from more than one camera): clusters follow people, not cameras')
    temperature: float = Field(0.05, gt=0, le=10, description='of the cluster-memory contrastive loss')
    momentum: float = Field(0.2, ge=0, lt=1, description='cluster memory update: m <- momentum·m + (1 - momentum)·f')
    distill: float = Field(1.0, ge=0, le=100, description='weight of distillation from the starting model (or '
                           'teacher_path: 1 - cosine of the two embeddings of each crop); 0: off')
    teacher_path: Optional[str] = Field(None, description='distil from, and cluster with, this model instead of the '
                                        'starting one (its embedding the same size): the adapted unpruned model when '
                                        'adapting its pruned version. Its clusters do not change: clustered once')
    lr: float = Field(1e-4, gt=0, le=1, description='Adam learning rate')
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(64, ge=4, le=512)
    instances: int = Field(4, ge=2, le=64, description='crops per pseudo-identity in a batch')
    crop_pad: int = Field(4, ge=0, le=64, description='pad by this many pixels, crop back at random')
    max_crops: int = Field(8000, ge=10, le=100000, description='at most this many crops (whole tracks, drawn at '
                           'random): the Jaccard distance takes O(N²) memory')
    min_clustered: float = Field(0.1, ge=0, le=1, description='fail when DBSCAN leaves more than 1 - this share of '
                                 'the crops unclustered')
    max_cluster_share: float = Field(0.5, gt=0, le=1, description='fail when one cluster holds more than this share '
                                     'of the clustered crops')
    num_workers: int = Field(0, ge=0, le=32, description='data loader worker processes')
    seed: int = Field(0, ge=0, le=2 ** 31 - 1)
    device: str = Field('cpu', description='torch device')
    extra: Dict[str, Any] = Field(default_factory=dict, description='recorded in the checkpoint')

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
