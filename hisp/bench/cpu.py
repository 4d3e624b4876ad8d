"""CPU time used by groups of processes between two moments, read from Linux's /proc: where a
benchmark's time goes (the flow benchmark prints it per message). Elsewhere it reports nothing.

A snapshot keeps each process's time, so a difference counts what each process that is still
there used, and all of a process that started meanwhile. A process that exits between the two
moments takes its time with them (its share is not counted, rather than subtracted): the
benchmarks keep their own processes and connections for the whole measurement, and the exit of
someone else's (another database client's backend) leaves the figure as it was.
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


Snapshot = dict[str, dict[int, float]]  # group -> pid -> CPU seconds used so far


def snapshot(
    trees: Mapping[str, int],
    names: Mapping[str, str],
    alone: Mapping[str, int] | None = None,
) -> Snapshot:
    """CPU seconds used so far by each process of each group: ``trees`` maps a group to a
    process whose whole tree it is (the process and its descendants), ``names`` a group to a
    command name (every process of that name, e.g. the database server's), ``alone`` a group to
    one process without its children (a benchmark's own process, whose children are other
    groups)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (_name, parent, _cpu) in table.items():
        children.setdefault(parent, []).append(pid)
    used: Snapshot = {}
    for group, root in trees.items():
        stack, members = [root], {}
        while stack:
            pid = stack.pop()
            if pid in table:
                members[pid] = table[pid][2]
            stack.extend(children.get(pid, ()))
        used[group] = members
    for group, command in names.items():
        used[group] = {pid: cpu for pid, (name, _parent, cpu) in table.items() if name == command}
    for group, pid in (alone or {}).items():
        used[group] = {pid: table[pid][2]} if pid in table else {}
    return used


def spent(before: Snapshot, after: Snapshot, group: str) -> float:
    """The CPU seconds ``group`` used between the two snapshots (see the module's note)."""
    earlier = before.get(group, {})
    return sum(max(cpu - earlier.get(pid, 0.0), 0.0) for pid, cpu in after.get(group, {}).items())


def total(used: Snapshot, group: str) -> float:
    """The CPU seconds the processes of ``group`` in a snapshot have used in all."""
    return sum(used.get(group, {}).values())


def per_message_ms(before: Snapshot, after: Snapshot, messages: int) -> dict[str, float]:
    """The CPU milliseconds each group spent per message between two snapshots, and their sum."""
    ms = {group: spent(before, after, group) * 1000 / messages for group in before}
    ms["total"] = sum(ms.values())
    return {group: round(value, 2) for group, value in ms.items()}
