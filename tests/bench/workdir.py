"""The work copy of the shared harness: `shared/` is read-only, and the harness installs a venv
and node_modules beside itself, so it runs from a copy under ./var/bench."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", "node_modules", "results", "__pycache__"}
PY_SPY = "py-spy==0.4.3"


class BenchError(RuntimeError):
    """A benchmark could not run (missing harness, a service that did not start, a failed command)."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def find_bench_dir(explicit: str | None = None) -> Path:
    """--bench-dir, else ../shared/bench beside the repository, else $BENCH_DIR."""
    candidates = [explicit] if explicit else [str(ROOT.parent / "shared" / "bench"), os.environ.get("BENCH_DIR")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "harness.py").is_file():
            return Path(candidate).resolve()
    raise BenchError(f"no harness.py in {', '.join(c for c in candidates if c)}; pass --bench-dir or set BENCH_DIR")


@dataclass
class Workdir:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / ".venv" / "bin" / "python")

    @property
    def harness(self) -> str:
        return str(self.path / "harness.py")

    @property
    def seedctl(self) -> str:
        return str(self.path / "seedctl.sh")

    def lock(self) -> None:
        """One benchmark at a time per work folder: two would share the seed's pid file and coldmail's
        database, and load each other's figures."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"another benchmark is running in {self.path}") from None

    def sub(self, name: str) -> Path:
        out = self.path / name
        out.mkdir(parents=True, exist_ok=True)
        return out


def prepare(source: Path, work: Path, *, node: bool) -> Workdir:
    """Lock the work folder, copy the harness files (always, so a newer harness is picked up), then
    make its venv and, for the reference, its node_modules, each only when missing."""
    wd = Workdir(work)
    wd.lock()
    for src in source.rglob("*"):
        rel = src.relative_to(source)
        if src.is_dir() or SKIP.intersection(rel.parts):
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.chmod(0o644)
        shutil.copyfile(src, dst)
        dst.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
    if not Path(wd.python).exists():
        log(f"making the harness's venv in {work / '.venv'}")
        _run([sys.executable, "-m", "venv", str(work / ".venv")])
        _run([wd.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
              str(work / "requirements.txt")])
    if node and not (work / "seed-ref" / "node_modules").is_dir():
        log("npm install in seed-ref")
        _run(["npm", "install", "--no-audit", "--no-fund"], cwd=work / "seed-ref")
    return wd


def source_tree(rev: str | None, work: Path) -> Path:
    """Where coldmail runs from: the working tree, or (--rev) a commit exported with `git archive`,
    which keeps a benchmark steady while the working tree is being edited."""
    if not rev:
        return ROOT
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, capture_output=True,
                         text=True)
    if sha.returncode != 0:
        raise BenchError(f"--rev {rev}: {sha.stderr.strip()}")
    tree = work / "src" / sha.stdout.strip()[:12]
    if not (tree / "run.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "archive", sha.stdout.strip()], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise BenchError(f"git archive {rev} failed")
    log(f"coldmail runs from {rev} ({sha.stdout.strip()[:12]}) exported to {tree}")
    return tree


def ensure_py_spy(wd: Workdir) -> str:
    """py-spy is needed only for profiling: install it into the harness's venv on first use."""
    exe = wd.path / ".venv" / "bin" / "py-spy"
    if not exe.exists():
        log(f"installing {PY_SPY} into {wd.path / '.venv'} (profiling only)")
        _run([wd.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", PY_SPY])
    return str(exe)


def _run(argv: list[str], *, cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}")
