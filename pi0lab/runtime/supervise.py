"""Start the processes of a plan on one node and watch them: a dead, hung or failing process ends them all.

    supervisor = Supervisor(plan, target, args)        # target(world_args..., *args) runs in each process
    supervisor.start()
    for message in supervisor.messages():              # what the processes `report`, until they all finish
        ...
    supervisor.request_stop()                          # workers finish the iteration, checkpoint, end
    supervisor.shutdown()                              # kill whatever still runs (and its env subprocesses)

The parent owns the rendezvous store (a TCPStore on 127.0.0.1). Each worker:
- runs in its own process group (so Ctrl-C reaches only the parent, and killing the group reaps the env
  subprocesses it started), with its device bound before CUDA starts (`CUDA_VISIBLE_DEVICES`, and the EGL
  device MuJoCo renders LIBERO on);
- writes a heartbeat counter into the store from a thread every `HEARTBEAT_S`; a counter that stops moving
  for `HUNG_AFTER_S` (a stopped or wedged process) ends the run naming it. A worker whose work is done marks
  itself done before its heartbeat stops, and then has `EXIT_GRACE_S` to exit;
- on an exception writes its traceback into the store before exiting, so the parent's error carries it.
The parent polls every `POLL_S`: a worker that exits non-zero (or by a signal) ends the run at once.
"""

import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from pi0lab.runtime.plan import RunPlan
from pi0lab.runtime.world import STOP_KEY

done_key = "pi0lab/done/{}".format  # rank -> the key a worker sets once its work is done and it is exiting

HEARTBEAT_S = 0.5
HUNG_AFTER_S = 10.0
STARTUP_GRACE_S = 120.0  # before its first heartbeat a worker is importing torch and building its roles
EXIT_GRACE_S = 60.0  # a worker marked done is tearing down (process groups, interpreter) without heartbeats
POLL_S = 0.2


class WorkerFailed(RuntimeError):
    """A process of a placed run died, hung or raised; the message names its roles, rank and what happened."""


@dataclass
class _Proc:
    rank: int
    name: str
    process: mp.Process
    beats: int = -1
    last_change: float = 0.0


