"""ONNX export of the retrieval embedding (any model: unpruned, head-pruned, key/value-pruned)."""
import logging
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .la_transformer import LATransformer
from .onnx_backend import PARTS_KEY, SHA256_KEY, file_sha256, write_export_record

__all__ = ['export_onnx', 'file_sha256']

_logger = logging.getLogger(__name__)


class _Embedding(nn.Module):
    def __init__(self, model: LATransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        if not self.model.has_visibility:
            return self.model.embed(x)
        tokens = self.model.forward_features(x)  # one pass for both outputs
        return (self.model.forward_head(tokens, pre_logits=True),
                torch.sigmoid(self.model.forward_visibility(tokens)))


def export_onnx(model: LATransformer, path: Union[str, Path], opset: int = 18, checkpoint_sha256: str = '') -> Path:
    """Write ``images (B, 3, H, W) -> embedding (B, D)`` with a dynamic batch axis; a model with the visibility
    head also outputs ``visibility (B, parts)``, its per-part probabilities (the embedding stays output 0).

    ``checkpoint_sha256`` is stored in the ONNX metadata, so a reader can tell a stale export from a fresh one.
    Needs the ``onnx`` and ``onnxscript`` packages (``pip install 'amg-reid[export]'``).
    """
    try:
        import onnx
    except ImportError as e:
        raise RuntimeError("ONNX export needs the onnx and onnxscript packages: pip install 'amg-reid[export]'") from e
    path = Path(path)
    model = model.eval()
    h, w = model.img_size
    x = torch.zeros(2, 3, h, w, device=model.cls_token.device)
    batch = torch.export.Dim('batch', min=1, max=4096)
    outputs = ['embedding', 'visibility'] if model.has_visibility else ['embedding']
    program = torch.onnx.export(_Embedding(model).eval(), (x,), input_names=['images'], output_names=outputs,
                                dynamic_shapes={'x': {0: batch}}, opset_version=opset, dynamo=True)
    program.save(str(path))
    proto = onnx.load(str(path))
    meta = {SHA256_KEY: checkpoint_sha256, 'amg_reid.model': model.name, PARTS_KEY: str(model.num_parts)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    write_export_record(path, meta)
    return path
