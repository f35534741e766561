"""coldmail.caps stands on its own: its Lua ships with it and takes the claim prefix from Python, and it
imports neither the queue nor delivery (which use it)."""

import subprocess
import sys
from importlib import resources

from coldmail.caps.scripts import PLACEHOLDER, SCRIPTS, source


def test_every_script_loads_from_the_package_and_none_spells_the_claim_prefix():
    folder = resources.files("coldmail.caps") / "lua"
    files = {f.name for f in folder.iterdir() if f.name.endswith(".lua")}
    assert files == {f"{piece}.lua" for pieces in SCRIPTS.values() for piece in pieces}
    for name in SCRIPTS:
        assert source(name).startswith("-- Included first by every script")
        assert PLACEHOLDER not in source(name)


def test_caps_import_neither_the_queue_nor_delivery():
    code = ("import sys, coldmail.caps, coldmail.caps.stub; "
            "print(sorted(m for m in sys.modules if m.startswith(('coldmail.queue', 'coldmail.delivery'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
