"""Several trials of one study at once: worker processes that share the study's storage.

    workers = StudyWorkers(study, n_trials=8, processes=2)  # study: a TuningStudy; its storage is the meeting point
    workers.start()                                         # 2 processes, 4 trials each, one after another
    workers.request_stop()                                  # each ends its running trial after the iteration
    codes = workers.join()                                  # their exit codes (0: done or stopped)

A worker is a spawned process that opens the same study (SQLite with its busy timeout, or any database
URL) and runs its share of the trials; Optuna's ask hands each trial to exactly one worker, and the
sampler sees every finished trial of all of them. Each worker gets cores // processes torch threads.
The parent reads trials, scores and curves from the storage and from each trial's metrics.jsonl (what
`TuningPanel` draws); a Stop is one shared event (each worker ends its running trial after the
iteration as FAIL, stopped, and starts no other); a hand-pruned trial is a flag on the trial in the
storage (`TuningStudy.request_prune`). Workers run in their own process group, so a Ctrl-C or a kernel
interrupt reaches only the parent, which decides.

A worker whose parent dies (a kernel restart) exits at once: its running trial keeps the state RUNNING
with a heartbeat that stops, and the next `TuningStudy` that opens the study marks it FAIL. A worker's
output goes to `<run_root>/workers/worker_K.log`. Placed trials do not collide: every placed run's
supervisor binds its rendezvous store to a port the OS picks (port 0).
"""

import atexit
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

from pi0lab.lab.search import parse_spec

PARENT_CHECK_S = 1.0


def split_trials(n_trials: int, processes: int) -> list[int]:
    """n_trials over processes as evenly as possible, larger shares first; no process gets 0 (fewer processes)."""
    processes = min(processes, n_trials)
    return [n_trials // processes + (k < n_trials % processes) for k in range(processes)]


def default_processes() -> int:
    """One worker per two cores (a tabletop trial runs its envs and its update on about two)."""
    return max(1, (os.cpu_count() or 1) // 2)


class StudyWorkers:
    """`processes` worker processes adding `n_trials` trials to `study` between them."""

    def __init__(self, study, n_trials: int, processes: int):
        if processes < 1 or n_trials < 1:
            raise ValueError(f"need processes >= 1 and n_trials >= 1, got {processes} and {n_trials}")
        self.study = study
        self.shares = split_trials(n_trials, processes)
        self.threads = max(1, (os.cpu_count() or 1) // len(self.shares))
        self.log_dir = Path(study.run_root) / "workers"
        self.procs: list[multiprocessing.Process] = []
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        args = (self.study.config, self.study.overrides, {p.key: p.spec for p in self.study.space}, self.study.name,
                self.study.storage_url, self.study.pruner_kind, str(self.study.run_root), self.threads, os.getpid(),
                self._stop)
        for k, share in enumerate(self.shares):
            log = self.log_dir / f"worker_{k}.log"
            # not a daemon: a trial may start env subprocesses or placed workers of its own
            proc = self._context.Process(target=_worker, args=(*args, share, str(log)), name=f"pi0lab-tune-{k}")
            proc.start()
            self.procs.append(proc)
        atexit.register(self.terminate)  # a kernel that exits takes its workers along (their trials go stale)

    def alive(self) -> bool:
        return any(proc.is_alive() for proc in self.procs)

    def request_stop(self) -> None:
        """Every worker finishes its trial's iteration, marks it stopped and runs no other."""
        self._stop.set()

    def terminate(self) -> None:
        """End every live worker now (SIGTERM): its running trial stays RUNNING until its heartbeat goes stale."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()

    def join(self, timeout: float | None = None) -> list[int | None]:
        """Wait for every worker; their exit codes (None: still running after timeout)."""
        for proc in self.procs:
            proc.join(timeout)
        return [proc.exitcode for proc in self.procs]

    def failures(self) -> list[str]:
        """One line per worker that ended with an error, with the end of its log."""
        lines = []
        for k, proc in enumerate(self.procs):
            if proc.exitcode not in (None, 0):
                log = self.log_dir / f"worker_{k}.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                lines.append(f"worker {k} exited with code {proc.exitcode} ({log}){': ' + tail[0] if tail else ''}")
        return lines


def _worker(config, overrides, specs, name, storage, pruner, run_root, threads, parent_pid, stop, n_trials,
            log) -> None:
    """A worker process: its own process group, output to `log`, ends with its parent, runs n_trials of the
    study until `stop` (a multiprocessing Event) is set."""
    os.setpgrp()
    out = open(log, "a", buffering=1)
    sys.stdout = sys.stderr = out
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    import torch

    from pi0lab.lab.study import TuningStudy

    torch.set_num_threads(threads)
    _exit_with_parent(parent_pid)
    study = TuningStudy(config, overrides, [parse_spec(k, s) for k, s in specs.items()], name, storage, pruner, run_root)
    threading.Thread(target=lambda: stop.wait() and study.request_stop(), daemon=True).start()  # mid-trial
    for _ in range(n_trials):
        if stop.is_set():
            break
        study.run_trial(lambda u: print(f"trial {u.trial}: {u.state} {u.note}".rstrip(), flush=True)
                        if u.state != "RUNNING" else None)


def _exit_with_parent(parent_pid: int) -> None:
    """A daemon thread that ends this process as soon as its parent is gone."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()
