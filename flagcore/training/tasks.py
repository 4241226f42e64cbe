"""Where flagcore's heavy tasks run: in this process, in a local pool of spawned workers, or on Ray.

Retraining CPCV (one training run per split) and the inference of many checkpoints are lists of
independent tasks. ``run_tasks`` runs ``fn(shared, item)`` for every item and returns the results in
the items' order, wherever the tasks ran, so the caller's results do not depend on the choice:

- ``workers == 1`` and no Ray address: in this process, one task after the other;
- ``workers > 1``: a local pool of worker processes, each with ``cores // workers`` torch threads,
  forked from a server that imported torch and flagcore once (``worker_context``);
- ``ray_address``: tasks on a Ray cluster (``pip install 'flagcore[ray]'``). ``"local"`` starts a
  Ray instance on this machine for the call; ``"auto"`` or ``"host:port"`` / ``"ray://host:10001"``
  joins an existing cluster. Each task asks Ray for ``task_cpus`` CPUs and runs torch on that many
  threads; the cluster's free CPUs decide how many run at once. flagcore itself is shipped to the
  cluster with the tasks (Ray's ``py_modules``); torch and the other dependencies must be installed
  on its nodes.

``after`` orders tasks that depend on each other: ``after={i: j}`` starts item i only once item j
has finished (the demo's walk-forward task starts from the model another task trains). Locally a
freed worker takes the first item in the list that may start, so the list's order is the priority.
The results still come back in the items' order.

``fn`` must be a module-level function (it is pickled by reference), and scripts that call this with
``workers > 1`` need the usual ``if __name__ == "__main__":`` guard, as with any start method but fork.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagcore.errors import FlagcoreError

RAY_HINT = "pip install 'flagcore[ray]'"

_SHARED: Any = None  # the shared argument, set once per local worker by its initialiser


@dataclass(frozen=True)
class Placement:
    """Where tasks run: ``workers`` local processes, or a Ray cluster when ``ray_address`` is set."""

    workers: int = 1
    ray_address: str | None = None
    task_cpus: int = 1  # on Ray: CPUs (and torch threads) each task asks for

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise FlagcoreError(f"workers must be a whole number >= 1, got {self.workers!r}")
        if isinstance(self.task_cpus, bool) or not isinstance(self.task_cpus, int) or self.task_cpus < 1:
            raise FlagcoreError(f"task CPUs must be a whole number >= 1, got {self.task_cpus!r}")
        if self.ray_address is not None and not str(self.ray_address).strip():
            raise FlagcoreError("--ray-address is empty; give 'local', 'auto', host:port or ray://host:port")

    @property
    def parallel(self) -> bool:
        return self.workers > 1 or self.ray_address is not None

    def describe(self) -> str:
        if self.ray_address:
            return f"ray ({self.ray_address}, {self.task_cpus} CPU per task)"
        return "in process" if self.workers == 1 else f"{self.workers} local worker processes"


# what every worker imports anyway (torch and peft take about 5 s on 2 cores): imported once, in
# the server the workers are forked from, instead of in every spawned worker
PRELOAD = [
    "flagcore.training.loop",
    "flagcore.training.walk_forward",
    "flagcore.training.cpcv",
    "flagcore.training.cgdt",
    "flagcore.models.inference",
    "flagcore.models.checkpoint",
]


def worker_context():
    """The start method of local workers: forked from a server process that has imported torch,
    peft and flagcore once (``forkserver``), else spawned where there is no forkserver. Not plain
    ``fork``: the calling process may hold torch's thread pools, which do not survive a fork."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # takes effect when the server starts, once per process
    return ctx


def start_workers_early() -> None:
    """Start the server local workers are forked from now (``worker_context``), so that its imports
    (torch and peft: seconds) overlap with the caller's own work before ``run_tasks``; without a
    forkserver, nothing to do."""
    import multiprocessing as mp

    if worker_context() is mp.get_context("forkserver"):
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: trust kill(pid, 0)


