"""`pytest tests/unit` runs with pytest alone: a test module whose imports (or the coldmail modules
they load) need a package that is not installed is reported as skipped, naming the package, instead
of failing the collection. A test that needs a package only when it runs (coldmail imports a few
lazily) says so with `@pytest.mark.needs("package", ...)`.

In CI (CI=true) every dependency is installed, so a missing module is an error there, as a misspelt
import must be; the same rule as the services in tests/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.conftest import CI

#: a module missing from these is a bug in the code, never a package left out
OURS = {"coldmail", "tests"}


class UnitModule(pytest.Module):
    def collect(self):
        try:
            return super().collect()
        except self.CollectError as e:
            missing = e.__cause__
            if (not CI and isinstance(missing, ModuleNotFoundError) and missing.name
                    and missing.name.split(".")[0] not in OURS):
                pytest.skip(f"{self.path.name} needs {missing.name.split('.')[0]}")
            raise


def pytest_pycollect_makemodule(module_path, parent):
    return UnitModule.from_parent(parent, path=module_path)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*packages): skip unless these packages import")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        for name in mark.args:
            pytest.importorskip(name, reason=f"{item.name} needs {name}")
