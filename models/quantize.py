"""INT8 models for the edge: static quantisation of the ONNX export with ONNX Runtime's tools.

QDQ format, 8-bit per-channel weights and 8-bit activations on the linear layers and attention products (MatMul,
Gemm), calibrated by MinMax on a few hundred images the model was trained on. Works the same for every model kind
(unpruned, head- and key/value-pruned, token-dropping): it quantises the exported graph, whatever its shapes.
The INT8 file records the checkpoint's SHA-256 like the fp32 export, so a stale one is never served."""
import logging
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from .export import export_onnx
from .onnx_backend import PARTS_KEY, SHA256_KEY, file_sha256, write_export_record
from .runtime import int8_path_for

__all__ = ['int8_path_for', 'export_int8', 'QUANTIZED_OPS']

_logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
QUANTIZED_OPS = ['MatMul', 'Gemm']


def _calibration_batches(images: Sequence[PathLike], img_size, batch_size: int) -> Iterator[np.ndarray]:
    from .imaging import open_image
    from .transforms import build_transform
    transform = build_transform(img_size)
    for start in range(0, len(images), batch_size):
        yield np.stack([transform(open_image(p)).numpy() for p in images[start:start + batch_size]])


def export_int8(checkpoint: PathLike, calibration_images: Sequence[PathLike], output: Optional[PathLike] = None,
                batch_size: int = 16) -> Path:
    """Write ``CHECKPOINT.int8.onnx`` (or ``output``) from ``checkpoint``, calibrated on ``calibration_images``."""
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise RuntimeError("INT8 export needs onnx, onnxscript and onnxruntime: pip install 'amg-reid[export]'") from e
    from .checkpoints import load_model
    if not calibration_images:
        raise ValueError('INT8 calibration needs images (e.g. the training split of --data-dir)')
    model = load_model(checkpoint)
    sha = file_sha256(checkpoint)
    out = Path(output or int8_path_for(checkpoint))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _calibration_batches(list(calibration_images), model.img_size, batch_size)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'images': batch}

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / 'fp32.onnx', checkpoint_sha256=sha)
        prepared = Path(tmp) / 'prepared.onnx'
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # folds and infers shapes
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANTIZED_OPS, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    for key, value in {SHA256_KEY: sha, 'amg_reid.model': model.name, PARTS_KEY: str(model.num_parts),
                       'amg_reid.precision': 'int8'}.items():
        if meta.get(key) != value:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    write_export_record(out, {p.key: p.value for p in proto.metadata_props})
    _logger.info('wrote %s (INT8, calibrated on %d images)', out, len(calibration_images))
    return out
