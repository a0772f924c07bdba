"""How many CPU threads torch should use, on a machine that other processes may share.

PyTorch starts one OpenMP thread per CPU and, by default, its threads spin while they wait for
each other. On a shared machine that is the worst case: when another process holds one of the
CPUs, every parallel region waits for the thread that was descheduled, and the spinning threads
take CPU time from it. Measured on 2 CPUs beside a second geospade process, a training with
torch's default 2 threads ran 40x slower than with 1 thread. So:

- :func:`choose_threads` counts the CPUs this process may run on (its affinity mask, capped by
  a cgroup CPU quota) less those other processes keep busy right now, at least 1;
- :func:`configure_threads` applies it and asks OpenMP to sleep instead of spin while waiting
  (``OMP_WAIT_POLICY=PASSIVE``; see :func:`use_passive_wait` for when that can take effect);
- :func:`describe_threads` says what was chosen, in one line for a run's first messages.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from geospade.errors import GeospadeError

PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}
"""The environment that makes OpenMP threads sleep, not spin, while they wait (libgomp and
Intel's runtime both read it when they start, i.e. when torch is first imported)."""


@dataclass(frozen=True)
class ThreadChoice:
    """What :func:`choose_threads` decided and why.

    Args:
        threads: the thread count chosen.
        cpus: CPUs this process may use (affinity mask, cgroup quota).
        busy: CPUs other processes kept busy when it looked (a fraction of CPUs summed).
        requested: the count asked for, or None for automatic.
    """

    threads: int
    cpus: int
    busy: float
    requested: int | None


_last_choice: ThreadChoice | None = None
_passive_in_time: bool | None = None  # None: use_passive_wait was never called


def choose_threads(requested: int | None = None, sample_s: float = 0.2) -> int:
    """A torch thread count that degrades gracefully when other processes share the CPUs.

    Args:
        requested: an explicit count (kept, but never more than the usable CPUs: more threads
            than CPUs only wait on each other); None or 0 chooses automatically.
        sample_s: how long to watch the CPUs to see how busy they are (automatic only).

    Returns:
        The usable CPUs less the busy ones, at least 1 (or ``requested``, capped).

    Raises:
        GeospadeError: ``requested`` is negative.
    """
    global _last_choice
    if requested is not None and requested < 0:
        raise GeospadeError(f"thread count must be 0 (automatic) or more, not {requested}")
    cpus = usable_cpus()
    if requested:
        threads, busy = min(requested, cpus), 0.0
    else:
        busy = busy_cpus(sample_s)
        # A CPU counts as taken once others use more than half of it.
        threads = max(1, cpus - math.floor(busy + 0.5))
    _last_choice = ThreadChoice(threads, cpus, busy, requested or None)
    return threads


def configure_threads(n: int) -> None:
    """Run torch's CPU operations on ``n`` threads, with OpenMP waiting passively if possible.

    Args:
        n: thread count, at least 1 (e.g. from :func:`choose_threads`).
    """
    if n < 1:
        raise GeospadeError(f"thread count must be at least 1, not {n}")
    use_passive_wait()
    import torch

    torch.set_num_threads(n)


def use_passive_wait() -> bool:
    """Ask OpenMP threads to sleep while they wait (unless the user set a policy already).

    OpenMP reads the policy once, when its runtime is loaded, which ``import torch`` does. So it
    only takes effect when called before torch is imported in this process, e.g. first thing in
    the command-line entry point; called later it still passes the setting on to child
    processes.

    Returns:
        True when the policy can still take effect in this process.
    """
    global _passive_in_time
    for key, value in PASSIVE_WAIT.items():
        os.environ.setdefault(key, value)
    in_time = "torch" not in sys.modules
    if _passive_in_time is None or not in_time:
        _passive_in_time = in_time
    return in_time


def describe_threads() -> str:
    """One line on the thread settings, e.g. ``threads: 1 of 2 CPUs (1 busy), OpenMP waits
    passively``; for the first lines a command prints."""
    choice = _last_choice
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    if choice is None:
        head = f"threads: {threads if threads is not None else '?'} of {usable_cpus()} CPUs"
    elif choice.requested:
        head = f"threads: {choice.threads} of {choice.cpus} CPUs (asked for {choice.requested})"
    else:
        head = f"threads: {choice.threads} of {choice.cpus} CPUs ({choice.busy:.1f} busy)"
    if threads is not None and choice is not None and threads != choice.threads:
        head += f", torch uses {threads}"
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    if policy == "PASSIVE" and _passive_in_time is not False:
        wait = "OpenMP waits passively"
    elif policy:
        wait = f"OMP_WAIT_POLICY={policy}" + ("" if _passive_in_time is not False else
                                              " (set after torch started: no effect)")
    else:
        wait = "OpenMP spins while waiting"
    return f"{head}, {wait}"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(affinity_cpus())
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def busy_cpus(sample_s: float = 0.2) -> float:
    """How many of this process's CPUs other processes keep busy (0.0 .. CPUs).

    Watches the CPUs in the affinity mask for ``sample_s`` seconds (``/proc/stat``) and takes
    away this process's own use; without ``/proc``, the 1-minute load average.
    """
    cpus = affinity_cpus()
    before, own_before = cpu_ticks(cpus), own_cpu_seconds()
    if before is None:
        try:
            return min(float(len(cpus)), os.getloadavg()[0])
        except (AttributeError, OSError):  # Windows has no load average
            return 0.0
    time.sleep(sample_s)
    after, own_after = cpu_ticks(cpus), own_cpu_seconds()
    if after is None:
        return 0.0
    total = after[0] - before[0]
    if total <= 0:
        return 0.0
    hz = os.sysconf("SC_CLK_TCK")
    busy_ticks = (after[1] - before[1]) - (own_after - own_before) * hz
    return max(0.0, min(float(len(cpus)), busy_ticks / total * len(cpus)))


def affinity_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where there is none)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time a cgroup v2 ``cpu.max`` allows (containers), None without one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(all ticks, busy ticks) summed over ``cpus`` from ``/proc/stat``; None without it."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    total = busy = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (total, busy) if total else None


def own_cpu_seconds() -> float:
    """CPU seconds this process has used (all its threads)."""
    t = os.times()
    return t.user + t.system
