"""`pytest tests/unit` runs with pytest alone: a module whose imports need a library that is not
installed is reported as skipped, naming the library, instead of failing the collection.

NEEDS lists, per module, the packages its imports (and the coldmail modules they load) need beyond the
standard library; a module that is not listed must need nothing but pytest. A test that needs a package
only when it runs (coldmail imports a few lazily) says so with `@pytest.mark.needs("package", ...)`.
"""

from __future__ import annotations

import pytest

#: coldmail's modules that talk to PostgreSQL, Redis or Dramatiq, and what they import
_RUNTIME = ("dramatiq", "redis", "peewee", "psycopg2", "cryptography", "prometheus_client", "pythonjsonlogger")
_SCHEMAS = ("marshmallow", "email_validator")

NEEDS = {
    "test_backoff.py": _RUNTIME,
    "test_fast_load.py": ("hypothesis", *_SCHEMAS),
    "test_handover_gathering.py": _RUNTIME,
    "test_handover_messages.py": ("dramatiq", "redis"),
    "test_payload_hash.py": ("hypothesis", *_RUNTIME),
    "test_schemas.py": ("hypothesis", *_SCHEMAS),
}


class NeedsModule(pytest.Module):
    """A test module collected only once the packages it needs import."""

    def collect(self):
        for name in NEEDS[self.path.name]:
            pytest.importorskip(name, reason=f"{self.path.name} needs {name}")
        return super().collect()


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name in NEEDS:
        return NeedsModule.from_parent(parent, path=module_path)
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*packages): skip unless these packages import")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            pytest.importorskip(name, reason=f"{item.name} needs {name}")
