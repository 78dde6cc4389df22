"""Vector envs over `SingleEnv`s: in this process (`SyncVectorEnv`) or in worker processes (`SubprocVectorEnv`).

`SubprocVectorEnv` starts workers with the `spawn` method (never fork a process that holds a GL
context), gives each a contiguous block of envs, and passes whole chunks per call. Images come back
through shared memory (`main`, `wrist` uint8 [N,H,W,3], `states` float32 [N,state_dim], 8 unless
the tabletop's privileged-state control widens it); the small arrays
(rewards, flags) come back through the pipe. Every wait on a worker has a deadline: a worker that
dies or does not answer within `timeout_s` raises `EnvWorkerError` naming the worker, its envs and
their tasks. `restart_worker(w)` replaces it (its envs then need a `reset`); `close()` reaps every
process and frees the shared memory.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory

import numpy as np

from pi0lab.envs.base import SingleEnv, VectorEnv, stack_single_obs


def _describe(env: SingleEnv) -> dict:
    """The suite facts a vector env needs from its single envs."""
    return {
        "suite": env.suite,
        "num_tasks": env.num_tasks,
        "max_episode_steps": env.max_episode_steps,
        "image_size": env.image_size,
        "state_dim": env.state_dim,
        "descriptions": [env.task_description(t) for t in range(env.num_tasks)],
        "num_init_states": [env.num_init_states(t) for t in range(env.num_tasks)],
    }


class _SuiteFacts:
    """Task descriptions and init-state counts shared by the vector envs in this module."""

    def _set_facts(self, facts: dict) -> None:
        self.suite = facts["suite"]
        self.num_tasks = facts["num_tasks"]
        self.max_episode_steps = facts["max_episode_steps"]
        self.image_size = facts["image_size"]
        self.state_dim = facts["state_dim"]
        self._descriptions = facts["descriptions"]
        self._num_init_states = facts["num_init_states"]

    def task_description(self, task_id: int) -> str:
        return self._descriptions[task_id]

    def num_init_states(self, task_id: int) -> int:
        return self._num_init_states[task_id]


class SyncVectorEnv(_SuiteFacts, VectorEnv):
    """N single envs stepped one after another in this process."""

    def __init__(self, envs: Sequence[SingleEnv], seed: int = 0, auto_reset: bool = False):
        super().__init__(len(envs), seed, auto_reset)
        self.envs = list(envs)
        facts = [_describe(e) for e in self.envs]
        if any(f != facts[0] for f in facts[1:]):
            raise ValueError("all single envs of a vector env must be the same suite at the same image size")
        self._set_facts(facts[0])

    def _reset_envs(self, env_ids, task_ids, init_state_ids):
        return stack_single_obs(
            [self.envs[i].reset(int(t), int(k)) for i, t, k in zip(env_ids.tolist(), task_ids, init_state_ids)]
        )

    def _step_envs(self, env_ids, actions):
        results = [self.envs[i].step_chunk(a) for i, a in zip(env_ids.tolist(), actions)]
        obs = stack_single_obs([r[0] for r in results])
        rewards, terminated, truncated = (np.stack([r[j] for r in results]) for j in (1, 2, 3))
        success = np.array([r[4]["success"] for r in results], dtype=bool)
        return obs, rewards.astype(np.float32), terminated.astype(bool), truncated.astype(bool), success

    def close(self):
        for env in self.envs:
            env.close()


class EnvWorkerError(RuntimeError):
    """A worker process died, hung or raised; the message names the worker, its envs and their tasks."""

    def __init__(self, message: str, worker: int):
        super().__init__(message)
        self.worker = worker


def _shm_arrays(blocks: dict, num_envs: int, size: int, state_dim: int) -> dict[str, np.ndarray]:
    return {
        "main_images": np.ndarray((num_envs, size, size, 3), np.uint8, buffer=blocks["main_images"].buf),
        "wrist_images": np.ndarray((num_envs, size, size, 3), np.uint8, buffer=blocks["wrist_images"].buf),
        "states": np.ndarray((num_envs, state_dim), np.float32, buffer=blocks["states"].buf),
    }


def _worker_main(conn, factories, env_ids) -> None:
    """Worker loop: build the envs, then answer (command, payload) messages until "close".
    A failure to build the envs is the answer to every message, so the parent raises it."""
    try:
        envs, build_error = [factory() for factory in factories], None
    except Exception:  # reported to the parent, which raises EnvWorkerError with this traceback
        envs, build_error = [], traceback.format_exc()
    arrays, blocks = None, None

    def write(local: int, obs: dict) -> str:
        gid = env_ids[local]
        arrays["main_images"][gid] = obs["main_image"]
        arrays["wrist_images"][gid] = obs["wrist_image"]
        arrays["states"][gid] = obs["state"]
        return obs["task_description"]

    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, ConnectionResetError):
            return  # the parent is gone
        if build_error is not None:
            conn.send(("error", build_error))
            continue
        try:
            if command == "describe":
                reply = _describe(envs[0])
            elif command == "attach":
                names, num_envs, size, state_dim = payload
                blocks = {key: shared_memory.SharedMemory(name=name) for key, name in names.items()}
                arrays = _shm_arrays(blocks, num_envs, size, state_dim)
                reply = None
            elif command == "reset":
                reply = [write(local, envs[local].reset(task, init)) for local, task, init in payload]
            elif command == "step":
                locals_, actions = payload
                results = []
                for local, chunk in zip(locals_, actions):
                    obs, rewards, terminated, truncated, info = envs[local].step_chunk(chunk)
                    results.append((write(local, obs), rewards, terminated, truncated, bool(info["success"])))
                reply = results
            elif command == "close":
                for env in envs:
                    env.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", reply))
        except Exception:  # reported to the parent, which raises EnvWorkerError with this traceback
            conn.send(("error", traceback.format_exc()))


class SubprocVectorEnv(_SuiteFacts, VectorEnv):
    """N single envs in `num_workers` spawned processes (contiguous blocks of envs per worker)."""

    def __init__(self, factories: Sequence[Callable[[], SingleEnv]], num_workers: int = 1, seed: int = 0,
                 auto_reset: bool = False, timeout_s: float = 60.0):
        super().__init__(len(factories), seed, auto_reset)
        if not 1 <= num_workers <= len(factories):
            raise ValueError(f"num_workers must be in 1..{len(factories)} (one env at least per worker); got {num_workers}")
        self.factories = list(factories)
        self.timeout_s = timeout_s
        self.blocks_of_envs = [b.tolist() for b in np.array_split(np.arange(self.num_envs), num_workers)]
        self._context = mp.get_context("spawn")
        self._procs: list = [None] * num_workers
        self._conns: list = [None] * num_workers
        self._shm: dict[str, shared_memory.SharedMemory] = {}
        self._arrays: dict[str, np.ndarray] = {}
        self._descriptions: list[str] | None = None  # known once the workers have described their suite
        self._closed = False
        try:
            for w in range(num_workers):
                self._start(w)
            facts = list(self._call({w: ("describe", None) for w in range(num_workers)}, "start").values())
            if any(f != facts[0] for f in facts[1:]):
                raise ValueError("all single envs of a vector env must be the same suite at the same image size")
            self._set_facts(facts[0])
            size = self.image_size
            nbytes = {"main_images": self.num_envs * size * size * 3, "wrist_images": self.num_envs * size * size * 3,
                      "states": self.num_envs * self.state_dim * 4}
            self._shm = {k: shared_memory.SharedMemory(create=True, size=n) for k, n in nbytes.items()}
            self._arrays = _shm_arrays(self._shm, self.num_envs, size, self.state_dim)
            for w in range(num_workers):
                self._attach_worker(w)
        except BaseException:
            self.close()
            raise

    # ---- workers ------------------------------------------------------------------------------
    def _start(self, w: int) -> None:
        parent, child = self._context.Pipe()
        proc = self._context.Process(
            target=_worker_main, args=(child, [self.factories[i] for i in self.blocks_of_envs[w]], self.blocks_of_envs[w]),
            daemon=True, name=f"pi0lab-env-worker-{w}",
        )
        proc.start()
        child.close()  # the worker holds the only other end: its death shows up as EOF here
        self._procs[w], self._conns[w] = proc, parent

    def _attach_worker(self, w: int) -> None:
        names = {k: block.name for k, block in self._shm.items()}
        self._call({w: ("attach", (names, self.num_envs, self.image_size, self.state_dim))}, "start")

    def restart_worker(self, w: int) -> None:
        """Replace worker `w` (dead, hung or healthy) with a fresh one; call `reset()` before stepping again."""
        self._kill(w)
        self._start(w)
        self._call({w: ("describe", None)}, "start")
        self._attach_worker(w)
        self._obs = None

    def _kill(self, w: int, grace_s: float = 0.0) -> None:
        """Reap worker w: wait up to `grace_s` for it to exit by itself, then kill it."""
        proc, conn = self._procs[w], self._conns[w]
        if proc is not None:
            proc.join(timeout=grace_s)
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        if conn is not None:
            conn.close()
        self._procs[w], self._conns[w] = None, None

    def _who(self, w: int) -> str:
        envs = self.blocks_of_envs[w]
        if self._descriptions is None:
            return f"env worker {w} (envs {envs[0]}-{envs[-1]}, starting up)"
        tasks = "; ".join(f"env {i}: task {self.task_ids[i]} {self._descriptions[self.task_ids[i]]!r}" for i in envs)
        return f"env worker {w} ({self.suite}; {tasks})"

    def _call(self, messages: dict[int, tuple], what: str) -> dict[int, object]:
        """Send one message per worker, then collect every answer before one shared deadline.

        Every worker is drained before an error is raised, so the pipes stay in step."""
        for w in messages:
            if self._procs[w] is None:
                raise EnvWorkerError(f"{self._who(w)} is gone after an earlier failure; call restart_worker({w}) "
                                     "and reset()", w)
        unreachable = set()
        for w, message in messages.items():
            try:
                self._conns[w].send(message)
            except (BrokenPipeError, ConnectionResetError):  # died since the last call
                unreachable.add(w)
        deadline = time.monotonic() + self.timeout_s
        replies, failures = {}, []
        for w in messages:
            conn, proc = self._conns[w], self._procs[w]
            try:
                if w in unreachable:
                    raise EOFError
                ready = conn.poll(max(deadline - time.monotonic(), 0.0))
                status, reply = conn.recv() if ready else ("hung", None)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                status, reply = "died", None
            if status == "ok":
                replies[w] = reply
                continue
            if status == "error":
                failures.append(EnvWorkerError(f"{self._who(w)} raised during {what}:\n{reply}", w))
                continue
            if status == "hung":
                message = f"{self._who(w)} did not answer {what} within {self.timeout_s:g} s (hung); it was killed"
            else:
                proc.join(timeout=1)
                message = f"{self._who(w)} died during {what} (exit code {proc.exitcode})"
            self._kill(w)
            failures.append(EnvWorkerError(message + f"; call restart_worker({w}) and reset()", w))
        if failures:
            raise failures[0]
        return replies

    # ---- VectorEnv backend --------------------------------------------------------------------
    def _by_worker(self, env_ids: np.ndarray) -> dict[int, list[int]]:
        """Split global env ids into {worker: [positions in env_ids]}."""
        owner = {i: w for w, block in enumerate(self.blocks_of_envs) for i in block}
        groups: dict[int, list[int]] = {}
        for pos, i in enumerate(env_ids.tolist()):
            groups.setdefault(owner[i], []).append(pos)
        return groups

    def _local(self, w: int, i: int) -> int:
        return i - self.blocks_of_envs[w][0]

    def _gather(self, env_ids: np.ndarray, descriptions: list[str]) -> dict:
        return {
            "main_images": self._arrays["main_images"][env_ids].copy(),
            "wrist_images": self._arrays["wrist_images"][env_ids].copy(),
            "states": self._arrays["states"][env_ids].copy(),
            "task_descriptions": descriptions,
        }

    def _reset_envs(self, env_ids, task_ids, init_state_ids):
        groups = self._by_worker(env_ids)
        self.task_ids[env_ids] = task_ids  # so that errors name the tasks being reset
        messages = {
            w: ("reset", [(self._local(w, int(env_ids[p])), int(task_ids[p]), int(init_state_ids[p])) for p in pos])
            for w, pos in groups.items()
        }
        replies = self._call(messages, "reset")
        descriptions = [""] * len(env_ids)
        for w, pos in groups.items():
            for p, text in zip(pos, replies[w]):
                descriptions[p] = text
        return self._gather(env_ids, descriptions)

    def _step_envs(self, env_ids, actions):
        groups = self._by_worker(env_ids)
        messages = {w: ("step", ([self._local(w, int(env_ids[p])) for p in pos], actions[pos])) for w, pos in groups.items()}
        replies = self._call(messages, "step")
        n, chunk = actions.shape[:2]
        rewards = np.zeros((n, chunk), np.float32)
        terminated, truncated = np.zeros((n, chunk), bool), np.zeros((n, chunk), bool)
        success, descriptions = np.zeros(n, bool), [""] * n
        for w, pos in groups.items():
            for p, (text, rew, term, trunc, ok) in zip(pos, replies[w]):
                descriptions[p], rewards[p], terminated[p], truncated[p], success[p] = text, rew, term, trunc, ok
        return self._gather(env_ids, descriptions), rewards, terminated, truncated, success

    def close(self) -> None:
        """Ask every worker to stop, kill the ones that do not, reap them all, free the shared memory."""
        if self._closed:
            return
        self._closed = True
        for w, (proc, conn) in enumerate(zip(self._procs, self._conns)):
            if proc is not None and proc.is_alive():
                try:
                    conn.send(("close", None))
                    if conn.poll(5):
                        conn.recv()
                except (EOFError, OSError):
                    pass  # already gone: reaped below
            self._kill(w, grace_s=5.0)
        self._arrays = {}  # drop the views before closing the blocks they point into
        for block in self._shm.values():
            block.close()
            block.unlink()
        self._shm = {}
