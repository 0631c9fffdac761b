"""OpenVINO's CPU plugin on the ONNX export of an embedding (``amg-reid export``; the same freshness check as ONNX
Runtime's, models.onnx_backend.onnx_status).

Precision follows the CPU unless forced (``precision=``, the service's ``AMG_OV_PRECISION``): bf16 where the CPU
runs it natively (AMX or AVX-512 BF16: OpenVINO lists ``BF16`` among the CPU plugin's optimisation capabilities),
fp32 elsewhere (AVX2-only CPUs). The LATENCY hint: on two cores THROUGHPUT was slower (the edge-speed issue's by-hand
figures, head67+token40 at batch 32: 129 vs 233 images/s).
"""
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .onnx_backend import SHA256_KEY

__all__ = ['OpenVinoEmbedding', 'cpu_precision', 'openvino_available', 'PRECISIONS', 'UnknownPrecision']

PRECISIONS = ('bf16', 'f32')
_ALIASES = {'fp32': 'f32', 'float32': 'f32', 'bfloat16': 'bf16', '': 'auto'}


class UnknownPrecision(ValueError):
    """A precision OpenVINO does not have: the caller's mistake, never a reason to fall back."""


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def cpu_precision() -> str:
    """'bf16' where OpenVINO's CPU plugin runs bf16 natively, else 'f32'."""
    import openvino as ov
    return 'bf16' if 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES') else 'f32'


def resolve_precision(precision: Optional[str]) -> str:
    text = _ALIASES.get((precision or 'auto').strip().lower(), (precision or '').strip().lower())
    if text == 'auto':
        return cpu_precision()
    if text not in PRECISIONS:
        raise UnknownPrecision(f'OpenVINO precision {precision!r}: one of auto, {", ".join(PRECISIONS)}')
    return text


class OpenVinoEmbedding:
    """``images (B, 3, H, W) float32 -> embeddings (B, D)`` through OpenVINO on the CPU. ``precision``: 'auto'
    (from the CPU), 'bf16' or 'f32'; :attr:`precision` is what runs."""

    def __init__(self, onnx_path: Union[str, Path], threads: Optional[int] = None,
                 precision: Optional[str] = 'auto') -> None:
        import openvino as ov
        self.precision = resolve_precision(precision)
        core = ov.Core()
        config = {'INFERENCE_PRECISION_HINT': self.precision, 'PERFORMANCE_HINT': 'LATENCY',
                  'INFERENCE_NUM_THREADS': int(threads or os.cpu_count() or 1)}
        model = core.read_model(str(onnx_path))
        self.metadata: Dict[str, str] = {}  # ONNX Runtime's custom metadata map, as OpenVINO keeps it
        if model.has_rt_info(['framework', SHA256_KEY]):
            self.metadata[SHA256_KEY] = model.get_rt_info(['framework', SHA256_KEY]).astype(str)
        _, _, h, w = (d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape())
        dim = model.output(0).get_partial_shape()[1]
        if not (h and w and dim.is_static):
            raise ValueError(f'{onnx_path}: input and output sizes are not fixed after the batch axis')
        self.img_size: Tuple[int, int] = (h, w)
        self.dim: int = dim.get_length()
        self.compiled = core.compile_model(model, 'CPU', config)
        self.output = self.compiled.output(0)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        result = self.request.infer([np.ascontiguousarray(images, dtype=np.float32)])
        return np.array(result[self.output], dtype=np.float32)  # a copy: the request reuses its output buffer
