#!/usr/bin/env python3
"""Entry point: `python3 run.py [all|api|migrate|create-api-key NAME [--account A]|make-secret-key|test]`.

Run with a Python that lacks coldmail's dependencies, it first makes `.venv`
beside this file, installs requirements.txt into it (again only when that
file changes) and goes on inside it; `test` also installs tests/requirements.txt
and runs pytest. Set COLDMAIL_NO_BOOTSTRAP=1 to use the current interpreter as it is.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"


def _requirement_files(testing: bool) -> list[Path]:
    files = [ROOT / "requirements.txt"]
    if testing:
        files.append(ROOT / "tests" / "requirements.txt")
    return files


def _bootstrap(testing: bool) -> None:
    """Make sure .venv holds the pinned requirements, then re-run this command inside it."""
    files = _requirement_files(testing)
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / (".installed-test" if testing else ".installed")
    if not VENV_PYTHON.exists():
        print(f"run.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not stamp.exists() or stamp.read_text() != digest:
        print("run.py: installing " + ", ".join(str(f.relative_to(ROOT)) for f in files), file=sys.stderr)
        cmd = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        for f in files:
            cmd += ["-r", str(f)]
        subprocess.run(cmd, check=True)
        stamp.write_text(digest)
    env = dict(os.environ, COLDMAIL_NO_BOOTSTRAP="1")
    os.execve(str(VENV_PYTHON), [str(VENV_PYTHON), str(ROOT / "run.py"), *sys.argv[1:]], env)


def main() -> int:
    args = sys.argv[1:]
    testing = bool(args) and args[0] == "test"
    if not os.environ.get("COLDMAIL_NO_BOOTSTRAP") and Path(sys.prefix).resolve() != VENV.resolve():
        _bootstrap(testing)
    if testing:
        os.chdir(ROOT)
        return subprocess.call([sys.executable, "-m", "pytest", *args[1:]])
    sys.path.insert(0, str(ROOT))
    from coldmail.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
