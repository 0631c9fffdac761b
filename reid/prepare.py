"""Dataset conversion: Market-1501 raw -> the seed's ImageFolder layout; DukeMTMC-reID.zip -> Occluded-Duke."""
import logging
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Dict

from tqdm import tqdm

from .datasets import DatasetError, load_dataset

__all__ = ['market_to_imagefolder', 'build_occluded_duke']

_logger = logging.getLogger(__name__)
_SPLITS = {'train': 'bounding_box_train', 'query': 'query', 'gallery': 'bounding_box_test'}


def market_to_imagefolder(src: Path, dst: Path, progress: bool = True) -> Dict[str, int]:
    """Copy a Market-1501 raw folder into ``dst/{train,query,gallery}/<pid>/<file>`` (junk images are skipped)."""
    src, dst = Path(src), Path(dst)
    if not (src / 'bounding_box_train').is_dir():
        raise DatasetError(f'{src}: not a Market-1501 raw folder (no bounding_box_train/)')
    counts = {}
    for split, folder in _SPLITS.items():
        files = sorted((src / folder).glob('*.jpg'))
        n = 0
        for f in tqdm(files, desc=split, disable=not progress):
            pid = f.name.split('_')[0]
            if pid == '-1':
                continue
            (dst / split / pid).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / split / pid / f.name)
            n += 1
        counts[split] = n
    load_dataset(dst)  # fails loudly if the result is not readable
    return counts


def build_occluded_duke(zip_path: Path, lists_dir: Path, dst: Path, progress: bool = True) -> Dict[str, int]:
    """Build Occluded-DukeMTMC (Market raw layout) from ``DukeMTMC-reID.zip`` and ``{train,gallery,query}.list``.

    Each list names files like ``bounding_box_train/0001_c2_f0046182.jpg``; an image missing from its split in the
    zip is taken from ``bounding_box_test``, as the dataset's own conversion script does.
    """
    zip_path, lists_dir, dst = Path(zip_path), Path(lists_dir), Path(dst)
    if not zip_path.is_file():
        raise DatasetError(f'DukeMTMC-reID zip not found: {zip_path}')
    lists = {s: lists_dir / f'{s}.list' for s in ('train', 'gallery', 'query')}
    for path in lists.values():
        if not path.is_file():
            raise DatasetError(f'Occluded-Duke list not found: {path}')
    out_dirs = {'train': 'bounding_box_train', 'gallery': 'bounding_box_test', 'query': 'query'}
    counts = {}
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DatasetError(f'{zip_path}: not a zip file ({e})') from e
    with zf:
        by_name = {}
        for info in zf.infolist():
            p = PurePosixPath(info.filename)
            if p.suffix == '.jpg':
                by_name[(p.parent.name, p.name)] = info.filename
        for split, list_path in lists.items():
            names = [ln.strip() for ln in list_path.read_text().splitlines() if ln.strip()]
            target = dst / out_dirs[split]
            target.mkdir(parents=True, exist_ok=True)
            for line in tqdm(names, desc=split, disable=not progress):
                folder, name = PurePosixPath(line).parent.name, PurePosixPath(line).name
                member = by_name.get((folder, name)) or by_name.get(('bounding_box_test', name))
                if member is None:
                    raise DatasetError(f'{zip_path}: {line} (from {list_path.name}) is not in the zip')
                (target / name).write_bytes(zf.read(member))
            counts[split] = len(names)
    return counts
