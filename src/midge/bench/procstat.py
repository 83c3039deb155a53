"""CPU time and memory of a process, read from Linux's /proc (the broker's, and the generator's).

CPU is ``utime + stime`` from ``/proc/PID/stat`` (all threads, in clock ticks of 10 ms), as the
benchmark issue specifies. A 5 s window at 10 % CPU is only 50 ticks, so :func:`cpu_ns` prefers
the nanosecond on-CPU time the scheduler keeps per thread (``/proc/PID/task/*/schedstat``, first
field, summed) and falls back to the ticks where schedstat is missing; both count user and system.
Memory is ``VmRSS`` (resident now) and ``VmHWM`` (its peak) from ``/proc/PID/status``, in KiB.
"""

from __future__ import annotations

import os

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_cpu_ns(pid: int) -> int:
    """``utime + stime`` of ``pid`` in ns (10 ms resolution); raises OSError if it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        text = f.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) * 1_000_000_000 // _CLK_TCK


def schedstat_cpu_ns(pid: int) -> int | None:
    """On-CPU ns of every live thread of ``pid`` summed, or None without schedstat."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            if tid == str(pid):
                return None
    return total


def cpu_ns(pid: int) -> int:
    """The best CPU time of ``pid`` available, in ns (see the module docstring)."""
    precise = schedstat_cpu_ns(pid)
    return precise if precise is not None else stat_cpu_ns(pid)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (``midge broker --workers N`` runs its workers as child
    processes: the broker's CPU and memory are theirs summed)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        ppid = int(text[text.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree = [pid]
    for p in tree:  # grows while it is walked: breadth first
        tree.extend(children.get(p, ()))
    return tree


def memory_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of ``pid`` in KiB; raises OSError if it is gone."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def tree_memory_kb(pids: list[int]) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` summed over ``pids`` (a process gone meanwhile counts 0)."""
    rss = hwm = 0
    for pid in pids:
        try:
            r, h = memory_kb(pid)
        except OSError:
            continue
        rss += r
        hwm += h
    return rss, hwm


def cpus_busy() -> list[tuple[int, int]]:
    """``(busy, total)`` clock ticks of each CPU since boot, from ``/proc/stat`` (``[]`` if none).

    Busy is everything but idle and iowait, so the difference of two samples shows how much of
    a CPU the whole machine used, the broker and the generator and anything else that shares it.
    """
    out: list[tuple[int, int]] = []
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"cpu") and line[3:4].isdigit():
                    ticks = [int(x) for x in line.split()[1:]]
                    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                    # guest time is already counted in user: the first 8 fields are the total
                    total = sum(ticks[:8])
                    out.append((total - idle, total))
    except OSError:
        return []
    return out


def busy_percent(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    """Each CPU's busy share between two :func:`cpus_busy` samples, in percent."""
    return [
        round(100 * (b2 - b1) / (t2 - t1), 1) if t2 > t1 else 0.0
        for (b1, t1), (b2, t2) in zip(before, after, strict=False)
    ]


class CpuSample:
    """CPU time of a set of processes at one instant, both ways (precise and ticks)."""

    __slots__ = ("precise", "ticks")

    def __init__(self, pids: list[int]) -> None:
        self.precise = 0
        self.ticks = 0
        for pid in pids:
            try:
                self.ticks += stat_cpu_ns(pid)
                self.precise += cpu_ns(pid)
            except OSError:
                pass
