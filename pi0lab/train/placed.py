"""A placed run: the processes of `cluster.component_placement`, each an `RLTrainer` over its own roles.

    trainer = PlacedTrainer(load_config("tabletop_ppo_nano", ["cluster.num_devices=3",
                            "cluster.component_placement={env: 0, rollout: 1, actor: 2}"]))
    for event in trainer.iterate():     # the same IterationEvents as the single-process trainer
        ...
    trainer.run()                       # from a script; Ctrl-C finishes the iteration, checkpoints, ends all

One node: the parent spawns the workers and supervises them (`pi0lab.runtime.supervise`). Several nodes,
or one node under torchrun: every torchrun worker runs `run_torchrun_worker`, the same worker code.
Under torchrun the agent holds the rendezvous store and ends every worker when one exits; rank 0 watches
the others' heartbeats in that store and exits (naming the culprit) when one stops; SIGINT / SIGTERM
(which the agent forwards) make every worker finish its iteration, and actor rank 0 writes the checkpoint.
"""

import datetime
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from pi0lab.runtime.plan import RunPlan, plan_run
from pi0lab.runtime.spans import flush_spans, start_spans
from pi0lab.runtime.supervise import HUNG_AFTER_S, Supervisor, beating, done_key
from pi0lab.runtime.world import World
from pi0lab.train.checkpoint import latest_checkpoint
from pi0lab.train.evaluate import EvalResult, evaluate_policy
from pi0lab.train.roles import build_envs, build_policy
from pi0lab.train.trainer import IterationEvent, RLTrainer, TrainingLoop, _summary, run_with_ctrl_c

ACK_TIMEOUT = datetime.timedelta(days=7)  # a notebook may sit on an iteration's event for long


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_worker(plan: RunPlan, rank: int, pg_store, control_store, report, cfg: DictConfig, resume, threads: int) -> None:
    """One process of a placed run: join the group, build this rank's roles, iterate; actor rank 0 reports
    each iteration's event (metrics, checkpoint, evaluation)."""
    torch.set_num_threads(threads)
    device = torch.device("cuda", torch.cuda.current_device()) if plan.device_type == "cuda" else torch.device("cpu")
    world = World.join(plan, rank, pg_store, device, control=control_store)
    start_spans(Path(cfg.runner.logger.log_path) / "spans" / f"rank_{rank:03d}.jsonl", world.name(), rank)
    trainer = RLTrainer(cfg, resume=resume, progress=False, world=world)
    _stop_on_signals(trainer)
    try:
        for event in trainer.iterate():
            if world.is_logger:
                report(event)
                if control_store is not None:  # like a generator: go on once the parent's consumer has taken it
                    control_store.wait([ack_key(event.iteration)], ACK_TIMEOUT)
    finally:
        trainer.close()
        flush_spans()
        world.close()


def ack_key(iteration: int) -> str:
    return f"pi0lab/ack/{iteration}"


