"""A small user-facing API: load a checkpoint once, embed images in batches (like torchreid's FeatureExtractor)."""
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .checkpoints import PathLike, load_model
from .imaging import ImageError, as_rgb_image, open_image
from .la_transformer import LATransformer
from .onnx_backend import Spin
from .runtime import Backend, ExportedEmbedder, chunks, open_exported
from .transforms import build_transform

__all__ = ['Embedder', 'Backend', 'ImageInput', 'open_image', 'ImageError']

_logger = logging.getLogger(__name__)
ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


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
        self._exported: Optional[ExportedEmbedder] = None  # an exported graph's runner (models.runtime)
        backend = Backend(backend)  # ValueError names a wrong one
        if backend != Backend.TORCH:
            if isinstance(model, LATransformer):
                raise ValueError(f'the {backend} backend needs a checkpoint path (its .onnx lies beside it)')
            self._exported = open_exported(model, backend, threads, prefer_int8, onnx_spin, ov_precision,
                                           batch_size, flip)
            if self._exported is not None:
                self.backend, self.precision = self._exported.backend, self._exported.precision

    @property
    def dim(self) -> int:
        return self.model.embedding_dim

    @property
    def num_parts(self) -> int:
        return self.model.num_parts

    @property
    def has_visibility(self) -> bool:
        return self.model.has_visibility

    def preprocess(self, item: ImageInput) -> torch.Tensor:
        """One input -> a normalised (3, H, W) tensor (tensors are taken as already normalised)."""
        if isinstance(item, torch.Tensor):
            return item
        return self.transform(as_rgb_image(item))

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch (B, 3, H, W) -> (B, D) embeddings (flip-averaged when ``flip``)."""
        if self._exported is not None:
            return torch.from_numpy(self._exported.embed_array(x.cpu().numpy()))
        x = x.to(self.device)
        f = self.model.embed(x)
        if self.flip:
            f = torch.nn.functional.normalize(f + self.model.embed(x.flip(-1)), dim=1)
        return f

    @staticmethod
    def _items(inputs) -> List[ImageInput]:
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            return list(inputs)
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    @torch.no_grad()
    def embed_with_visibility(self, inputs: Union[ImageInput, Sequence[ImageInput]]) -> Tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, D) as calling it gives them, the visibility head's probabilities (N, parts)) from one
        pass (with ``flip``, both averaged over the image and its mirror). Needs a model with the head."""
        items = self._items(inputs)
        if self._exported is not None:
            return self._exported.embed_with_visibility([self.preprocess(i).detach().cpu().numpy() for i in items])
        if not self.has_visibility:
            raise ValueError('this model has no visibility head (trained without --visibility)')
        feats, vis = [], []
        for chunk in chunks(items, self.batch_size):
            x = torch.stack([self.preprocess(i) for i in chunk]).to(self.device)
            views = [x, x.flip(-1)] if self.flip else [x]
            tokens = [self.model.forward_features(v) for v in views]
            f = sum(self.model.forward_head(t, pre_logits=True) for t in tokens)
            feats.append(torch.nn.functional.normalize(f, dim=1).cpu() if self.flip else f.cpu())
            vis.append((sum(torch.sigmoid(self.model.forward_visibility(t)) for t in tokens) / len(views)).cpu())
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.num_parts), np.float32)
        return torch.cat(feats).numpy().astype(np.float32), torch.cat(vis).numpy().astype(np.float32)

    def __call__(self, inputs: Union[ImageInput, Sequence[ImageInput]]) -> np.ndarray:
        items = self._items(inputs)
        if self._exported is not None:
            # numpy from the inputs to the embeddings: no torch op (a stack of a batch, a flip) on the service's
            # model thread, whose parallel regions would wake torch's OpenMP team beside ONNX Runtime's threads on
            # the same cores (a woken team spins after its work: docs/benchmarks.md 5b)
            return self._exported([self.preprocess(i).detach().cpu().numpy() for i in items])
        out = [self.embed_tensor(torch.stack([self.preprocess(i) for i in chunk])).cpu()
               for chunk in chunks(items, self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32)
