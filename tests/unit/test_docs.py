"""The README's configuration table and the example env file list every setting."""

from pathlib import Path

from coldmail.settings import documented

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_readme_and_the_example_env_file():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "config" / "coldmail.env.example").read_text()
    for name, _, _ in documented():
        assert f"`{name}`" in readme, f"{name} missing from README's configuration table"
        assert f"{name}=" in example, f"{name} missing from config/coldmail.env.example"
