"""Re-ID dataset readers: the Market-1501 raw layout and the seed's ImageFolder layout.

Market-1501 (also what ``amg-reid synth`` writes and Occluded-Duke after ``amg-reid prepare``)::

    root/bounding_box_train/0002_c1s1_000451_03.jpg   pid 2, camera 1
    root/bounding_box_test/-1_c3s1_000000_00.jpg      junk (kept, ignored by the metric)
    root/bounding_box_test/0000_c1s1_000000_00.jpg    distractor (kept: a gallery negative)
    root/query/...

ImageFolder (the seed's ``train/ query/ gallery/<pid>/<file>``): pid from the folder, camera from the file name.

Where the data records its occluders (``occluders.json`` at the root, as ``amg-reid synth`` writes it), each record
carries the share of the figure hidden per band of rows: the visibility head's labels.
"""
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ['ImageRecord', 'ReIDDataset', 'load_dataset', 'UnlabelledCrop', 'load_unlabelled', 'parse_market_name',
           'DatasetError', 'DATASET_DIRS', 'OCCLUDER_RECORD', 'HIDDEN_BANDS']

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp'}
# names used by the seed's --dataset flag, looked for under --data-dir
DATASET_DIRS = {'market': ('market1501', 'Market-1501-v15.09.15', 'Market-1501'),
                'o-duke': ('Occluded_Duke', 'Occluded_DukeMTMC', 'occluded_duke')}
OCCLUDER_RECORD = 'occluders.json'  # written by reid.synthetic (which imports these names)
HIDDEN_BANDS = 32  # bands of rows an occluder record has: 4 pixel rows of a 128-row crop each
_MARKET_NAME = re.compile(r'^(-?\d+)_c(\d+)')
_CAMERA = re.compile(r'_?c(\d+)')


class DatasetError(ValueError):
    """A missing or malformed dataset; the message names the path."""


@dataclass(frozen=True)
class ImageRecord:
    path: str
    pid: int
    camid: int
    hidden: Optional[Tuple[float, ...]] = None  # share of the figure an occluder hides, per band of rows (top first)


@dataclass(frozen=True)
class UnlabelledCrop:
    """A crop nobody labelled (what unsupervised adaptation reads): its camera and, where a tracker followed the
    person, its track (crops of one track are one person) and the track's time span in seconds (two tracks one
    camera saw at overlapping times are two people)."""
    path: str
    camid: int = 0
    track: Optional[int] = None
    start: Optional[float] = None
    end: Optional[float] = None


@dataclass
class ReIDDataset:
    """Train/query/gallery records. ``train`` pids are relabelled 0..num_train_pids-1; query/gallery keep raw pids."""
    root: Path
    layout: str
    train: List[ImageRecord] = field(default_factory=list)
    query: List[ImageRecord] = field(default_factory=list)
    gallery: List[ImageRecord] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def check_sizes(self) -> None:
        for split in ('train', 'query', 'gallery'):
            if not getattr(self, split):
                raise DatasetError(f'{self.root}: the {split} split has no images')

    def summary(self) -> Dict[str, Tuple[int, int]]:
        return {s: (len(getattr(self, s)), len({r.pid for r in getattr(self, s)}))
                for s in ('train', 'query', 'gallery')}


def parse_market_name(name: str) -> Tuple[int, int]:
    """``0002_c1s1_000451_03.jpg`` -> (2, 1); junk ``-1_...`` -> pid -1."""
    m = _MARKET_NAME.match(name)
    if not m:
        raise DatasetError(f'file name {name!r} does not follow the Market-1501 pattern PID_cCAM...')
    return int(m.group(1)), int(m.group(2))


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_market_split(folder: Path) -> List[ImageRecord]:
    return [ImageRecord(str(p), *parse_market_name(p.name)) for p in _images(folder)]


def _read_imagefolder_split(folder: Path, need_camera: bool) -> List[ImageRecord]:
    records = []
    for pid_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        try:
            pid = int(pid_dir.name)
        except ValueError:
            raise DatasetError(f'{pid_dir}: ImageFolder class folders must be numeric person ids') from None
        for p in _images(pid_dir):
            m = _CAMERA.search(p.stem)
            if m is None and need_camera:
                raise DatasetError(f'{p}: no camera id (cN) in the file name; query/gallery need one')
            records.append(ImageRecord(str(p), pid, int(m.group(1)) if m else 0))
    return records


