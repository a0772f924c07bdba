"""Thread choice on shared machines: affinity, busy CPUs, explicit requests, OpenMP waiting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geospade import threads
from geospade.errors import GeospadeError


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: set ``cpus`` (affinity), ``quota`` (cgroup) and ``busy`` (others' load)."""
    state = {"cpus": {0, 1, 2, 3}, "quota": None, "busy": 0.0}
    monkeypatch.setattr(threads, "affinity_cpus", lambda: set(state["cpus"]))
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: state["quota"])
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.2: state["busy"])
    return state


def test_an_idle_machine_gets_one_thread_per_cpu_in_the_affinity_mask(machine):
    machine["cpus"] = {2, 5, 7}
    assert threads.choose_threads() == 3
    assert threads.choose_threads(0) == 3  # 0 means automatic too


@pytest.mark.parametrize("busy, expected", [(0.4, 4), (0.6, 3), (1.0, 3), (2.2, 2),
                                            (3.9, 1), (4.0, 1), (9.0, 1)])
def test_busy_cpus_are_left_to_the_other_processes_but_one_thread_remains(machine, busy, expected):
    machine["busy"] = busy
    assert threads.choose_threads() == expected


def test_two_cpus_beside_one_busy_process_use_one_thread(machine):
    machine["cpus"], machine["busy"] = {0, 1}, 1.0
    assert threads.choose_threads() == 1
    assert threads.describe_threads().startswith("threads: 1 of 2 CPUs (1.0 busy)")


def test_an_explicit_request_is_kept_but_never_exceeds_the_usable_cpus(machine):
    machine["busy"] = 3.0  # a request is not second-guessed by the load
    assert threads.choose_threads(2) == 2
    assert threads.choose_threads(4) == 4
    assert threads.choose_threads(64) == 4
    assert "asked for 64" in threads.describe_threads()
    with pytest.raises(GeospadeError, match="thread count"):
        threads.choose_threads(-1)


def test_a_cgroup_quota_caps_the_cpus(machine):
    machine["cpus"], machine["quota"] = set(range(64)), 1.5
    assert threads.usable_cpus() == 2
    assert threads.choose_threads() == 2
    machine["quota"] = 0.25  # a quarter of a CPU is still one thread
    assert threads.choose_threads() == 1


def test_busy_cpus_counts_other_processes_not_this_one(monkeypatch):
    # 2 CPUs, 100 ticks each in the window: 150 busy ticks, of which this process used 0.5 s
    # (50 ticks at 100 Hz) -> others keep one CPU busy.
    ticks = iter([(1000, 400), (1200, 550)])
    own = iter([10.0, 10.5])
    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "cpu_ticks", lambda cpus: next(ticks))
    monkeypatch.setattr(threads, "own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(threads.os, "sysconf", lambda name: 100)
    assert threads.busy_cpus(0) == pytest.approx(1.0)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat")
def test_cpu_ticks_reads_only_the_cpus_of_the_mask():
    one = threads.cpu_ticks({min(os.sched_getaffinity(0))})
    both = threads.cpu_ticks(os.sched_getaffinity(0))
    assert one is not None and both is not None
    assert 0 <= one[1] <= one[0] and one[0] <= both[0]
    assert threads.cpu_ticks({10_000}) is None


def test_configure_threads_sets_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        threads.configure_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(GeospadeError):
            threads.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def _spin_count(code: str) -> str | None:
    """GOMP_SPINCOUNT as libgomp reports it at start-up in a fresh process running ``code``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stderr
    lines = [line for line in err.splitlines() if "GOMP_SPINCOUNT" in line]
    return lines[0].split("=")[1].strip(" '") if lines else None


def test_passive_wait_works_only_before_torch_starts_openmp():
    pytest.importorskip("torch")
    use = "from geospade.threads import use_passive_wait as p; print(p()); "
    before = _spin_count(use + "import torch; torch.ones(2).sum()")
    if before is None:
        pytest.skip("not GNU OpenMP (libgomp): cannot read its spin count")
    after = _spin_count("import torch; torch.ones(2).sum(); " + use)
    # libgomp reads the policy once, when torch loads it: PASSIVE means no spinning at all.
    assert before == "0"
    assert after != "0"
