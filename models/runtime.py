"""Serving an exported embedding without torch: ONNX Runtime (fp32 or INT8) or OpenVINO on ``CHECKPOINT.onnx``, with
PIL + numpy preprocessing. :class:`models.embedder.Embedder` uses the same runners under its torch API; the service
uses :func:`open_exported` directly, so a process that serves an export never imports torch (its 0.5 GB resident
and its start time stay with training, jobs and the torch backend)."""
import logging
from enum import StrEnum
from pathlib import Path
from typing import Iterable, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .imaging import ResizeNormalizeArray, as_rgb_image
from .onnx_backend import PARTS_KEY, OnnxEmbedding, Spin, file_sha256, freshness, onnx_path_for, recorded_freshness
from .openvino_backend import (INT8_ELSEWHERE, OpenVinoEmbedding, UnknownPrecision, openvino_available,
                               ov_int8_path_for)

__all__ = ['Backend', 'ExportedEmbedder', 'ImageEmbedder', 'open_exported', 'int8_path_for', 'chunks']

_logger = logging.getLogger(__name__)


class Backend(StrEnum):
    TORCH = 'torch'  # eager PyTorch
    ONNX = 'onnx'  # ONNX Runtime on CHECKPOINT.onnx
    ONNX_INT8 = 'onnx-int8'  # ONNX Runtime on CHECKPOINT.int8.onnx (amg-reid export --int8)
    OPENVINO = 'openvino'  # OpenVINO's CPU plugin on CHECKPOINT.onnx (bf16 where the CPU has it)
    OPENVINO_INT8 = 'openvino-int8'  # OpenVINO on CHECKPOINT.int8.xml (NNCF INT8: amg-reid export --int8)
    AUTO = 'auto'  # OpenVINO (when installed) or ONNX Runtime when a fresh export exists, else torch (INT8
    #                exports first with prefer_int8: OpenVINO's, then ONNX Runtime's)


class ImageEmbedder(Protocol):
    """What the service needs of an embedder (:class:`ExportedEmbedder` or the torch :class:`Embedder`)."""
    backend: Backend
    precision: str
    batch_size: int

    @property
    def dim(self) -> int: ...

    @property
    def num_parts(self) -> int: ...

    @property
    def has_visibility(self) -> bool: ...

    def preprocess(self, item): ...

    def __call__(self, inputs) -> np.ndarray: ...

    def embed_with_visibility(self, inputs) -> Tuple[np.ndarray, np.ndarray]: ...


def int8_path_for(checkpoint: Union[str, Path]) -> Path:
    return Path(checkpoint).with_suffix('.int8.onnx')


Runner = Union[OnnxEmbedding, OpenVinoEmbedding]


