"""Settings precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthmesh.errors import ConfigError
from healthmesh.settings import load_settings


def test_precedence_defaults_file_env_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node.toml").write_text('[node]\nname = "From file"\ndefault_page_size = 20\n')
    assert load_settings(tmp_path).default_page_size == 20
    monkeypatch.setenv("HEALTHMESH_DEFAULT_PAGE_SIZE", "30")
    assert load_settings(tmp_path).default_page_size == 30
    assert load_settings(tmp_path, {"default_page_size": 40}).default_page_size == 40
    assert load_settings(tmp_path).name == "From file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[node]\ndefault_page_size = -1\n", "default_page_size"),
        ("[node]\nstrict_search = 'perhaps'\n", "strict_search"),
        ("[node]\nno_such_setting = 1\n", "unknown setting"),
        ("[node\n", "not valid TOML"),
        ("[node]\nexport_deid_profile = 'scramble'\n", "export_deid_profile"),
        ("[node]\ndeidentify_exports_for = 'HRESCH; DROP'\n", "deidentify_exports_for"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "node.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)


def test_bad_environment_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHMESH_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigError, match="environment"):
        load_settings(tmp_path)
