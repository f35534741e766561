"""The lock files run.py installs with --require-hashes: they match the requirement files they are made from,
every package in them has its hashes, and a lock that does not match stops the bootstrap saying why."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_run_py():
    spec = importlib.util.spec_from_file_location("coldmail_run_py", ROOT / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load_run_py()


@pytest.mark.parametrize("lock", list(run.LOCKS))
def test_each_lock_matches_the_requirement_files_it_is_made_from(lock):
    assert run.lock_mismatch(lock) is None


@pytest.mark.parametrize("lock", list(run.LOCKS))
def test_every_package_in_a_lock_is_pinned_with_its_hashes(lock):
    text = (ROOT / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.index("run.py lock")) + 1:])
    assert entries
    for entry in entries:
        assert re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*==\S+", entry), entry
        assert "--hash=sha256:" in entry, entry


def test_the_tests_lock_keeps_the_service_lock_s_versions():
    service, tests = run._pins(ROOT / "requirements.lock"), run._pins(ROOT / "tests" / "requirements.lock")
    assert {name: tests.get(name) for name in service} == service


def test_pip_and_setuptools_are_upgraded_from_a_lock_too():
    assert set(run._pins(ROOT / run.PIP_LOCK)) == {"pip", "setuptools"}


@pytest.fixture
def copy_of_the_project(tmp_path, monkeypatch):
    """A copy of the requirement and lock files, which run.py then reads."""
    for lock, (inputs, _) in run.LOCKS.items():
        for name in (lock, *inputs):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "VENV", tmp_path / ".venv")
    monkeypatch.setattr(run, "VENV_PYTHON", tmp_path / ".venv" / "bin" / "python")
    return tmp_path


def test_a_requirement_changed_without_its_lock_stops_the_bootstrap_naming_both(copy_of_the_project):
    # Given requirements.txt asking for another aiohttp than the lock holds
    requirements = copy_of_the_project / "requirements.txt"
    locked = run._pins(copy_of_the_project / "requirements.lock")["aiohttp"]
    requirements.write_text(requirements.read_text().replace(f"aiohttp=={locked}", "aiohttp==0.0.1"))
    # Then the bootstrap stops before it makes a venv, saying what differs and how to update the locks
    with pytest.raises(SystemExit) as stopped:
        run._bootstrap(testing=False)
    message = str(stopped.value.code)
    assert f"requirements.txt asks for aiohttp==0.0.1, requirements.lock has aiohttp=={locked}" in message
    assert "python3 run.py lock" in message
    assert not (copy_of_the_project / ".venv").exists()
    # And so does the test bootstrap, whose lock holds the service's packages too
    with pytest.raises(SystemExit, match="tests/requirements.lock has aiohttp=="):
        run._bootstrap(testing=True)


def test_a_package_added_without_its_lock_or_a_missing_lock_stops_the_bootstrap(copy_of_the_project):
    tests = copy_of_the_project / "tests" / "requirements.txt"
    tests.write_text(tests.read_text() + "freezegun==1.5.1\n")
    with pytest.raises(SystemExit, match="asks for freezegun==1.5.1, tests/requirements.lock has nothing"):
        run._bootstrap(testing=True)
    (copy_of_the_project / run.PIP_LOCK).unlink()
    with pytest.raises(SystemExit, match="requirements-pip.lock is missing"):
        run._bootstrap(testing=False)
