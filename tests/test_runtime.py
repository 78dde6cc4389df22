"""The placed runtime on CPU slots: plans and their refusals, the three placement shapes end to end, equality
with the single-process trainer and between 1 and 2 actor ranks, torchrun, faults, stop and resume, spans."""

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from pi0lab.runtime.plan import PlanError, plan_run
from pi0lab.runtime.spans import busy_fractions, chrome_trace, read_spans
from pi0lab.runtime.supervise import Supervisor, WorkerFailed
from pi0lab.train.checkpoint import CheckpointError, latest_checkpoint
from pi0lab.train.config import load_config
from pi0lab.train.placed import PlacedTrainer
from pi0lab.train.stages import make_trainer
from pi0lab.train.trainer import RLTrainer

SHAPES = {  # the seed's three shapes, scaled to CPU slots
    "shared": ["cluster.num_devices=4", "cluster.component_placement={env: 0-1, rollout: 2-3, actor: 0-3}",
               "rollout.pipeline_stage_num=2"],
    "collocated": ["cluster.num_devices=2", "cluster.component_placement={'env,rollout,actor': all}"],
    "disaggregated": ["cluster.num_devices=3", "cluster.component_placement={env: 0, rollout: 1, actor: 2}"],
}


def _config(checkpoint, run_dir, *extra):
    return load_config("tabletop_ppo_nano", [
        f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={run_dir}",
        "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=8",
        "env.train.video_cfg.save_video=false", "env.eval.video_cfg.save_video=false",
        "runner.max_epochs=2", "runner.val_check_interval=-1", "runner.save_interval=-1",
        "actor.global_batch_size=32", "actor.micro_batch_size=8", "algorithm.update_epoch=1",
        "actor.optim.critic_warmup_steps=0", *extra,
    ])


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(latest_checkpoint(run_dir) / "model" / "model.safetensors"))


# ------------------------------------------------------------------------------------------ plans


def test_plans_of_the_three_shapes():
    cfg = load_config("tabletop_ppo_nano", SHAPES["shared"])
    plan = plan_run(cfg)
    assert [w.components for w in plan.workers] == [("env",)] * 2 + [("rollout",)] * 2 + [("actor",)] * 4
    assert [w.device for w in plan.workers] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len(plan.slices) == 4  # 2 env processes x 2 stages, one rollout process per env process's 2 stages
    assert [plan.rollout_of_slice(k) for k in range(4)] == [2, 2, 3, 3]
    assert [(s.env_rank, s.stage, s.offset, s.size) for s in plan.slices] == [
        (0, 0, 0, 30), (0, 1, 30, 30), (1, 0, 0, 30), (1, 1, 30, 30)]
    fused = plan_run(load_config("tabletop_ppo_nano", SHAPES["collocated"]))
    assert [w.components for w in fused.workers] == [("env", "rollout", "actor")] * 2
    wide = plan_run(load_config("tabletop_ppo_nano", [
        "cluster.num_devices=8", "cluster.component_placement={env: 0-1, rollout: 2-5, actor: 6-7}"]))
    assert [wide.rollout_of_slice(k) for k in range(4)] == [2, 3, 4, 5]  # each env process feeds two rollouts
    assert [s.env_rank for s in wide.slices] == [0, 0, 1, 1]


@pytest.mark.parametrize("overrides, words", [
    (["cluster.num_devices=3", "cluster.component_placement={env: 0-2, rollout: 0, actor: 0}",
      "env.train.total_num_envs=100"], "env.train.total_num_envs=100 does not split over the 3 env processes"),
    (["cluster.num_devices=2", "cluster.component_placement={env: 0-1, rollout: 0, actor: 1}",
      "rollout.pipeline_stage_num=4", "env.train.total_num_envs=20"], "rollout.pipeline_stage_num=4 does not divide"),
    (["cluster.num_devices=3", "cluster.component_placement={env: 0-1, rollout: 0-2, actor: 0}"],
     "cannot be shared evenly by 3 rollout processes"),
    (["cluster.num_devices=3", "cluster.component_placement={'env,rollout': 0-1, actor: 0-2}",
      "actor.global_batch_size=512"], "actor.global_batch_size=512 must split into 3 actor shares"),
    (["cluster.num_devices=2", "cluster.component_placement={'env,rollout,actor': all}", "algorithm.adv_type=grpo",
      "algorithm.loss_type=actor", "actor.model.add_value_head=false", "algorithm.group_size=8",
      "env.train.group_size=8", "env.train.total_num_envs=8"], "a GRPO group must not be split"),
    (["actor.data_parallel=fsdp2"], "places 1 actor process: place actor on >= 2 devices"),
])
def test_plans_that_cannot_run_are_refused_naming_the_keys(overrides, words):
    with pytest.raises((PlanError, ValueError), match=words.replace("(", r"\(").replace("{", r"\{")):
        plan_run(load_config("tabletop_ppo_nano", overrides))