class Supervisor:
    def __init__(self, plan: RunPlan, target, args: tuple, hung_after_s: float = HUNG_AFTER_S):
        self.plan = plan
        self.target = target
        self.args = args
        self.hung_after_s = hung_after_s
        self.procs: list[_Proc] = []
        self.store: dist.TCPStore | None = None
        self._context = mp.get_context("spawn")
        self.reports = self._context.Queue()

    def start(self) -> None:
        self.store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, use_libuv=False)
        for worker in self.plan.workers:
            name = f"{','.join(worker.components)} rank {worker.rank}"
            env = _device_env(self.plan.device_type, worker.device)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # a spawned child copies the environment at start
            try:
                process = self._context.Process(
                    target=_worker_entry, name=name, daemon=False,
                    args=(self.target, self.args, self.plan, worker.rank, self.store.port, self.reports))
                process.start()
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            self.procs.append(_Proc(worker.rank, name, process, last_change=time.monotonic()))

    def messages(self):
        """Yield what workers `report` until every worker has exited cleanly; raise `WorkerFailed` otherwise."""
        while True:
            try:
                yield self.reports.get(timeout=POLL_S)
                continue
            except queue.Empty:
                pass
            self.check()
            if all(p.process.exitcode == 0 for p in self.procs):
                while True:  # what was reported just before the last exit
                    try:
                        yield self.reports.get_nowait()
                    except queue.Empty:
                        return

    def check(self) -> None:
        """Raise `WorkerFailed` (after ending every process) if a worker died, raised or stopped beating."""
        now = time.monotonic()
        for p in self.procs:
            code = p.process.exitcode
            if code not in (None, 0):
                self._fail(self._death(p, code))
            key = f"pi0lab/heartbeat/{p.rank}"
            beats = int(self.store.get(key)) if self.store.check([key]) else -1
            if beats != p.beats:
                p.beats, p.last_change = beats, now
            elif code is None:
                done = self.store.check([done_key(p.rank)])
                limit = EXIT_GRACE_S if done else STARTUP_GRACE_S if beats < 0 else self.hung_after_s
                if now - p.last_change > limit:
                    what = ("finished its work but did not exit" if done else
                            "sent no heartbeat since it started" if beats < 0 else "stopped sending heartbeats")
                    self._fail(f"{p.name} (pid {p.process.pid}) {what} {now - p.last_change:.0f} s ago: "
                                  "it is hung or stopped (SIGSTOP?)")

    def _death(self, p: _Proc, code: int) -> str:
        key = f"pi0lab/error/{p.rank}"
        if self.store.check([key]):
            return f"{p.name} (pid {p.process.pid}) raised:\n{self.store.get(key).decode()}"
        if code < 0:
            return f"{p.name} (pid {p.process.pid}) was killed by {signal.Signals(-code).name}"
        return f"{p.name} (pid {p.process.pid}) exited with code {code}"

    def _fail(self, message: str) -> None:
        self.shutdown()
        raise WorkerFailed(message)

    def request_stop(self) -> None:
        """Ask every worker to stop after the iteration in progress (they agree on it at the iteration's end)."""
        if self.store is not None:
            self.store.set(STOP_KEY, "1")

    def shutdown(self, grace_s: float = 2.0) -> None:
        """End every worker still running, with its process group (env subprocesses): SIGTERM, then SIGKILL."""
        alive = [p for p in self.procs if p.process.exitcode is None]
        for p in alive:
            _signal_group(p.process.pid, signal.SIGKILL if grace_s == 0 else signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in alive:
            p.process.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.process.exitcode is None:
                _signal_group(p.process.pid, signal.SIGKILL)
                p.process.join(5)
            else:  # reap the subprocesses of a worker that is already gone
                _signal_group(p.process.pid, signal.SIGKILL)
            for leaked in Path("/dev/shm").glob(f"pi0lab-{p.process.pid}-*"):  # rings of a killed env process
                leaked.unlink(missing_ok=True)


@contextmanager
def beating(beat: Callable[[int], None]):
    """Call `beat(count)` (count = 0, 1, ...) every `HEARTBEAT_S` from a thread while the block runs.

    The thread is stopped and joined before the block is left: a daemon thread caught inside a store call when
    the interpreter shuts down is ended mid-call, and that aborts the process ("terminate called without an
    active exception") after its work is done."""
    done = threading.Event()

    def run() -> None:
        count = 0
        while True:
            beat(count)
            count += 1
            if done.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=run, daemon=True, name="pi0lab-heartbeat")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _device_env(device_type: str, device: int) -> dict[str, str]:
    if device_type == "cuda":  # EGL numbers the physical GPUs (robosuite asserts the id is a visible CUDA device)
        return {"CUDA_VISIBLE_DEVICES": str(device), "MUJOCO_EGL_DEVICE_ID": str(device)}
    return {"CUDA_VISIBLE_DEVICES": ""}  # CPU slots: no process may grab a GPU


def _worker_entry(target, args: tuple, plan: RunPlan, rank: int, port: int, reports) -> None:
    """A spawned worker: own process group, heartbeat thread, then `target(plan, rank, store, report, *args)`."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; a terminal Ctrl-C is its to handle
    store = dist.TCPStore("127.0.0.1", port, is_master=False, use_libuv=False)
    beat_store = dist.TCPStore("127.0.0.1", port, is_master=False, use_libuv=False)  # one client per thread
    parent = os.getppid()

    def beat(count: int) -> None:
        if os.getppid() != parent:  # the parent died: do not outlive it
            os._exit(1)
        try:
            beat_store.set(f"pi0lab/heartbeat/{rank}", str(count))
        except Exception:  # the store went away with the parent
            os._exit(1)

    with beating(beat):
        try:
            target(plan, rank, dist.PrefixStore("pg", store), store, reports.put, *args)
        except BaseException:
            store.set(f"pi0lab/error/{rank}", traceback.format_exc())
            reports.close()
            reports.join_thread()
            os._exit(1)
        reports.close()
        reports.join_thread()
        store.set(done_key(rank), "1")
