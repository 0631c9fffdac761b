"""ONNX Runtime execution of an exported embedding (``amg-reid export``), with a freshness check.

An export records the SHA-256 of the checkpoint it came from; an ``.onnx`` whose hash does not match the checkpoint
(stale) or that cannot be read (corrupt) is never used. The record is kept in the export's metadata and, so that a
stale export is told without parsing it or building a runtime for it, in a small JSON file beside it
(:func:`write_export_record`).
"""
import hashlib
import json
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ['OnnxEmbedding', 'Spin', 'onnx_status', 'onnx_path_for', 'file_sha256', 'freshness', 'SHA256_KEY',
           'PARTS_KEY', 'write_export_record', 'recorded_freshness']

_logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
SHA256_KEY = 'amg_reid.checkpoint_sha256'  # in an export's metadata: the checkpoint it came from
PARTS_KEY = 'amg_reid.parts'  # ... and how many LA row parts its embedding concatenates


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


class Spin(StrEnum):
    """When ONNX Runtime's pool threads busy-wait for work instead of sleeping."""
    OFF = 'off'  # never: every parallel section wakes its threads (a futex call each, dozens per forward)
    RUN = 'run'  # while a forward runs; stopped as it returns (session.force_spinning_stop), so they do not burn
    #              the cores that the code between forwards needs (the index search, the request threads)
    ALWAYS = 'always'  # ONNX Runtime's default: between forwards too; best for back-to-back batches

    @classmethod
    def parse(cls, value: Union['Spin', str, bool]) -> 'Spin':
        """Also the booleans of older settings: true -> always, false -> off."""
        if isinstance(value, bool):
            return cls.ALWAYS if value else cls.OFF
        text = str(value).strip().lower()
        spin = {'1': cls.ALWAYS, 'true': cls.ALWAYS, '0': cls.OFF, 'false': cls.OFF}.get(text)
        if spin is None and text not in {s.value for s in cls}:
            raise ValueError(f'spin {value!r}: one of {", ".join(s.value for s in cls)} (or 1/0)')
        return spin or cls(text)


def onnx_path_for(checkpoint: PathLike) -> Path:
    return Path(checkpoint).with_suffix('.onnx')


def _record_path(export_path: PathLike) -> Path:
    return Path(f'{export_path}.json')


def _file_identity(path: PathLike) -> list:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def write_export_record(export_path: PathLike, metadata: Dict[str, str]) -> None:
    """The export's metadata (the checkpoint's SHA-256 first of all) beside it, with the export's size and mtime:
    written after the export itself, it speaks for that file only."""
    path = _record_path(export_path)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(dict(metadata=metadata, export=_file_identity(export_path)), sort_keys=True))
    os.replace(tmp, path)


def recorded_freshness(export_path: PathLike, checkpoint: PathLike,
                       checkpoint_sha256: Optional[str] = None) -> Optional[Tuple[bool, str]]:
    """(usable, reason) from the record beside the export, without opening the export; None where there is no
    readable record (an export from before records, or written by hand): the export's own metadata decides. A
    record of another file (the export rewritten since: another size or mtime) does not count."""
    try:
        record = json.loads(_record_path(export_path).read_text())
        metadata, identity = record['metadata'], record['export']
        if identity != _file_identity(export_path) or not metadata.get(SHA256_KEY):
            return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return freshness(metadata, export_path, checkpoint, checkpoint_sha256)


def onnx_status(onnx_path: PathLike, checkpoint: PathLike, checkpoint_sha256: Optional[str] = None) -> Tuple[bool, str]:
    """(usable, reason): the file exists, parses, and was exported from this very checkpoint (from the record beside
    it where there is one: no onnx import, no parse)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        return False, f'{onnx_path} does not exist'
    recorded = recorded_freshness(onnx_path, checkpoint, checkpoint_sha256)
    if recorded is not None:
        return recorded
    try:
        import onnx
        model = onnx.load(str(onnx_path), load_external_data=False)
    except ImportError:
        return False, 'the onnx package is not installed'
    except Exception as e:  # onnx raises DecodeError and others for damaged files
        return False, f'{onnx_path} is corrupt ({e.__class__.__name__})'
    return freshness({p.key: p.value for p in model.metadata_props}, onnx_path, checkpoint, checkpoint_sha256)


def freshness(metadata: Dict[str, str], onnx_path: PathLike, checkpoint: PathLike,
              checkpoint_sha256: Optional[str] = None) -> Tuple[bool, str]:
    """(usable, reason) from an export's metadata (read by the onnx package, ONNX Runtime or OpenVINO, or from its
    record); ``checkpoint_sha256``: the checkpoint's hash where the caller knows it (else the file is hashed)."""
    if metadata.get(SHA256_KEY) != (checkpoint_sha256 or file_sha256(checkpoint)):
        return False, f'{onnx_path} is stale: it was exported from another version of {Path(checkpoint).name}'
    return True, 'fresh'


def _static(shape: Sequence, what: str) -> Tuple[int, ...]:
    """The fixed sizes of an export's input or output shape after its (dynamic) batch axis."""
    sizes = tuple(shape[1:])
    if not all(isinstance(n, int) and n > 0 for n in sizes):
        raise ValueError(f'the export\'s {what} shape {list(shape)} is not fixed after the batch axis')
    return sizes


class OnnxEmbedding:
    """``images (B, 3, H, W) float32 -> embeddings (B, D)`` through ONNX Runtime on the CPU."""

    def __init__(self, onnx_path: PathLike, threads: Optional[int] = None,
                 spin: Union[Spin, str, bool] = Spin.RUN) -> None:
        import onnxruntime as ort
        spin = Spin.parse(spin)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # measured in docs/benchmarks.md 5b (bench.load): spinning between forwards slows the index search after each
        options.add_session_config_entry('session.intra_op.allow_spinning', '0' if spin == Spin.OFF else '1')
        options.add_session_config_entry('session.force_spinning_stop', '1' if spin == Spin.RUN else '0')
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        _, h, w = _static(self.session.get_inputs()[0].shape, 'input')
        self.img_size: Tuple[int, int] = (h, w)
        self.dim: int = _static(self.session.get_outputs()[0].shape, 'output')[0]
        self.outputs = len(self.session.get_outputs())  # 2: the visibility head's probabilities follow

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_all(images)[0]

    def run_all(self, images: np.ndarray) -> list:
        """Every output: [embedding (B, D)] or [embedding, visibility (B, parts)]."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})