def test_gpu_plans_refuse_two_ranks_of_one_nccl_group_on_one_gpu():
    cfg = load_config("tabletop_ppo_nano", ["cluster.num_devices=2",
                                            "cluster.component_placement={env: 0-1, rollout: 0-1, actor: 0-1}"])
    with pytest.raises(PlanError, match="GPU 0 would hold actor and rollout as two ranks of the weight-sync group"):
        plan_run(cfg, cuda_devices=2)
    seed_shared = load_config("tabletop_ppo_nano", [  # actors on 0-7 beside rollouts on 4-7, in no common group
        "cluster.num_devices=8", "cluster.component_placement={env: 0-3, rollout: 4-7, actor: 0-7}",
        "rollout.pipeline_stage_num=2", "env.train.total_num_envs=64", "actor.global_batch_size=512",
        "actor.micro_batch_size=64"])
    assert plan_run(seed_shared, cuda_devices=8).world_size == 16
    with pytest.raises(PlanError, match="has 1 CUDA device"):
        plan_run(cfg, cuda_devices=1)
    assert plan_run(cfg).device_type == "cpu"  # the same placement on CPU slots runs


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def single_run(random_nano_checkpoint, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    trainer = RLTrainer(_config(random_nano_checkpoint, run_dir), progress=False)
    events = list(trainer.iterate())
    trainer.close()
    return run_dir, events


@pytest.fixture(scope="module")
def disaggregated_run(random_nano_checkpoint, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("disaggregated")
    trainer = make_trainer(_config(random_nano_checkpoint, run_dir, *SHAPES["disaggregated"]), progress=False)
    assert isinstance(trainer, PlacedTrainer)
    events = list(trainer.iterate())
    return run_dir, events


def test_a_placed_run_with_one_env_process_equals_the_single_process_run(single_run, disaggregated_run):
    (single_dir, single), (placed_dir, placed) = single_run, disaggregated_run
    assert [e.iteration for e in placed] == [1, 2]
    for name in ("actor/loss", "actor/value_loss", "actor/approx_kl", "actor/grad_norm", "env/success_once",
                 "rollout/returns_mean", "env/episode_len"):
        assert placed[-1].metrics[name] == pytest.approx(single[-1].metrics[name], rel=1e-4, abs=1e-6), name
    a, b = _weights(single_dir), _weights(placed_dir)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", ["shared", "collocated"])
def test_the_other_shapes_run_and_checkpoint(shape, random_nano_checkpoint, tmp_path):
    trainer = make_trainer(_config(random_nano_checkpoint, tmp_path, *SHAPES[shape]), progress=False)
    events = list(trainer.iterate())
    assert [e.iteration for e in events] == [1, 2]
    assert events[-1].metrics["actor/num_samples"] > 0
    assert latest_checkpoint(tmp_path).name == "step_000002"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # only actor rank 0 logs
    rows = read_spans(tmp_path)
    assert {r["rank"] for r in rows} == set(range(trainer.plan.world_size))
    trace = chrome_trace(rows)
    assert {e["ph"] for e in trace["traceEvents"]} == {"M", "X"}
    assert json.loads(json.dumps(trace)) == trace
    assert all(0.0 <= f <= 1.0 for f in busy_fractions(rows).values())


def test_stop_then_resume_under_the_same_placement_equals_the_straight_run(random_nano_checkpoint, disaggregated_run,
                                                                           tmp_path):
    cfg = _config(random_nano_checkpoint, tmp_path, *SHAPES["disaggregated"])
    first = PlacedTrainer(cfg, progress=False)
    for _ in first.iterate():
        first.request_stop()  # as the notebook's Stop button would
    assert latest_checkpoint(tmp_path).name == "step_000001"
    with pytest.raises(FileExistsError):
        PlacedTrainer(cfg, progress=False)
    events = list(PlacedTrainer(cfg, resume=True, progress=False).iterate())
    assert [e.iteration for e in events] == [2]
    straight = disaggregated_run[1][-1].metrics
    assert events[-1].metrics["actor/loss"] == pytest.approx(straight["actor/loss"], rel=1e-4, abs=1e-6)
    other = _config(random_nano_checkpoint, tmp_path, *SHAPES["collocated"])
    with pytest.raises(WorkerFailed, match="resume with the same cluster.num_devices"):
        list(PlacedTrainer(other, resume=True, progress=False).iterate())


def test_an_fsdp2_actor_stopped_and_resumed_trains_like_ddp(random_nano_checkpoint, tmp_path):
    """Two fused processes with the actor sharded by FSDP2: a run stopped after one iteration and resumed (the
    sharded AdamW state gathered into the checkpoint and sharded again) ends where the DDP run ends."""
    ddp = make_trainer(_config(random_nano_checkpoint, tmp_path / "ddp", *SHAPES["collocated"]), progress=False)
    straight = list(ddp.iterate())[-1].metrics
    cfg = _config(random_nano_checkpoint, tmp_path / "fsdp2", *SHAPES["collocated"], "actor.data_parallel=fsdp2")
    first = PlacedTrainer(cfg, progress=False)
    for _ in first.iterate():
        first.request_stop()
    events = list(PlacedTrainer(cfg, resume=True, progress=False).iterate())
    assert [e.iteration for e in events] == [2]
    for name in ("actor/loss", "actor/approx_kl", "actor/grad_norm", "env/success_once"):
        assert events[-1].metrics[name] == pytest.approx(straight[name], rel=1e-4, abs=1e-6), name
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "fsdp2")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    as_ddp = _config(random_nano_checkpoint, tmp_path / "fsdp2", *SHAPES["collocated"], "runner.max_epochs=3")
    with pytest.raises(WorkerFailed, match="resume with actor.data_parallel=fsdp2"):
        list(PlacedTrainer(as_ddp, resume=True, progress=False).iterate())


def test_a_corrupt_checkpoint_is_refused_naming_the_file(random_nano_checkpoint, single_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(single_run[0], run_dir)
    state = latest_checkpoint(run_dir) / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{state} is truncated or corrupt"):
        RLTrainer(_config(random_nano_checkpoint, run_dir), resume=True, progress=False)


def test_torchrun_standalone_runs_the_same_worker(random_nano_checkpoint, tmp_path):
    overrides = [f"actor.model.model_path={random_nano_checkpoint}", f"runner.logger.log_path={tmp_path}",
                 "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=8",
                 "env.train.video_cfg.save_video=false", "runner.max_epochs=1", "runner.val_check_interval=-1",
                 "actor.global_batch_size=32", "actor.micro_batch_size=8", "algorithm.update_epoch=1",
                 *SHAPES["collocated"]]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node=2", "-m", "pi0lab", "train",
                           "tabletop_ppo_nano", *overrides], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "iter    1" in done.stdout
    assert latest_checkpoint(tmp_path).name == "step_000001"


def test_two_torchrun_nodes_run_like_one_node(random_nano_checkpoint, tmp_path):
    """Two torchrun agents (nodes 0 and 1, static rendezvous on this host): the env processes on node 0 reach the
    rollout on node 1 in gloo messages instead of shared-memory rings; the run ends where one node's does."""
    placement = "cluster.component_placement={env: 0-1, rollout: 2, actor: 3}"
    overrides = [f"actor.model.model_path={random_nano_checkpoint}", "env.train.task_suite_name=tabletop_goal",
                 "env.train.total_num_envs=8", "env.train.video_cfg.save_video=false", "runner.max_epochs=1",
                 "runner.val_check_interval=-1", "actor.global_batch_size=32", "actor.micro_batch_size=8",
                 "algorithm.update_epoch=1", placement]
    one_node = make_trainer(load_config("tabletop_ppo_nano", overrides + [
        f"runner.logger.log_path={tmp_path / 'one'}", "cluster.num_devices=4"]), progress=False)
    expected = list(one_node.iterate())[-1].metrics
    with socket.socket() as s:  # a free port for node 0's store
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    nodes = [subprocess.Popen([torchrun, "--nnodes=2", "--nproc-per-node=2", f"--node-rank={n}", "--master-addr=127.0.0.1",
                               f"--master-port={port}", "-m", "pi0lab", "train", "tabletop_ppo_nano", *overrides,
                               f"runner.logger.log_path={tmp_path / 'two'}", "cluster.num_nodes=2",
                               "cluster.num_devices=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for n in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert "iter    1" in outputs[1][0]  # actor rank 3, the logger, is on node 1
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["actor/loss"] == pytest.approx(expected["actor/loss"], rel=1e-4, abs=1e-6)


def test_cli_placement_errors_are_one_line_and_exit_2(capsys):
    from pi0lab.cli import main

    code = main(["train", "tabletop_ppo_nano", "cluster.num_devices=2", "cluster.component_placement={env: 0-2}"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cluster.component_placement" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ data parallel


def _dp_update(rank, plan, store_path, checkpoint, trajectory_path, out_path, data_parallel, offload):
    import torch.distributed as dist

    from pi0lab.runtime.world import World
    from pi0lab.train.roles import build_policy
    from pi0lab.train.update import ActorRole

    torch.set_num_threads(1)
    world = World.join(plan, rank, dist.FileStore(store_path, plan.world_size), torch.device("cpu"))
    cfg = load_config("tabletop_ppo_nano", [f"actor.model.model_path={checkpoint}", "actor.global_batch_size=32",
                                            "actor.micro_batch_size=8", "algorithm.update_epoch=2",
                                            "actor.optim.critic_warmup_steps=0", f"actor.data_parallel={data_parallel}",
                                            f"actor.offload={offload}", *SHAPES["collocated"]])
    torch.manual_seed(cfg.actor.seed)
    policy = build_policy(cfg.actor.model)
    traj, adv = torch.load(trajectory_path, weights_only=False)
    actor = ActorRole(policy, cfg.actor, cfg.algorithm, torch.Generator().manual_seed(5), world)
    metrics = actor.update(traj, adv, iteration=0)
    optimizer = actor.optimizer_state()  # fsdp2: gathered whole onto rank 0
    if rank == 0:
        torch.save((policy.state_dict(), metrics, optimizer), out_path)
    world.close()


@pytest.mark.parametrize("data_parallel, offload", [("ddp", False), ("fsdp2", False), ("ddp", True), ("fsdp2", True)])
def test_two_actor_ranks_update_like_one_on_the_same_rollout(data_parallel, offload, random_nano_checkpoint, single_run,
                                                             tmp_path):
    """DDP (whole copies, summed gradients) and FSDP2 (sharded weights, gradients and AdamW state), with and without
    the training state offloaded to the host, over 2 actor processes take the same steps as one process on the whole
    batch: the same weights, metrics and AdamW moments."""
    from pi0lab.train.roles import build_policy
    from pi0lab.train.rollout import collect_rollout
    from pi0lab.train.update import ActorRole

    cfg = _config(random_nano_checkpoint, tmp_path / "one", "algorithm.update_epoch=2")
    trainer = RLTrainer(cfg, progress=False)
    traj, _ = collect_rollout(trainer.env, trainer.rollout, trainer.max_chunk_steps)
    adv = trainer.advantages(traj)
    trainer.close()
    torch.save((traj, adv), tmp_path / "rollout.pt")

    torch.manual_seed(cfg.actor.seed)
    policy = build_policy(cfg.actor.model)
    one = ActorRole(policy, cfg.actor, cfg.algorithm, torch.Generator().manual_seed(5))
    expected = one.update(traj, adv, iteration=0)

    plan = plan_run(load_config("tabletop_ppo_nano", SHAPES["collocated"] + ["actor.global_batch_size=32",
                                                                            "actor.micro_batch_size=8"]))
    mp.start_processes(_dp_update, args=(plan, str(tmp_path / "store"), random_nano_checkpoint,
                                         tmp_path / "rollout.pt", tmp_path / "two.pt", data_parallel, offload), nprocs=2,
                       start_method="spawn")
    state, metrics, optimizer = torch.load(tmp_path / "two.pt", weights_only=False)
    assert metrics["actor/optimizer_steps"] == expected["actor/optimizer_steps"] > 1
    for name in ("actor/loss", "actor/approx_kl", "actor/grad_norm", "actor/value_loss"):
        # approx_kl ~1e-3 is a mean of (ratio - 1) - log ratio: float32 cancellation leaves ~1e-7 of it
        assert metrics[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)
    names = [name for name, p in policy.named_parameters() if p.requires_grad]
    moments = optimizer["state"] if data_parallel == "ddp" else [optimizer["state"][f"policy.{n}"] for n in names]
    for i, expected_moments in one.optimizer.state_dict()["state"].items():
        torch.testing.assert_close(moments[i]["exp_avg_sq"], expected_moments["exp_avg_sq"], rtol=1e-4, atol=1e-10)


# ------------------------------------------------------------------------------------------ faults


def _idle_worker(plan, rank, pg_store, control_store, report, fault):
    """A stand-in worker: reports, then waits (rank 1 raises when `fault` says so)."""
    report(("started", rank, os.getpid()))
    if fault == "raise" and rank == 1:
        time.sleep(3)  # after every worker has reported
        raise ValueError("rollout blew up on purpose")
    time.sleep(120)


def _supervised(fault):
    plan = plan_run(load_config("tabletop_ppo_nano", SHAPES["disaggregated"]))
    supervisor = Supervisor(plan, _idle_worker, (fault,), hung_after_s=3.0)
    supervisor.start()
    messages = supervisor.messages()
    pids = {}
    while len(pids) < plan.world_size:
        _, rank, pid = next(messages)
        pids[rank] = pid
    return supervisor, messages, pids


def _all_gone(pids, within_s: float = 5.0) -> bool:
    """Whether every pid has ended (and is not a zombie) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = []
        for pid in pids.values():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[-1][0] != "Z":
                        alive.append(pid)
            except FileNotFoundError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("fault, sig, words", [
    ("kill", signal.SIGKILL, "rollout rank 1 .* was killed by SIGKILL"),
    ("stop", signal.SIGSTOP, "rollout rank 1 .* stopped sending heartbeats"),
    ("raise", None, "(?s)rollout rank 1 .* raised:\n.*ValueError: rollout blew up on purpose"),
])
def test_a_failing_worker_ends_every_process_naming_it(fault, sig, words):
    supervisor, messages, pids = _supervised(fault)
    start = time.monotonic()
    if sig is not None:
        os.kill(pids[1], sig)
    with pytest.raises(WorkerFailed, match=words) as failure:
        for _ in messages:
            pass
    took = time.monotonic() - start
    assert _all_gone(pids), "a worker outlived the failure"
    assert took < (3.0 + 10.0 if fault == "stop" else 10.0), f"{fault}: {took:.1f} s"  # slack for a loaded machine
    assert failure.value is not None


def _slow_exit_worker(plan, rank, pg_store, control_store, report, teardown_s):
    """A worker whose work is done at once and whose interpreter then takes `teardown_s` to exit."""
    atexit.register(time.sleep, teardown_s)
    report(("done", rank))


def test_a_worker_that_is_done_is_not_called_hung_while_it_exits():
    """Its heartbeat stops when its work ends; tearing down for longer than the hung limit is not a hang."""
    plan = plan_run(load_config("tabletop_ppo_nano", SHAPES["disaggregated"]))
    supervisor = Supervisor(plan, _slow_exit_worker, (4.0,), hung_after_s=1.0)
    supervisor.start()
    try:
        assert sorted(rank for _, rank in supervisor.messages()) == list(range(plan.world_size))
    finally:
        supervisor.shutdown()
    assert [p.process.exitcode for p in supervisor.procs] == [0] * plan.world_size


def test_killing_a_worker_of_a_real_run_ends_the_run(random_nano_checkpoint, tmp_path):
    cfg = _config(random_nano_checkpoint, tmp_path, *SHAPES["disaggregated"], "runner.max_epochs=50")
    trainer = PlacedTrainer(cfg, progress=False)
    events = trainer.iterate()
    next(events)  # one iteration done: every process is in the loop
    env_proc = trainer.supervisor.procs[0]
    assert env_proc.name == "env rank 0"
    pids = {p.rank: p.process.pid for p in trainer.supervisor.procs}
    start = time.monotonic()
    os.kill(env_proc.process.pid, signal.SIGKILL)
    with pytest.raises(WorkerFailed, match="env rank 0 .* was killed by SIGKILL"):
        for _ in events:
            pass
    assert time.monotonic() - start < 10.0
    assert _all_gone(pids)


def test_ctrl_c_in_the_parent_finishes_the_iteration_checkpoints_and_ends_every_worker(random_nano_checkpoint, tmp_path):
    overrides = [f"actor.model.model_path={random_nano_checkpoint}", f"runner.logger.log_path={tmp_path}",
                 "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=8",
                 "env.train.video_cfg.save_video=false", "runner.max_epochs=100", "runner.val_check_interval=-1",
                 "runner.save_interval=-1", "actor.global_batch_size=32", "actor.micro_batch_size=8",
                 "algorithm.update_epoch=1", *SHAPES["disaggregated"]]
    parent = subprocess.Popen([sys.executable, "-m", "pi0lab", "train", "tabletop_ppo_nano", *overrides],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in parent.stdout:  # the first finished iteration
        if line.startswith("iter"):
            break
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    parent.send_signal(signal.SIGINT)
    rest = parent.communicate(timeout=120)[0]
    assert parent.returncode == 0, rest
    assert "stopping after this iteration" in rest
    stopped_at = int(latest_checkpoint(tmp_path).name.removeprefix("step_"))
    assert 1 <= stopped_at < 100
    assert _all_gone({i: int(pid) for i, pid in enumerate(children)})
