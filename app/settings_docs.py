"""The settings table of docs/configuration.md and docker/.env.example, generated from :class:`app.settings.Settings`
(each field's default and description), so neither can drift from the code.

    python -m app.settings_docs          # rewrite both
    python -m app.settings_docs --check  # exit 1 when either differs (tests/app/test_settings_docs.py)
"""
import argparse
import enum
import json
import sys
from pathlib import Path
from typing import Dict, List

from pydantic_core import PydanticUndefined

from .settings import Settings

__all__ = ['settings_table', 'env_example', 'generated_files']

ROOT = Path(__file__).resolve().parents[1]
TABLE_START = '<!-- settings table: generated from app/settings.py by `python -m app.settings_docs`; do not edit -->'
TABLE_END = '<!-- end of the settings table -->'
# what compose needs set in .env before it starts (its ${VAR:?} checks); the rest stays commented at its default
REQUIRED_BY_COMPOSE = ('AMG_API_KEY', 'AMG_WRITE_API_KEY')
COMPOSE_OWNED = {'AMG_DATA_DIR': 'fixed to the /data volume by docker/compose.yaml'}
ENV_HEADER = """\
# Every amg-reid setting, generated from app/settings.py by `python -m app.settings_docs` (docs/configuration.md
# explains them). For docker compose: cp docker/.env.example docker/.env, fill in the empty values, uncomment what
# you change. compose reads docker/.env twice: to fill ${...} in docker/compose.yaml, and as the service's
# environment (env_file). Outside Docker, `amg-reid serve` reads a .env in its working folder the same way.

# Required by docker/compose.yaml (it refuses to start while one is empty)
MINIO_ACCESS_KEY=
MINIO_SECRET_KEY=
POSTGRES_PASSWORD=
"""


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    if value is None:
        return ''
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _rows() -> List[Dict[str, str]]:
    return [dict(env=f'AMG_{name.upper()}', default=_default(name), meaning=' '.join(field.description.split()))
            for name, field in Settings.model_fields.items()]


def settings_table() -> str:
    lines = ['| setting | default | meaning |', '|---|---|---|']
    for row in _rows():
        default = f"`{row['default']}`" if row['default'] else 'none'
        lines.append(f"| `{row['env']}` | {default} | {row['meaning'].replace('|', '/')} |")
    return '\n'.join(lines)


def env_example() -> str:
    lines = [ENV_HEADER]
    required = [row for row in _rows() if row['env'] in REQUIRED_BY_COMPOSE]
    for row in required:
        lines += [f"# {row['meaning']}", f"{row['env']}="]
    lines.append('\n# Optional: the defaults')
    for row in _rows():
        if row['env'] in REQUIRED_BY_COMPOSE:
            continue
        why = COMPOSE_OWNED.get(row['env'])
        lines += [f"# {row['meaning']}" + (f' (compose: {why})' if why else ''), f"# {row['env']}={row['default']}"]
    return '\n'.join(lines) + '\n'


def _with_table(markdown: str) -> str:
    head, rest = markdown.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f'{head}{TABLE_START}\n{settings_table()}\n{TABLE_END}{tail}'


def generated_files(root: Path = ROOT) -> Dict[Path, str]:
    """{file: the text it should hold}."""
    configuration = root / 'docs' / 'configuration.md'
    return {configuration: _with_table(configuration.read_text()), root / 'docker' / '.env.example': env_example()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true', help='only report files that differ')
    a = p.parse_args(argv)
    stale = [path for path, text in generated_files().items() if not path.exists() or path.read_text() != text]
    if a.check:
        for path in stale:
            sys.stderr.write(f"{path.relative_to(ROOT)} is stale: run python -m app.settings_docs\n")
        return 1 if stale else 0
    for path, text in generated_files().items():
        path.write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
