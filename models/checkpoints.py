"""Saving and loading models.

Our format is one ``.safetensors`` file whose header metadata holds the JSON architecture record
(:meth:`LATransformer.architecture`), so a pruned model reloads with no flags. Foreign weights are imported by one
pure ``state_dict -> state_dict`` filter per source, chosen by a key only that source has:

* timm ViT weights (``.pth``/``.bin``/``.safetensors``; ``.npz`` AugReg files through timm's own loader),
* LA-Transformer ``.pth`` state dicts (``model.*`` backbone, ``classifier{i}.*`` heads),
* the AMG seed's pruned checkpoints (``{'state_dict', 'channels', 'heads'}``, ``token_index`` masks).

Pickles are only ever read with ``torch.load(weights_only=True)``.
"""
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed

from .la_transformer import LATransformer, create_model, model_from_architecture
from .records import ARCH_KEY, EXTRA_KEY, CheckpointError, read_metadata

__all__ = ['save_checkpoint', 'load_model', 'read_metadata', 'CheckpointError',
           'filter_timm_vit', 'filter_la_transformer_pth', 'filter_amg_checkpoint']

_logger = logging.getLogger(__name__)
PathLike = Union[str, Path]


def save_checkpoint(model: LATransformer, path: PathLike, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write weights + architecture record (+ JSON-serialisable ``extra``, e.g. a calibrated threshold)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {ARCH_KEY: json.dumps(model.architecture()), EXTRA_KEY: json.dumps(extra or {})}
    tmp = path.with_name(path.name + '.tmp')
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under the real name
    return path


def load_model(
        path: PathLike,
        model_name: Optional[str] = None,
        *,
        num_classes: Optional[int] = None,
        img_size: Optional[Tuple[int, int]] = None,
        device: Union[str, torch.device] = 'cpu',
        **model_kwargs: Any,
) -> LATransformer:
    """Load any supported checkpoint.

    Our own ``.safetensors`` files rebuild their recorded architecture and need no other argument. Foreign weights
    need ``model_name``; ``num_classes`` defaults to the checkpoint's classifier size (0 when it has none) and
    ``img_size`` to the variant's (the position embedding is resampled when they differ).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        try:
            arch, _ = read_metadata(path)
            state = load_file(str(path))
        except Exception as e:  # safetensors raises several types for a damaged file
            # the error's own text can quote the file's bytes: name its kind only
            raise CheckpointError(f'cannot read {path} as safetensors ({e.__class__.__name__})') from e
        if arch is not None:
            model = model_from_architecture(arch)
            _load_strict(model, state, path)
            return model.to(device).eval()
    elif path.suffix == '.npz':
        return _load_npz(path, model_name, num_classes, img_size, device, **model_kwargs)
    else:
        try:
            state = torch.load(str(path), map_location='cpu', weights_only=True)
        except Exception as e:
            raise CheckpointError(f'cannot read {path} as a weights-only torch file ({e.__class__.__name__})') from e

    if model_name is None:
        raise CheckpointError(f'{path} has no architecture record: pass the model name (--model)')
    ckpt = _unwrap(state)
    if 'channels' in ckpt and 'heads' in ckpt:
        sd, heads, kv_index = filter_amg_checkpoint(ckpt)
        model_kwargs.update(num_heads=heads, kv_index=kv_index)
    else:
        sd = filter_la_transformer_pth(ckpt) if _is_la_transformer(ckpt) else filter_timm_vit(ckpt)
    return load_model_from_state(sd, model_name, num_classes=num_classes, img_size=img_size, device=device,
                                 source=path, **model_kwargs)


# ---- filters ----------------------------------------------------------------------------------------------------
def _unwrap(obj: Any) -> Dict[str, Any]:
    """Strip training wrappers ({'state_dict': ...}, {'model': ...}); the AMG seed's top-level dict is kept whole."""
    if isinstance(obj, dict) and {'state_dict', 'channels', 'heads'} <= obj.keys():
        return obj
    for key in ('state_dict', 'model', 'model_state_dict'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return _unwrap(obj[key])
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError('checkpoint does not contain a state dict of tensors')
    return obj


def _is_la_transformer(sd: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith('classifier0.') for k in sd) or any(k.startswith('model.blocks.') for k in sd)


def filter_timm_vit(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm VisionTransformer state dict -> ours (drops the ImageNet head and timm-only identity layers)."""
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    drop = ('head.', 'fc_norm.', 'pre_logits.', 'norm_pre.', 'head_drop.')
    return {k: v for k, v in sd.items() if not k.startswith(drop) and not k.endswith('attn.token_index')}


_LA_CLASSIFIER = re.compile(r'^classifier(\d+)\.(add_block\.\d+|classifier\.0)\.(.+)$')


def filter_la_transformer_pth(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """LA-Transformer state dict (``model.`` backbone, ``classifier{i}.add_block/classifier.0``) -> ours."""
    out = {}
    for k, v in sd.items():
        k = k[len('module.'):] if k.startswith('module.') else k
        m = _LA_CLASSIFIER.match(k)
        if m:
            i, part, rest = m.groups()
            part = 'classifier' if part == 'classifier.0' else part
            out[f'classifiers.{i}.{part}.{rest}'] = v
        elif k.startswith('model.'):
            out[k[len('model.'):]] = v
        # other keys (the LA-Transformer's unused avgpool etc.) carry no weights we use
    return filter_timm_vit(out)


def filter_amg_checkpoint(ckpt: Dict[str, Any]):
    """The AMG seed's pruned checkpoint -> (state dict, heads per block, kept key/value positions per block).

    Heads are read from the ``qkv`` shapes (head_dim 64), which the seed's ``heads`` list must agree with; the kept
    tokens are the True positions of each block's boolean ``token_index`` (CLS included).
    """
    sd = ckpt['state_dict']
    token_index = {}
    for k, v in sd.items():
        m = re.search(r'blocks\.(\d+)\.attn\.token_index$', k)
        if m:
            token_index[int(m.group(1))] = torch.as_tensor(v).bool()
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.search(r'blocks\.(\d+)\.', k)))
    heads = []
    for i in range(depth):
        key = next(k for k in sd if re.search(rf'blocks\.{i}\.attn\.qkv\.weight$', k))
        heads.append(sd[key].shape[0] // (3 * 64))
    if list(ckpt['heads']) != heads:
        raise CheckpointError(f'checkpoint heads {list(ckpt["heads"])} disagree with qkv shapes {heads}')
    kv_index = []
    for i in range(depth):
        mask = token_index.get(i)
        kv_index.append(None if mask is None or bool(mask.all()) else mask.nonzero().flatten().tolist())
    inner = filter_la_transformer_pth(sd) if _is_la_transformer(sd) else filter_timm_vit(sd)
    return inner, heads, kv_index


def _resample_pos_embed(sd: Dict[str, torch.Tensor], model: LATransformer) -> Dict[str, torch.Tensor]:
    pos = sd.get('pos_embed')
    if pos is not None and pos.shape != model.pos_embed.shape:
        _logger.info('resampling pos_embed %s -> %s', tuple(pos.shape), tuple(model.pos_embed.shape))
        sd = dict(sd, pos_embed=resample_abs_pos_embed(pos, list(model.grid_size), num_prefix_tokens=1))
    return sd


def _load_strict(model: LATransformer, sd: Dict[str, torch.Tensor], path: Path,
                 allow_missing_classifiers: bool = False) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not (allow_missing_classifiers and k.startswith('classifiers.'))]
    unexpected = [k for k in sd if k not in own]
    wrong = [f'{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}' for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f'{path} does not fit {model.name}: missing {missing[:5]}, unexpected {unexpected[:5]}, shape {wrong[:5]}')
    model.load_state_dict(sd, strict=False)


def _load_npz(path: Path, model_name: Optional[str], num_classes: Optional[int], img_size: Optional[Tuple[int, int]],
              device: Union[str, torch.device], **model_kwargs: Any) -> LATransformer:
    """Google AugReg ``.npz`` through timm's own Flax loader, then into our model."""
    from timm.models.vision_transformer import VisionTransformer, _load_weights
    if model_name is None:
        raise CheckpointError(f'{path} has no architecture record: pass the model name (--model)')
    ours = create_model(model_name, **model_kwargs)
    try:
        with np.load(path) as npz:
            grid = int(round((npz['Transformer/posembed_input/pos_embedding'].shape[1] - 1) ** 0.5))
    except Exception as e:
        raise CheckpointError(f'cannot read {path} as a timm/AugReg npz: {e}') from e
    vit = VisionTransformer(img_size=grid * ours.patch_size, patch_size=ours.patch_size, embed_dim=ours.embed_dim,
                            depth=len(ours.blocks), num_heads=ours.heads_per_block()[0], num_classes=0)
    try:
        _load_weights(vit, str(path))
    except Exception as e:
        raise CheckpointError(f'cannot read {path} as a timm/AugReg npz: {e}') from e
    return load_model_from_state(filter_timm_vit(vit.state_dict()), model_name, num_classes=num_classes,
                                 img_size=img_size, device=device, source=path, **model_kwargs)


def load_model_from_state(sd: Dict[str, torch.Tensor], model_name: str, *, num_classes: Optional[int] = None,
                          img_size: Optional[Tuple[int, int]] = None, device: Union[str, torch.device] = 'cpu',
                          source: PathLike = '<state dict>', **model_kwargs: Any) -> LATransformer:
    """Build ``model_name`` and load a state dict already in our naming (the end of every import path)."""
    if num_classes is None:
        weight = sd.get('classifiers.0.classifier.weight')
        num_classes = 0 if weight is None else weight.shape[0]
    kwargs = dict(model_kwargs, num_classes=num_classes)
    if img_size is not None:
        kwargs['img_size'] = tuple(img_size)
    model = create_model(model_name, **kwargs)
    _load_strict(model, _resample_pos_embed(sd, model), Path(source), allow_missing_classifiers=True)
    return model.to(device).eval()
