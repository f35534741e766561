#!/usr/bin/env python3
"""Entry point: `python3 run.py [all|api|migrate|create-api-key NAME [--account A]|make-secret-key|test|lock]`.

Run with a Python that lacks coldmail's dependencies, it first makes `.venv`
beside this file, upgrades pip and setuptools in it from requirements-pip.lock,
installs requirements.lock (tests/requirements.lock for `test`: the service's
and the tests' packages) with `--require-hashes` (again only when a lock file
changes) and goes on inside it; `test` runs pytest. Set COLDMAIL_NO_BOOTSTRAP=1
to use the current interpreter as it is.

The lock files pin every package, transitive ones too, with the hashes of their
files; each is made from its .txt beside it by `python3 run.py lock` (uv, in a
throwaway venv). A lock that no longer matches its .txt stops the bootstrap.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
PIP_LOCK = "requirements-pip.lock"
#: lock file: (the requirement files it is made from, the lock whose versions it keeps)
LOCKS = {
    PIP_LOCK: (["requirements-pip.txt"], None),
    "requirements.lock": (["requirements.txt"], None),
    "tests/requirements.lock": (["requirements.txt", "tests/requirements.txt"], "requirements.lock"),
}
#: what `lock` resolves with: the oldest Python coldmail runs on, markers kept for the others
LOCK_PYTHON = "3.11"
UV = "uv==0.13.9"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def _pins(path: Path) -> dict[str, str]:
    """name -> version of each `name==version` line of a requirements file (names normalized, PEP 503)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def lock_mismatch(lock: str) -> str | None:
    """Why `lock` does not match the requirement files it is made from, or None when it does."""
    inputs, _ = LOCKS[lock]
    if not (ROOT / lock).exists():
        return f"{lock} is missing"
    locked = _pins(ROOT / lock)
    for name in inputs:
        for package, version in _pins(ROOT / name).items():
            if locked.get(package) != version:
                found = f"{package}=={locked[package]}" if package in locked else "nothing"
                return f"{name} asks for {package}=={version}, {lock} has {found}"
    return None


def _install(lock: str) -> None:
    cmd = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--require-hashes",
           "-r", str(ROOT / lock)]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"run.py: pip could not install {lock} (its message is above). A hash that does not match "
                 "means the file pip was given is not the one locked: check the index it used. After changing a "
                 "requirements file, update the locks with `python3 run.py lock`.")


def _bootstrap(testing: bool) -> None:
    """Make sure .venv holds the locked requirements, then re-run this command inside it."""
    lock = "tests/requirements.lock" if testing else "requirements.lock"
    for name in (PIP_LOCK, lock):
        why = lock_mismatch(name)
        if why is not None:
            sys.exit(f"run.py: {why}: update the locks with `python3 run.py lock`")
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in (PIP_LOCK, lock))).hexdigest()
    stamp = VENV / (".installed-test" if testing else ".installed")
    if not VENV_PYTHON.exists():
        print(f"run.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not stamp.exists() or stamp.read_text() != digest:
        print(f"run.py: installing {PIP_LOCK}, then {lock}", file=sys.stderr)
        _install(PIP_LOCK)
        _install(lock)
        stamp.write_text(digest)
    env = dict(os.environ, COLDMAIL_NO_BOOTSTRAP="1")
    os.execve(str(VENV_PYTHON), [str(VENV_PYTHON), str(ROOT / "run.py"), *sys.argv[1:]], env)


def lock(upgrade: bool) -> int:
    """Write each lock file from its requirement files with uv, installed in a throwaway venv. Versions
    already locked are kept unless a requirement file changed them, or `upgrade` (`lock --upgrade`)."""
    with tempfile.TemporaryDirectory(prefix="coldmail-lock-") as tmp:
        venv.EnvBuilder(with_pip=True).create(tmp)
        subprocess.run([str(Path(tmp) / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", UV], check=True)
        for name, (inputs, keeps) in LOCKS.items():
            cmd = [str(Path(tmp) / "bin" / "uv"), "pip", "compile", "--quiet", "--universal", "--python-version",
                   LOCK_PYTHON, "--generate-hashes", "--custom-compile-command", "python3 run.py lock", *inputs,
                   "-o", name]
            if keeps:
                cmd += ["--constraint", keeps]
            if upgrade:
                cmd.append("--upgrade")
            print(f"run.py: writing {name}", file=sys.stderr)
            subprocess.run(cmd, cwd=ROOT, check=True)
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["lock"]:
        return lock(upgrade="--upgrade" in args[1:])
    testing = bool(args) and args[0] == "test"
    if not os.environ.get("COLDMAIL_NO_BOOTSTRAP") and Path(sys.prefix).resolve() != VENV.resolve():
        _bootstrap(testing)
    if testing:
        os.chdir(ROOT)
        # two workers, a file each at a time: the suite mostly waits (on processes, windows, relays), so two
        # halve its time on two cores; `-n 0` runs it in one process
        workers = [] if any(a == "-n" or a.startswith("-n") and a[2:].isdigit() for a in args[1:]) \
            else ["-n", "2", "--dist", "loadfile"]
        return subprocess.call([sys.executable, "-m", "pytest", *workers, *args[1:]])
    sys.path.insert(0, str(ROOT))
    from coldmail.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
