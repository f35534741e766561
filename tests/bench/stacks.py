"""Reading py-spy's raw output (folded stacks, `--threads`): where the samples fall.

A line is `thread (TID): NAME;outer (file.py);…;leaf (file.py) COUNT`. Own time of a function is
the samples where it is the leaf; total time counts it once per stack it appears in.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable

_THREAD = re.compile(r"^thread \(\d+\)(?:: ?(.*))?$")
_NUMBERS = re.compile(r"[-_ ]?\d+")


@dataclass(frozen=True)
class Stack:
    thread: str
    frames: tuple[str, ...]
    count: int


def parse(text: str) -> list[Stack]:
    stacks = []
    for line in text.splitlines():
        path, _, count = line.rstrip().rpartition(" ")
        if not path or not count.isdigit():
            continue
        frames = path.split(";")
        thread = ""
        match = _THREAD.match(frames[0])
        if match:
            thread, frames = match.group(1) or "", frames[1:]
        stacks.append(Stack(thread_group(thread), tuple(frames), int(count)))
    return stacks


def thread_group(name: str) -> str:
    """`ThreadPoolExecutor-0_3` and `ThreadPoolExecutor-0_7` are one pool: drop the numbers."""
    return _NUMBERS.sub("", name).strip() or "?"


def total_samples(stacks: Iterable[Stack]) -> int:
    return sum(s.count for s in stacks)


def by_thread(stacks: Iterable[Stack]) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for s in stacks:
        counts[s.thread] += s.count
    return counts.most_common()


def top_own(stacks: Iterable[Stack], n: int) -> list[tuple[str, int]]:
    """Functions by the samples in which they were running (the leaf of the stack)."""
    counts: Counter[str] = Counter()
    for s in stacks:
        if s.frames:
            counts[s.frames[-1]] += s.count
    return counts.most_common(n)


def top_total(stacks: Iterable[Stack], n: int, *, keep: Callable[[str], bool] = lambda f: True
              ) -> list[tuple[str, int]]:
    """Functions by the samples in which they were anywhere on the stack (recursion counted once)."""
    counts: Counter[str] = Counter()
    for s in stacks:
        for frame in set(s.frames):
            if keep(frame):
                counts[frame] += s.count
    return counts.most_common(n)


def ours(frame: str) -> bool:
    return "(coldmail/" in frame


def callees(stacks: Iterable[Stack], parent: str) -> tuple[int, list[tuple[str, int]]]:
    """Samples under the first frame that starts with `parent`, split by its direct callee
    ("<self>" when it was the leaf): claim / cap / send / record under Deliverer.deliver."""
    inside = 0
    counts: Counter[str] = Counter()
    for s in stacks:
        at = next((i for i, f in enumerate(s.frames) if f.startswith(parent)), None)
        if at is None:
            continue
        inside += s.count
        counts[s.frames[at + 1] if at + 1 < len(s.frames) else "<self>"] += s.count
    return inside, counts.most_common()


def report(title: str, stacks: list[Stack], n: int, *, focus: Iterable[str] = (), wall: bool = False) -> str:
    """Threads, the top `n` functions, coldmail's functions by total time, and the split of each
    `focus` function by callee, as text. A wall-clock profile (idle threads included) lists leaf
    functions only under coldmail code, or idle pool threads would fill the list."""
    total = total_samples(stacks)

    def pct(count: int, of: int = total) -> str:
        return f"{100.0 * count / (of or 1):5.1f}%"

    lines = [f"== {title}: {total} samples", "threads:"]
    lines += [f"  {pct(c)}  {name}" for name, c in by_thread(stacks)]
    if wall:
        busy = [s for s in stacks if any(ours(f) for f in s.frames)]
        lines.append(f"top {n} functions by own time, in stacks that run coldmail code:")
        lines += [f"  {pct(c)}  {frame}" for frame, c in top_own(busy, n)]
    else:
        lines.append(f"top {n} functions by own time:")
        lines += [f"  {pct(c)}  {frame}" for frame, c in top_own(stacks, n)]
    lines.append(f"top {n} coldmail functions by total time (self + callees):")
    lines += [f"  {pct(c)}  {frame}" for frame, c in top_total(stacks, n, keep=ours)]
    for parent in focus:
        inside, split = callees(stacks, parent)
        if inside:
            lines.append(f"{parent}: {pct(inside)} of all samples, split by what it called:")
            lines += [f"  {pct(c, inside)}  {frame}" for frame, c in split[:n]]
    return "\n".join(lines)