def worker_init(threads: int, caller: int | None = None) -> None:
    """Initialiser of training workers: torch threads, and exit when the process that asked for
    the work (``caller``, by default the parent) dies, killed or interrupted, so no orphan keeps
    training. Workers forked from a forkserver have the server as parent, not the caller."""
    import threading

    import torch

    torch.set_num_threads(threads)
    caller = caller or os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not _process_alive(caller):
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _local_init(threads: int, shared: Any, caller: int) -> None:
    global _SHARED
    worker_init(threads, caller)
    _SHARED = shared


def _local_task(fn: Callable, item: Any) -> Any:
    return fn(_SHARED, item)


def _ray_task(fn: Callable, threads: int, shared: Any, item: Any) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(shared, item)


class _Schedule:
    """Which items may start: those without a dependency, or whose dependency has finished."""

    def __init__(self, n: int, after: Mapping[int, int] | None):
        self.after = _check_after(n, after)
        self.waiting = list(range(n))  # not started yet, in the items' order
        self.finished: set[int] = set()

    def _ready(self, i: int) -> bool:
        return i not in self.after or self.after[i] in self.finished

    def start_ready(self, limit: int | None = None) -> list[int]:
        """The waiting items that may start now, in order (at most ``limit``); they count as started."""
        ready = [i for i in self.waiting if self._ready(i)][:limit]
        self.waiting = [i for i in self.waiting if i not in ready]
        return ready

    def start_next(self) -> int:
        """The first waiting item that may start now (there is one while any is waiting, in process)."""
        i = next(i for i in self.waiting if self._ready(i))
        self.waiting.remove(i)
        return i

    def finish(self, i: int) -> None:
        self.finished.add(i)


def _check_after(n: int, after: Mapping[int, int] | None) -> dict[int, int]:
    """``after`` as a dict, refused when it names an item that does not exist or forms a loop."""
    deps = dict(after or {})
    for i, j in deps.items():
        for k in (i, j):
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
                raise FlagcoreError(f"after: {k!r} is not an item index (there are {n} items)")
    for i in deps:
        seen, j = {i}, deps[i]
        while j not in seen and j in deps:
            seen.add(j)
            j = deps[j]
        if j in seen:
            raise FlagcoreError(f"after: item {i} waits for itself (a loop of dependencies)")
    return deps


def run_tasks(
    fn: Callable[[Any, Any], Any],
    items: Sequence,
    *,
    shared: Any = None,
    placement: Placement | None = None,
    progress: Callable[[int, int], None] | None = None,
    after: Mapping[int, int] | None = None,
    on_result: Callable[[int, Any], None] | None = None,
) -> list:
    """``[fn(shared, item) for item in items]``, run where ``placement`` says; results in order.

    Parameters
    ----------
    fn : a module-level function ``fn(shared, item)``.
    items : the tasks' arguments.
    shared : the argument every task shares (sent to each worker once).
    placement : where the tasks run (default: in this process).
    progress : ``progress(done, total)``, called as tasks finish.
    after : ``{i: j}``: item i starts only once item j has finished.
    on_result : ``on_result(i, result)``, called in this process as item i's result arrives (before
        ``progress``), while later tasks still run: to use each result without waiting for all.

    Returns
    -------
    list : the tasks' results, in the items' order. A task's error is raised here, after the other
    tasks in flight are cancelled; the items that wait for a failed one never start.
    """
    placement = placement or Placement()
    items = list(items)
    schedule = _Schedule(len(items), after)
    if not items:
        return []
    if placement.ray_address is not None:
        return _run_ray(fn, items, shared, placement, _Done(len(items), progress, on_result), schedule)
    done = _Done(len(items), progress, on_result)
    if placement.workers == 1:
        while schedule.waiting:
            i = schedule.start_next()
            done(i, fn(shared, items[i]))
            schedule.finish(i)
        return done.in_order()
    return _run_local(fn, items, shared, placement.workers, done, schedule)


