"""hisp.bench.cpu: CPU time by process group, from /proc, for real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hisp.bench import cpu

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux /proc")

BURN = "import time\nend = time.process_time() + 0.8\nwhile time.process_time() < end: pass\n"


def test_a_tree_counts_its_children_and_alone_does_not():
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"subprocess.run([sys.executable, '-c', {BURN!r}])\n"
         "time.sleep(30)"],
    )
    try:
        before = cpu.snapshot({"tree": parent.pid}, {}, {"alone": parent.pid})
        time.sleep(0.1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = cpu.snapshot({"tree": parent.pid}, {}, {"alone": parent.pid})
            if cpu.spent(before, after, "tree") >= 0.3:
                break
            time.sleep(0.05)
        spent = cpu.per_message_ms(before, after, 1)
    finally:
        parent.kill()
        parent.wait()
    assert spent["tree"] >= 300  # the child burning (0.8 s in all), seen while it ran
    assert spent["alone"] < 100  # the parent itself only waited
    assert spent["total"] == pytest.approx(spent["tree"] + spent["alone"], abs=0.02)


def test_a_name_counts_every_process_of_that_name():
    used = cpu.snapshot({}, {"me": open(f"/proc/{os.getpid()}/comm").read().strip()})
    assert cpu.total(used, "me") > 0


def test_a_process_that_exits_meanwhile_is_not_subtracted(tmp_path):
    """A process of the group's name that used CPU and then exited between the snapshots (as
    another test's database backends do) made the group's figure negative: the flow benchmark
    once printed -2.5 ms of PostgreSQL per message in CI."""
    name = "hispcpuburner"  # a command name nothing else on the machine has
    (tmp_path / name).symlink_to(sys.executable)
    burner = subprocess.Popen([str(tmp_path / name), "-c", BURN])
    try:
        deadline = time.monotonic() + 20
        before = cpu.snapshot({}, {"py": name})
        while cpu.total(before, "py") < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
            before = cpu.snapshot({}, {"py": name})
        burner.wait(timeout=20)
        after = cpu.snapshot({}, {"py": name})
    finally:
        burner.kill()
        burner.wait()
    assert cpu.total(before, "py") >= 0.3
    assert cpu.total(after, "py") == 0  # the burner's time left with it
    assert cpu.spent(before, after, "py") >= 0
    assert cpu.per_message_ms(before, after, 1)["py"] >= 0
