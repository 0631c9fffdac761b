"""Exports that need the data: the INT8 models calibrated on training images (``train``/``prune --int8``,
``amg-reid export --int8``, train and prune jobs with ``int8``): ONNX Runtime's, and OpenVINO's by NNCF where
``openvino`` and ``nncf`` are installed (whichever is faster depends on the CPU: docs/benchmarks.md section 4)."""
import logging
import random
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from models.imaging import ResizeNormalizeArray, open_image
from models.onnx_backend import onnx_path_for, onnx_status
from models.openvino_backend import export_openvino_int8, ov_int8_path_for
from models.quantize import export_int8

from .datasets import ImageRecord

__all__ = ['export_int8_calibrated', 'export_openvino_int8_calibrated', 'nncf_available', 'CALIBRATION_IMAGES']

_logger = logging.getLogger(__name__)
CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 16


def nncf_available() -> bool:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def _calibration_paths(records: Sequence[ImageRecord], count: int, seed: int):
    paths = [r.path for r in records]
    return random.Random(seed).sample(paths, min(count, len(paths)))  # every identity's look, occluded or not


def export_int8_calibrated(checkpoint: Union[str, Path], records: Sequence[ImageRecord],
                           count: int = CALIBRATION_IMAGES, seed: int = 0, openvino: Optional[bool] = None) -> Path:
    """``CHECKPOINT.int8.onnx`` (returned), calibrated on ``count`` of ``records`` drawn at random; and, when
    ``openvino`` (None: where openvino and nncf are installed), ``CHECKPOINT.int8.xml`` from the same images."""
    out = export_int8(checkpoint, _calibration_paths(records, count, seed))
    if openvino or (openvino is None and nncf_available()):
        export_openvino_int8_calibrated(checkpoint, records, count, seed)
    return out


def export_openvino_int8_calibrated(checkpoint: Union[str, Path], records: Sequence[ImageRecord],
                                    count: int = CALIBRATION_IMAGES, seed: int = 0) -> Path:
    """``CHECKPOINT.int8.xml``: NNCF's post-training INT8 of the ONNX export (written first if missing or stale),
    calibrated on ``count`` of ``records`` drawn at random."""
    checkpoint = Path(checkpoint)
    onnx_file = onnx_path_for(checkpoint)
    if not onnx_status(onnx_file, checkpoint)[0]:
        from models.checkpoints import load_model
        from models.export import export_onnx, file_sha256
        export_onnx(load_model(checkpoint), onnx_file, checkpoint_sha256=file_sha256(checkpoint))
    paths = _calibration_paths(records, count, seed)

    def batches(img_size):
        transform = ResizeNormalizeArray(img_size)
        return [np.stack([transform(open_image(p)) for p in paths[i:i + CALIBRATION_BATCH]])
                for i in range(0, len(paths), CALIBRATION_BATCH)]
    out = export_openvino_int8(onnx_file, ov_int8_path_for(checkpoint), batches)
    _logger.info('wrote %s (NNCF INT8, calibrated on %d images)', out, len(paths))
    return out