class _Done:
    """The results as they arrive: kept by item, passed to ``on_result``, counted to ``progress``."""

    def __init__(self, n: int, progress, on_result):
        self.n, self.progress, self.on_result = n, progress, on_result
        self.results: dict[int, Any] = {}

    def __call__(self, i: int, result: Any) -> None:
        self.results[i] = result
        if self.on_result:
            self.on_result(i, result)
        if self.progress:
            self.progress(len(self.results), self.n)

    def in_order(self) -> list:
        return [self.results[i] for i in range(self.n)]


def _run_local(fn, items, shared, workers, done_: _Done, schedule: _Schedule) -> list:
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        mp_context=worker_context(),
        initializer=_local_init,
        initargs=(threads, shared, os.getpid()),
    ) as pool:
        futures: dict[Future, int] = {}
        slots = min(workers, len(items))

        # one item per free worker, not every ready item into the pool's queue: a worker that frees
        # takes the first ready item in the list's order, so an item that became ready late (one that
        # waited for another) does not queue behind every item that was ready from the start
        def submit_ready(running: int) -> set[Future]:
            new = {pool.submit(_local_task, fn, items[i]): i for i in schedule.start_ready(slots - running)}
            futures.update(new)
            return set(new)

        pending = submit_ready(0)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                error = f.exception()
                if error is not None:
                    for p in pending:
                        p.cancel()
                    raise error
                schedule.finish(futures[f])
            pending |= submit_ready(len(pending))  # the freed workers' next items, then the results
            for f in done:
                done_(futures[f], f.result())
    return done_.in_order()


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A host:port address must accept a TCP connection: Ray itself retries an unreachable one for
    minutes before it gives up."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise FlagcoreError(
            f"--ray-address {address}: expected 'local', 'auto', host:port or ray://host:port"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise FlagcoreError(
            f"--ray-address {address}: nothing answers at {host}:{port} ({e.strerror or e})"
        ) from None


def _connect_ray(address: str):
    """Join (or, for "local", start) a Ray cluster; returns (ray, started_here)."""
    try:
        import ray
    except ImportError:
        raise FlagcoreError(f"--ray-address {address}: Ray is not installed; {RAY_HINT}") from None
    if ray.is_initialized():  # a notebook or script that already joined a cluster keeps it
        return ray, False
    import logging

    import flagcore

    kw: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        # the workers import this flagcore, whatever the nodes have installed
        "runtime_env": {"py_modules": [str(Path(flagcore.__file__).parent)]},
    }
    if address == "local":
        kw.update(num_cpus=os.cpu_count() or 1, object_store_memory=256 * 1024**2)
    elif address != "auto":
        _reachable(address)
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or ValueError here
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FlagcoreError(f"--ray-address {address}: cannot join the Ray cluster ({msg})") from None
    return ray, True


def _run_ray(fn, items, shared, placement: Placement, done_: _Done, schedule: _Schedule) -> list:
    ray, started = _connect_ray(str(placement.ray_address))
    try:
        task = ray.remote(num_cpus=placement.task_cpus, max_retries=0)(_ray_task)
        shared_ref = ray.put(shared)  # sent to the object store once, not with every task
        index: dict[Any, int] = {}

        def submit_ready() -> list:
            refs = []
            for i in schedule.start_ready():
                ref = task.remote(fn, placement.task_cpus, shared_ref, items[i])
                index[ref] = i
                refs.append(ref)
            return refs

        pending = submit_ready()
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                for r in pending:
                    ray.cancel(r, force=True)
                cause = getattr(e, "cause", None)  # the task's own exception, without Ray's wrapping
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            schedule.finish(index[done[0]])
            pending += submit_ready()
            done_(index[done[0]], result)
        return done_.in_order()
    finally:
        if started:
            ray.shutdown()