def _relabel(records: List[ImageRecord]) -> List[ImageRecord]:
    pids = sorted({r.pid for r in records if r.pid > 0})
    mapping = {pid: i for i, pid in enumerate(pids)}
    return [replace(r, pid=mapping[r.pid]) for r in records if r.pid in mapping]


def _with_occluders(records: List[ImageRecord], root: Path) -> List[ImageRecord]:
    """Attach the occluders the data records (``occluders.json``: {"split/name": [hidden per band]}) to them."""
    path = root / OCCLUDER_RECORD
    if not path.is_file():
        return records
    try:
        hidden = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f'{path}: not a readable occluder record ({e})') from None
    out = []
    for r in records:
        bands = hidden.get(Path(r.path).relative_to(root).as_posix())
        if bands is not None and (len(bands) != HIDDEN_BANDS or not all(0 <= h <= 1 for h in bands)):
            raise DatasetError(f'{path}: {r.path} needs {HIDDEN_BANDS} shares in [0, 1], got {bands!r}')
        out.append(replace(r, hidden=tuple(float(h) for h in bands)) if bands is not None else r)
    return out


def resolve_root(data_dir: Path, dataset: Optional[str] = None) -> Path:
    """``data_dir`` itself, or its ``market1501`` / ``Occluded_Duke`` sub-folder when ``dataset`` names one."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f'dataset folder not found: {data_dir}')
    if dataset is not None:
        if dataset not in DATASET_DIRS:
            raise DatasetError(f'unknown dataset {dataset!r}; choose from {", ".join(DATASET_DIRS)}')
        for name in DATASET_DIRS[dataset]:
            if (data_dir / name).is_dir():
                return data_dir / name
    return data_dir


def load_dataset(data_dir: Path, dataset: Optional[str] = None) -> ReIDDataset:
    """Read a dataset in either layout (detected from its folders)."""
    root = resolve_root(data_dir, dataset)
    if (root / 'bounding_box_train').is_dir() or (root / 'bounding_box_test').is_dir():
        for sub in ('bounding_box_train', 'bounding_box_test', 'query'):
            if not (root / sub).is_dir():
                raise DatasetError(f'{root}: Market-1501 layout is missing the folder {sub}/')
        train, query, gallery = (_with_occluders(_read_market_split(root / s), root)
                                 for s in ('bounding_box_train', 'query', 'bounding_box_test'))
        ds = ReIDDataset(root, 'market', _relabel(train), query, gallery)
    elif (root / 'train').is_dir() or (root / 'gallery').is_dir():
        for sub in ('train', 'query', 'gallery'):
            if not (root / sub).is_dir():
                raise DatasetError(f'{root}: ImageFolder layout is missing the folder {sub}/')
        ds = ReIDDataset(root, 'imagefolder', _relabel(_read_imagefolder_split(root / 'train', False)),
                         _read_imagefolder_split(root / 'query', True),
                         _read_imagefolder_split(root / 'gallery', True))
    else:
        raise DatasetError(f'{root}: not a Re-ID dataset (expected bounding_box_train/, bounding_box_test/, '
                           f'query/ or train/, query/, gallery/)')
    ds.check_sizes()
    return ds


def load_unlabelled(folder: Path, folder_tracks: bool = False) -> List[UnlabelledCrop]:
    """Every image under ``folder`` (a Market-1501 dataset: its ``bounding_box_train/``, labels ignored), with the
    camera of a Market-1501 or ``cN`` name (0 without one); ``folder_tracks``: each sub-folder is one track."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f'folder not found: {folder}')
    if (folder / 'bounding_box_train').is_dir():
        folder = folder / 'bounding_box_train'
    crops, tracks = [], {}
    for p in _images(folder):
        m = _MARKET_NAME.match(p.name) or _CAMERA.search(p.stem)
        camid = int(m.group(2) if m is not None and m.re is _MARKET_NAME else m.group(1)) if m else 0
        track = None
        if folder_tracks:
            if p.parent == folder:
                raise DatasetError(f'{p}: with tracks as sub-folders every image must be in one')
            track = tracks.setdefault(p.parent, len(tracks))
        crops.append(UnlabelledCrop(str(p), camid, track))
    if not crops:
        raise DatasetError(f'{folder}: no images ({", ".join(sorted(IMAGE_SUFFIXES))})')
    return crops