class ExportedEmbedder:
    """Embed person crops with an exported model: paths, PIL images, HWC uint8 arrays or preprocessed (3, H, W)
    float32 arrays in; unit-norm float32 (B, D) out (flip-averaged when ``flip``)."""

    def __init__(self, runner: Runner, backend: Backend, precision: str, batch_size: int = 64,
                 flip: bool = False) -> None:
        self.runner, self.backend, self.precision = runner, backend, precision
        self.batch_size, self.flip = batch_size, flip
        self.img_size: Tuple[int, int] = runner.img_size
        self.transform = ResizeNormalizeArray(self.img_size)

    @property
    def dim(self) -> int:
        return self.runner.dim

    @property
    def num_parts(self) -> int:
        """LA row parts in the embedding: recorded by the export (older ones: one per 16-pixel patch row)."""
        return int(self.runner.metadata.get(PARTS_KEY, self.img_size[0] // 16))

    def preprocess(self, item) -> np.ndarray:
        """One input -> a normalised (3, H, W) float32 array (float32 CHW arrays are taken as already normalised)."""
        if isinstance(item, np.ndarray) and item.dtype == np.float32 and item.ndim == 3 and item.shape[0] == 3:
            return item
        return self.transform(as_rgb_image(item))

    @property
    def has_visibility(self) -> bool:
        """The export outputs the visibility head's per-part probabilities beside the embedding."""
        return self.runner.outputs > 1

    def visibility(self, inputs) -> np.ndarray:
        """Per-part visibility probabilities (N, parts) of the inputs (as :meth:`__call__` takes them)."""
        return self.embed_with_visibility(inputs)[1]

    def embed_with_visibility(self, inputs) -> Tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, D) as :meth:`__call__` gives them, visibility probabilities (N, parts)) from one pass
        (with ``flip``, both averaged over the image and its mirror)."""
        if not self.has_visibility:
            raise ValueError('this export has no visibility output (a model trained without --visibility)')
        feats, vis = [], []
        for x in self._batches(inputs):
            f, v = self._forward(x)[:2]
            feats.append(f)
            vis.append(v)
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.num_parts), np.float32)
        return np.concatenate(feats).astype(np.float32, copy=False), np.concatenate(vis).astype(np.float32, copy=False)

    def _batches(self, inputs) -> Iterable[np.ndarray]:
        """The inputs preprocessed, as (B <= batch_size, 3, H, W) arrays."""
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        for chunk in chunks(items, self.batch_size):
            yield np.stack([self.preprocess(i) for i in chunk])

    def _forward(self, x: np.ndarray) -> List[np.ndarray]:
        """Every output of a normalised batch; with ``flip``, of the batch and its mirror: the embeddings summed
        and made unit length again (as torch's F.normalize), the visibilities averaged."""
        out = self.runner.run_all(x)
        if self.flip:
            mirrored = self.runner.run_all(x[..., ::-1])
            f = out[0] + mirrored[0]
            f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            out = [f] + [(a + b) / 2 for a, b in zip(out[1:], mirrored[1:])]
        return out

    def embed_array(self, x: np.ndarray) -> np.ndarray:
        """A normalised batch (B, 3, H, W) -> (B, D)."""
        return self._forward(x)[0]

    def __call__(self, inputs) -> np.ndarray:
        out = [self.embed_array(x) for x in self._batches(inputs)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)


def open_exported(checkpoint: Union[str, Path], backend: Union[Backend, str] = Backend.AUTO,
                  threads: Optional[int] = None, prefer_int8: bool = False,
                  onnx_spin: Union[Spin, str, bool] = Spin.RUN, ov_precision: Optional[str] = 'auto',
                  batch_size: int = 64, flip: bool = False,
                  checkpoint_sha256: Optional[str] = None) -> Optional[ExportedEmbedder]:
    """The exported model ``backend`` asks for, beside ``checkpoint`` and fresh (it records the checkpoint's
    SHA-256), or None (torch must serve). ``auto``: the INT8 exports first when ``prefer_int8`` (OpenVINO's NNCF
    model where OpenVINO is installed, then ONNX Runtime's), then OpenVINO where it is installed, then ONNX
    Runtime. A stale or corrupt export, or a runtime that refuses it, falls back (INT8 or OpenVINO to fp32 ONNX
    Runtime) with a warning when it was asked for by name or exists. ``checkpoint_sha256``: the checkpoint's hash
    where the caller knows it (the service's model row); otherwise the file is hashed, once. An export whose record
    says it is stale is passed over before any runtime opens it."""
    backend = Backend(backend)  # ValueError names a wrong one
    if backend == Backend.TORCH:
        return None
    checkpoint = Path(checkpoint)
    auto_int8 = backend == Backend.AUTO and prefer_int8
    openvino = backend == Backend.OPENVINO or (backend == Backend.AUTO and openvino_available())
    attempts: List[Tuple[Backend, bool]] = []
    if backend == Backend.OPENVINO_INT8 or (auto_int8 and openvino):
        attempts.append((Backend.OPENVINO_INT8, backend == Backend.OPENVINO_INT8))
    if backend == Backend.ONNX_INT8 or auto_int8:
        attempts.append((Backend.ONNX_INT8, backend == Backend.ONNX_INT8))
    if openvino:
        attempts.append((Backend.OPENVINO, backend == Backend.OPENVINO))
    attempts.append((Backend.ONNX, backend != Backend.AUTO))
    sha = checkpoint_sha256 or None
    for kind, asked in attempts:
        if sha is None and _PATHS.get(kind, onnx_path_for)(checkpoint).is_file():
            sha = file_sha256(checkpoint)
        exported = _open(checkpoint, kind, threads, onnx_spin, ov_precision, batch_size, flip, warn=asked,
                         checkpoint_sha256=sha)
        if exported is not None:
            return exported
    return None


_LABELS = {Backend.ONNX_INT8: 'INT8 ONNX', Backend.OPENVINO: 'OpenVINO', Backend.OPENVINO_INT8: 'OpenVINO INT8',
           Backend.ONNX: 'ONNX Runtime'}
_PATHS = {Backend.ONNX_INT8: int8_path_for, Backend.OPENVINO_INT8: ov_int8_path_for}


def _open(checkpoint: Path, kind: Backend, threads, spin, ov_precision, batch_size: int, flip: bool,
          warn: bool, checkpoint_sha256: Optional[str] = None) -> Optional[ExportedEmbedder]:
    path = _PATHS.get(kind, onnx_path_for)(checkpoint)
    if not path.is_file():
        if warn:
            _logger.warning('not using %s: %s does not exist', _LABELS[kind], path)
        return None
    recorded = recorded_freshness(path, checkpoint, checkpoint_sha256)
    if recorded is not None and not recorded[0]:
        _logger.warning('not using %s: %s', _LABELS[kind], recorded[1])
        return None
    try:
        if kind == Backend.OPENVINO:
            runner: Runner = OpenVinoEmbedding(path, threads, ov_precision)
            precision = 'fp32' if runner.precision == 'f32' else runner.precision
        elif kind == Backend.OPENVINO_INT8:
            forced = (ov_precision or 'auto').strip().lower() not in ('', 'auto')
            runner = OpenVinoEmbedding(path, threads, ov_precision if forced else INT8_ELSEWHERE)
            precision = 'int8'
        else:
            runner = OnnxEmbedding(path, threads, spin=spin)
            precision = 'int8' if kind == Backend.ONNX_INT8 else 'fp32'
    except UnknownPrecision:
        raise
    except ValueError as e:
        reason = f'{path} is corrupt or not an embedding export ({e})'
    except ImportError as e:
        reason = f'{_LABELS[kind]} is not installed ({e})'
    except Exception as e:  # the runtime refuses the file: damaged, or an operator it lacks
        reason = f'{_LABELS[kind]} cannot run {path}: corrupt or unsupported ({e.__class__.__name__}: {e})'
    else:
        usable, reason = freshness(runner.metadata, path, checkpoint, checkpoint_sha256)
        if usable:
            return ExportedEmbedder(runner, kind, precision, batch_size, flip)
    _logger.warning('not using %s: %s', _LABELS[kind], reason)
    return None


def chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
