"""OpenVINO's CPU plugin on the ONNX export of an embedding (``amg-reid export``; the same freshness check as ONNX
Runtime's, models.onnx_backend.onnx_status).

Precision follows the CPU unless forced (``precision=``, the service's ``AMG_OV_PRECISION``): bf16 where the CPU
runs it natively (AMX or AVX-512 BF16: OpenVINO lists ``BF16`` among the CPU plugin's optimisation capabilities),
fp32 elsewhere (AVX2-only CPUs). The LATENCY hint: on two cores THROUGHPUT was slower (the edge-speed issue's by-hand
figures, head67+token40 at batch 32: 129 vs 233 images/s).
"""
import os
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .onnx_backend import PARTS_KEY, SHA256_KEY, write_export_record

__all__ = ['OpenVinoEmbedding', 'cpu_precision', 'openvino_available', 'PRECISIONS', 'UnknownPrecision',
           'ov_int8_path_for', 'export_openvino_int8', 'INT8_ELSEWHERE']

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


# An NNCF INT8 model runs its quantised MatMuls in INT8 (VNNI / AMX) and the rest in this precision: f32 was faster
# than bf16 for the pruned models at batch 1 and 32 on an AVX-512 BF16 CPU (head67+token40 224x224, 214 vs 155 and
# 400 vs 270 img/s: docs/benchmarks.md section 4), the same for the unpruned one. AMG_OV_PRECISION overrides it.
INT8_ELSEWHERE = 'f32'


def ov_int8_path_for(checkpoint: Union[str, Path]) -> Path:
    """Where the NNCF INT8 model of ``checkpoint`` lies: OpenVINO IR (``.int8.xml`` + ``.int8.bin``)."""
    return Path(checkpoint).with_suffix('.int8.xml')


def _record(model) -> Dict[str, str]:
    """The ONNX export's metadata (checkpoint hash, part count), as OpenVINO keeps it in the model's rt_info."""
    return {key: model.get_rt_info(['framework', key]).astype(str) for key in (SHA256_KEY, PARTS_KEY)
            if model.has_rt_info(['framework', key])}


def export_openvino_int8(onnx_path: Union[str, Path], output: Union[str, Path],
                         calibration: Callable[[Tuple[int, int]], Sequence[np.ndarray]]) -> Path:
    """Post-training INT8 by NNCF (``nncf.quantize``, transformer preset) of the ONNX export ``onnx_path``,
    calibrated on ``calibration((H, W))`` (preprocessed (B, 3, H, W) batches at the export's input size), written as
    OpenVINO IR with the export's checkpoint record (so a stale one is never served)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise RuntimeError("OpenVINO INT8 needs openvino and nncf: pip install -e '.[openvino]'") from e
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    batches = list(calibration(tuple(d.get_length() for d in model.input(0).get_partial_shape()[2:])))
    quantized = nncf.quantize(model, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(batches))
    record = {SHA256_KEY: '', **_record(model), 'amg_reid.precision': 'int8'}
    for key, value in record.items():
        quantized.set_rt_info(value, ['framework', key])
    output = Path(output)
    ov.save_model(quantized, str(output), compress_to_fp16=False)
    write_export_record(output, record)
    return output


class OpenVinoEmbedding:
    """``images (B, 3, H, W) float32 -> embeddings (B, D)`` through OpenVINO on the CPU, from an ONNX export or an
    OpenVINO IR (the NNCF INT8 model). ``precision``: 'auto' (from the CPU), 'bf16' or 'f32' (for an INT8 model:
    of its unquantised parts); :attr:`precision` is what runs."""

    def __init__(self, onnx_path: Union[str, Path], threads: Optional[int] = None,
                 precision: Optional[str] = 'auto') -> None:
        import openvino as ov
        self.precision = resolve_precision(precision)
        core = ov.Core()
        config = {'INFERENCE_PRECISION_HINT': self.precision, 'PERFORMANCE_HINT': 'LATENCY',
                  'INFERENCE_NUM_THREADS': int(threads or os.cpu_count() or 1)}
        model = core.read_model(str(onnx_path))
        self.metadata: Dict[str, str] = _record(model)
        _, _, h, w = (d.get_length() if d.is_static else None for d in model.input(0).get_partial_shape())
        dim = model.output(0).get_partial_shape()[1]
        if not (h and w and dim.is_static):
            raise ValueError(f'{onnx_path}: input and output sizes are not fixed after the batch axis')
        self.img_size: Tuple[int, int] = (h, w)
        self.dim: int = dim.get_length()
        self.compiled = core.compile_model(model, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        self.outputs = len(self.compiled.outputs)  # 2: the visibility head's probabilities follow

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_all(images)[0]

    def run_all(self, images: np.ndarray) -> list:
        """Every output: [embedding (B, D)] or [embedding, visibility (B, parts)], as copies (the request reuses
        its output buffers)."""
        result = self.request.infer([np.ascontiguousarray(images, dtype=np.float32)])
        return [np.array(result[out], dtype=np.float32) for out in self.compiled.outputs]
