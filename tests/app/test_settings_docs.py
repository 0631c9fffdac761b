"""docs/configuration.md's settings table and docker/.env.example are what app/settings.py generates."""
import re

from app.settings import Settings
from app.settings_docs import ROOT, generated_files


def test_every_setting_is_described():
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []


def test_the_committed_table_and_env_example_are_generated():
    for path, text in generated_files().items():
        assert path.read_text() == text, f'{path.relative_to(ROOT)} is stale: run python -m app.settings_docs'


def test_env_example_lists_every_setting_once():
    names = re.findall(r'^#? ?(AMG_[A-Z0-9_]+)=', (ROOT / 'docker' / '.env.example').read_text(), re.M)
    assert sorted(names) == sorted(f'AMG_{name.upper()}' for name in Settings.model_fields)