def _stop_on_signals(trainer: TrainingLoop) -> None:
    """SIGTERM (and SIGINT under torchrun) finish the iteration and checkpoint, like a stop request."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: trainer.request_stop())


class PlacedTrainer:
    """The parent of a placed run on one node, with the surface of the single-process trainer."""

    def __init__(self, cfg: DictConfig, resume: bool | str | None = None, progress: bool = True, threads: int = 1):
        self.cfg = cfg
        if cfg.cluster.num_nodes > 1:
            raise ValueError(f"cluster.num_nodes={cfg.cluster.num_nodes}: start a run on several nodes with torchrun on "
                             "each node (`torchrun --nnodes=N --nproc-per-node=P --rdzv-backend=c10d ... -m pi0lab "
                             "train CONFIG`); `pi0lab train` alone starts the processes of one node")
        self.plan = plan_run(cfg, cuda_device_count())
        self.resume = resume
        self.progress = progress
        self.threads = threads
        self.run_dir = Path(cfg.runner.logger.log_path)
        if not resume and cfg.runner.resume_dir is None and latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already holds a run with checkpoints: resume it (--resume, "
                                  "resume=True) or set runner.logger.log_path to a new directory")
        self.iteration = 0
        self.supervisor: Supervisor | None = None
        self._stop_requested = False

    def iterate(self):
        """Start the workers and yield each iteration's `IterationEvent` until they finish (or one fails)."""
        self.supervisor = Supervisor(self.plan, run_worker, (self.cfg, self.resume, self.threads))
        self.supervisor.start()
        if self._stop_requested:  # asked before the workers started: they run no iteration
            self.supervisor.request_stop()
        messages = self.supervisor.messages()
        try:
            for event in messages:
                self.iteration = event.iteration
                yield event  # the consumer may request_stop() here, before the workers go on
                self.supervisor.store.set(ack_key(event.iteration), "1")
        except GeneratorExit:  # the consumer left between iterations: stop there and checkpoint, as one process does
            self.supervisor.request_stop()
            self.supervisor.store.set(ack_key(self.iteration), "1")
            for _ in messages:
                pass
            raise
        finally:
            self.supervisor.shutdown()

    def run(self, label: str = "") -> dict[str, float]:
        """Iterate to the end; the first Ctrl-C finishes the iteration in every process, checkpoints and ends."""
        return run_with_ctrl_c(self.iterate(), lambda: self._stop_requested, self.request_stop, self.progress, label)

    def request_stop(self) -> None:
        self._stop_requested = True
        if self.supervisor is not None and self.supervisor.store is not None:
            self.supervisor.request_stop()

    def evaluate(self, num_episodes: int | None = None) -> EvalResult:
        """The newest checkpoint's deterministic policy on the fixed pairs of `env.eval`, in this process."""
        checkpoint = latest_checkpoint(self.run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"{self.run_dir} has no checkpoint to evaluate yet")
        device = torch.device("cuda" if cuda_device_count() else "cpu")
        policy = build_policy(self.cfg.actor.model, device, override_path=checkpoint / "model")
        split = self.cfg.env.eval
        envs = build_envs(split, seed=self.cfg.runner.seed)
        try:
            return evaluate_policy(policy, envs, num_episodes or split.num_episodes or split.total_num_envs,
                                   self.cfg.runner.seed, progress=self.progress)
        finally:
            envs.close()

    def close(self) -> None:
        if self.supervisor is not None:
            self.supervisor.shutdown()


# ------------------------------------------------------------------------------------------ torchrun


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ
                                                   and "MASTER_ADDR" in os.environ)


def run_torchrun_worker(cfg: DictConfig, resume: bool | None, threads: int = 1) -> None:
    """This process's part of a run launched by torchrun (RANK / WORLD_SIZE / MASTER_ADDR set by it)."""
    plan = plan_run(cfg, cuda_device_count())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size != plan.world_size:
        raise ValueError(f"torchrun started {world_size} processes, but cluster.component_placement plans "
                         f"{plan.world_size}:\n{plan.describe()}\nset --nnodes x --nproc-per-node to {plan.world_size}")
    node, per_node = int(os.environ.get("GROUP_RANK", 0)), cfg.cluster.num_devices
    if plan.workers[rank].device // per_node != node:
        raise ValueError(f"torchrun made rank {rank} ({','.join(plan.workers[rank].components)} on device "
                         f"{plan.workers[rank].device}) a process of node {node}, which holds devices "
                         f"{node * per_node}-{(node + 1) * per_node - 1}: order cluster.component_placement so that "
                         f"ranks fill the nodes in turn:\n{plan.describe()}")
    if plan.device_type == "cuda":  # the plan's device on this node (devices are numbered across nodes)
        torch.cuda.set_device(plan.workers[rank].device % cfg.cluster.num_devices)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          use_libuv=False)

    def report(event: IterationEvent) -> None:
        print(_summary(event), flush=True)

    with beating(_torchrun_heartbeat(store, rank, plan)):
        run_worker(plan, rank, None, None, report, cfg, resume, threads)
        store.set(done_key(rank), "1")


def _torchrun_heartbeat(store, rank: int, plan: RunPlan):
    """`beat(count)` for `beating`: every rank beats into torchrun's store; rank 0 also watches the others and
    exits when one that is not done stops beating (torchrun then ends every worker)."""
    key = "pi0lab/heartbeat/{}".format
    last = {}

    def beat(count: int) -> None:
        store.set(key(rank), str(count))
        if rank != 0:
            return
        now = time.monotonic()
        for other in range(1, plan.world_size):
            if store.check([done_key(other)]):  # done and exiting (or gone): torchrun reports how it exits
                continue
            beats = store.get(key(other)) if store.check([key(other)]) else b"-1"
            seen, since = last.get(other, (None, now))
            if beats != seen:
                last[other] = (beats, now)
            elif beats != b"-1" and now - since > HUNG_AFTER_S:
                name = ",".join(plan.workers[other].components)
                print(f"error: {name} rank {other} stopped sending heartbeats {now - since:.0f} s ago: it is "
                      "hung or stopped; ending the run", flush=True)
                os._exit(1)

    return beat
