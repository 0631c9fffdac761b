"""A small user-facing API: load a checkpoint once, embed images in batches (like torchreid's FeatureExtractor)."""
import logging
from enum import StrEnum
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .checkpoints import PathLike, load_model
from .imaging import ImageError, open_image
from .la_transformer import LATransformer
from .onnx_backend import OnnxEmbedding, Spin, onnx_path_for, onnx_status
from .openvino_backend import OpenVinoEmbedding, openvino_available
from .quantize import int8_path_for
from .transforms import build_transform

__all__ = ['Embedder', 'Backend', 'ImageInput', 'open_image', 'ImageError']

_logger = logging.getLogger(__name__)
ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


class Backend(StrEnum):
    TORCH = 'torch'  # eager PyTorch
    ONNX = 'onnx'  # ONNX Runtime on CHECKPOINT.onnx
    ONNX_INT8 = 'onnx-int8'  # ONNX Runtime on CHECKPOINT.int8.onnx (amg-reid export --int8)
    OPENVINO = 'openvino'  # OpenVINO's CPU plugin on CHECKPOINT.onnx (bf16 where the CPU has it)
    AUTO = 'auto'  # OpenVINO (when installed) or ONNX Runtime when a fresh export exists, else torch


class Embedder:
    """Embed person crops with an LA-Transformer.

    Args:
        model: a checkpoint path (any format :func:`models.checkpoints.load_model` reads) or a model.
        model_name: needed only for foreign checkpoints without an architecture record.
        device: 'cpu', 'cuda', ...
        batch_size: images per forward pass.
        flip: average the embeddings of each image and its mirror (then re-normalise).
        backend: 'torch' (eager), 'onnx' (ONNX Runtime on the CPU, from ``CHECKPOINT.onnx``), 'onnx-int8' (from
            ``CHECKPOINT.int8.onnx``), 'openvino' (OpenVINO's CPU plugin on ``CHECKPOINT.onnx``) or 'auto' (when a
            fresh export is present: the INT8 one first when ``prefer_int8``, then OpenVINO where it is installed,
            then ONNX Runtime; else torch). A stale or corrupt export, or a runtime that refuses it, falls back (INT8
            or OpenVINO to fp32 ONNX Runtime to torch) with a warning; :attr:`backend` says which one runs and
            :attr:`precision` in what precision.
        threads: ONNX Runtime or OpenVINO threads (default: the machine's cores).
        ov_precision: OpenVINO's inference precision: 'auto' (bf16 where the CPU runs it natively, else f32),
            'bf16' or 'f32'.
        onnx_spin: when ONNX Runtime's threads busy-wait (:class:`Spin`): 'run' (only during a forward, so other
            work and other sessions of the process get the cores between forwards), 'always' (ONNX Runtime's
            default: between forwards too), 'off'.

    Call it with a path, a PIL image, an HWC uint8 array, a (C, H, W) / (B, C, H, W) normalised tensor, or a list of
    those; it returns a float32 array (B, D) of unit-norm embeddings.

    Example::

        embedder = Embedder('runs/demo/best.safetensors')
        xb = embedder(['a.jpg', 'b.jpg'])   # (2, parts * dim)
    """

    def __init__(self, model: Union[PathLike, LATransformer], model_name: Optional[str] = None,
                 device: Union[str, torch.device] = 'cpu', batch_size: int = 64, flip: bool = False,
                 backend: 'Backend' = 'torch', threads: Optional[int] = None, prefer_int8: bool = False,
                 onnx_spin: Union[Spin, str, bool] = Spin.RUN, ov_precision: Optional[str] = 'auto') -> None:
        self.model = model if isinstance(model, LATransformer) else load_model(model, model_name, device=device)
        self.model.eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.flip = flip
        self.transform = build_transform(self.model.img_size)
        self.backend = Backend.TORCH
        self.precision = 'fp32'
        self._onnx: Optional[Union[OnnxEmbedding, OpenVinoEmbedding]] = None  # an exported graph's runner
        self._onnx_spin = Spin.parse(onnx_spin)
        backend = Backend(backend)  # ValueError names a wrong one
        if backend != Backend.TORCH:
            if isinstance(model, LATransformer):
                raise ValueError(f'the {backend} backend needs a checkpoint path (its .onnx lies beside it)')
            checkpoint = Path(model)
            int8 = backend == Backend.ONNX_INT8 or (backend == Backend.AUTO and prefer_int8)
            openvino = backend == Backend.OPENVINO or (backend == Backend.AUTO and openvino_available())
            if not (int8 and self._try_onnx(checkpoint, threads, True, warn=backend == Backend.ONNX_INT8)) and \
                    not (openvino and self._try_openvino(checkpoint, threads, ov_precision,
                                                         warn=backend == Backend.OPENVINO)):
                self._try_onnx(checkpoint, threads, False, warn=backend != Backend.AUTO)

    def _try_onnx(self, checkpoint: Path, threads: Optional[int], int8: bool, warn: bool) -> bool:
        onnx_file = int8_path_for(checkpoint) if int8 else onnx_path_for(checkpoint)
        usable, reason = onnx_status(onnx_file, checkpoint)
        if usable:
            try:
                self._onnx = OnnxEmbedding(onnx_file, threads, spin=self._onnx_spin)
                self.backend = Backend.ONNX_INT8 if int8 else Backend.ONNX
                self.precision = 'int8' if int8 else 'fp32'
                return True
            except Exception as e:  # onnxruntime missing or refusing the graph
                usable, reason = False, f'ONNX Runtime cannot run {onnx_file}: {e}'
        if warn or onnx_file.exists():
            _logger.warning('not using %s: %s', 'INT8 ONNX' if int8 else 'ONNX Runtime', reason)
        return False

    def _try_openvino(self, checkpoint: Path, threads: Optional[int], precision: Optional[str], warn: bool) -> bool:
        onnx_file = onnx_path_for(checkpoint)
        usable, reason = onnx_status(onnx_file, checkpoint)
        if usable:
            try:
                self._onnx = OpenVinoEmbedding(onnx_file, threads, precision)
                self.backend = Backend.OPENVINO
                self.precision = 'fp32' if self._onnx.precision == 'f32' else self._onnx.precision
                return True
            except ValueError:  # a precision that does not exist: the caller's mistake
                raise
            except Exception as e:  # openvino missing or refusing the graph
                usable, reason = False, f'OpenVINO cannot run {onnx_file}: {e}'
        if warn or onnx_file.exists():
            _logger.warning('not using OpenVINO: %s', reason)
        return False

    @property
    def dim(self) -> int:
        return self.model.embedding_dim

    def preprocess(self, item: ImageInput) -> torch.Tensor:
        """One input -> a normalised (3, H, W) tensor (tensors are taken as already normalised)."""
        if isinstance(item, torch.Tensor):
            return item
        if isinstance(item, (str, Path)):
            item = open_image(item)
        elif isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] not in (1, 3, 4):
                raise ImageError(f'arrays must be HWC images, got shape {item.shape}')
            item = Image.fromarray(item.astype(np.uint8)).convert('RGB')
        elif isinstance(item, Image.Image):
            item = item.convert('RGB')
        else:
            raise ImageError(f'unsupported input type {type(item).__name__}')
        return self.transform(item)

    def _embed_onnx(self, x: np.ndarray) -> np.ndarray:
        # numpy from the inputs to the embeddings: no torch op (a stack of a batch, a flip) on the service's model
        # thread, whose parallel regions would wake torch's OpenMP team beside ONNX Runtime's threads on the same
        # cores (a woken team spins after its work: docs/benchmarks.md 5b)
        f = self._onnx(x)
        if self.flip:
            f = f + self._onnx(x[..., ::-1])
            f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)  # as torch's F.normalize
        return f

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch (B, 3, H, W) -> (B, D) embeddings (flip-averaged when ``flip``)."""
        if self._onnx is not None:
            return torch.from_numpy(self._embed_onnx(x.cpu().numpy()))
        x = x.to(self.device)
        f = self.model.embed(x)
        if self.flip:
            f = torch.nn.functional.normalize(f + self.model.embed(x.flip(-1)), dim=1)
        return f

    def __call__(self, inputs: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            items: List[ImageInput] = list(inputs)
        elif isinstance(inputs, (list, tuple)):
            items = list(inputs)
        else:
            items = [inputs]
        if self._onnx is not None:
            out = [self._embed_onnx(np.stack([self.preprocess(i).detach().cpu().numpy() for i in chunk]))
                   for chunk in _chunks(items, self.batch_size)]
            return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)
        out = [self.embed_tensor(torch.stack([self.preprocess(i) for i in chunk])).cpu()
               for chunk in _chunks(items, self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
