"""Run options declared once: a config model's fields are the CLI's flags and the API's job parameters.

A field's name gives its flags (``--batch-size`` and the seed's ``--batch_size``), its annotation the parsing, its
``description`` the help, its default the default and its bounds the validation, everywhere. ``CLI_ALIASES`` adds the
seed's other spellings; ``SERVER_OWNED`` names what a job may not choose (output paths, the device).
"""
import argparse
import enum
import types
import typing
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Type

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ['RunConfig', 'ImageSize', 'add_config_arguments', 'config_from_args', 'job_params_model']

_Side = typing.Annotated[int, Field(ge=16, le=512)]  # a person crop: 224 (ViT), 256x128 (Re-ID)
ImageSize = Tuple[_Side, _Side]  # (height, width) in pixels


class RunConfig(BaseModel):
    """Base of the train and prune configs: unknown keys and non-finite floats are errors."""
    model_config = ConfigDict(extra='forbid', allow_inf_nan=False, protected_namespaces=())

    # the seed's other spellings (an alias applies to the configs that have the field)
    CLI_ALIASES: ClassVar[Dict[str, Tuple[str, ...]]] = {'weight_decay': ('--wd',), 'num_workers': ('--workers',)}
    SERVER_OWNED: ClassVar[Tuple[str, ...]] = ()

    int8: bool = Field(False, description='also write CHECKPOINT.int8.onnx: the model quantised to INT8 (ONNX '
                                          'Runtime, calibrated on training images), served by AMG_BACKEND=onnx-int8; '
                                          "where nncf is installed also CHECKPOINT.int8.xml (NNCF's, openvino-int8)")


def _unwrap_optional(annotation: Any) -> Tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _int_list(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(',') if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}') from None


def _argument_kwargs(annotation: Any) -> Dict[str, Any]:
    """argparse keywords for one field's type."""
    inner, _ = _unwrap_optional(annotation)
    inner = typing.get_args(inner)[0] if typing.get_origin(inner) is typing.Annotated else inner
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if inner is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return dict(choices=[m.value for m in inner])
    if origin is typing.Literal:
        return dict(choices=list(args))
    if origin is tuple and args and args[-1] is Ellipsis:
        return dict(type=_int_list, metavar='I,J,...')
    if origin is tuple:
        return dict(nargs=len(args), type=int, metavar=tuple('HW') if len(args) == 2 else None)
    if origin is dict:
        raise TypeError('dict options cannot be flags')
    return dict(type=inner if inner in (int, float, str) else str)


def add_config_arguments(parser: argparse.ArgumentParser, config: Type[RunConfig],
                         skip: Sequence[str] = ()) -> None:
    """One flag per field of ``config``: ``--a-b`` plus ``--a_b`` and the class's aliases. Unset flags stay absent
    from the namespace, so the config's own defaults apply."""
    for name, info in config.model_fields.items():
        if name in skip or typing.get_origin(_unwrap_optional(info.annotation)[0]) is dict:
            continue
        flags = [f'--{name.replace("_", "-")}'] + ([f'--{name}'] if '_' in name else [])
        flags += list(config.CLI_ALIASES.get(name, ()))
        kwargs = _argument_kwargs(info.annotation)
        required = info.is_required()
        default = '' if required or info.default is None else f' (default: {_shown(info.default)})'
        parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, required=required,
                            help=((info.description or '') + default).replace('%', '%%'), **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ' '.join(map(str, value))
    return str(value)


def config_from_args(config: Type[RunConfig], args: argparse.Namespace, **overrides: Any) -> RunConfig:
    """The config for the flags given (pydantic validates; a ValidationError is a ValueError)."""
    values = {k: v for k, v in vars(args).items() if k in config.model_fields}
    return config(**{**values, **overrides})


def job_params_model(config: Type[RunConfig], name: str, drop: Sequence[str] = (),
                     replace: Optional[Dict[str, Tuple[Any, Any]]] = None) -> Type[BaseModel]:
    """The API's parameters for a job running ``config``: its fields minus what the server owns and ``drop``,
    with ``replace`` = {field: (annotation, FieldInfo)} where a job's default differs (e.g. the active model)."""
    replace = replace or {}
    fields: Dict[str, Any] = {}
    for field_name, info in config.model_fields.items():
        if field_name in config.SERVER_OWNED or field_name in drop:
            continue
        fields[field_name] = replace.get(field_name, (info.annotation, info))
    return create_model(name, __config__=ConfigDict(extra='forbid', allow_inf_nan=False, protected_namespaces=()),
                        __doc__=f'Job parameters: the options of {config.__name__} (see the CLI\'s --help).',
                        **fields)

