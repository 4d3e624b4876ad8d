"""CPU time used by groups of processes between two moments, read from Linux's /proc: where a
benchmark's time goes (the flow benchmark prints it per message). Elsewhere it reports nothing.

Processes that exit between the two moments take their time with them; the benchmarks keep
their processes (and database connections) for the whole measurement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds used so far)."""
    found: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def snapshot(
    trees: Mapping[str, int],
    names: Mapping[str, str],
    alone: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """CPU seconds used so far by each group: ``trees`` maps a group to a process whose whole
    tree it is (the process and its descendants), ``names`` a group to a command name (every
    process of that name, e.g. the database server's), ``alone`` a group to one process
    without its children (a benchmark's own process, whose children are other groups)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (_name, parent, _cpu) in table.items():
        children.setdefault(parent, []).append(pid)
    used: dict[str, float] = {}
    for group, root in trees.items():
        stack, total = [root], 0.0
        while stack:
            pid = stack.pop()
            if pid in table:
                total += table[pid][2]
            stack.extend(children.get(pid, ()))
        used[group] = total
    for group, command in names.items():
        used[group] = sum(cpu for name, _parent, cpu in table.values() if name == command)
    for group, pid in (alone or {}).items():
        used[group] = table[pid][2] if pid in table else 0.0
    return used


def per_message_ms(
    before: Mapping[str, float], after: Mapping[str, float], messages: int
) -> dict[str, float]:
    """The CPU milliseconds each group spent per message between two snapshots, and their sum."""
    spent = {group: (after[group] - before[group]) * 1000 / messages for group in before}
    spent["total"] = sum(spent.values())
    return {group: round(ms, 2) for group, ms in spent.items()}
