"""`pi0lab tune`: a headless study whose second call adds trials; bad input is one line and exit 2."""

import pytest
from lab_tiny import tiny_overrides

from pi0lab.cli import main


def test_a_second_call_adds_trials_to_the_same_study(random_nano_checkpoint, tmp_path, capsys):
    args = ["tune", "tabletop_ppo_nano", *tiny_overrides(random_nano_checkpoint, iterations=1), "--trials", "1",
            "--study", "cli", "--storage", f"sqlite:///{tmp_path}/cli.db", "--search", "actor.optim.lr=log:1e-6:1e-4",
            "--search", "actor.model.openpi.noise_method=choice:flow_sde", "--pruner", "none"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "study 'cli'" in first and ": 1 trials" in first and "params_actor.optim.lr" in first
    assert main(args) == 0
    table = capsys.readouterr().out.split(": 2 trials\n")[1].splitlines()
    assert table[0].split()[:3] == ["number", "state", "value"]
    assert [row.split()[:2] for row in table[1:]] == [["0", "COMPLETE"], ["1", "COMPLETE"]]
    assert (tmp_path / "cli" / "trial_0001" / "metrics.jsonl").is_file()


def test_processes_share_the_trials_of_one_study(random_nano_checkpoint, tmp_path, capsys):
    assert main(["tune", "tabletop_ppo_nano", *tiny_overrides(random_nano_checkpoint, iterations=1), "--trials", "3",
                 "--processes", "2", "--study", "par", "--storage", f"sqlite:///{tmp_path}/par.db",
                 "--search", "actor.optim.lr=log:1e-6:1e-4", "--pruner", "none"]) == 0
    out = capsys.readouterr().out
    assert "2 worker processes" in out and ": 3 trials" in out
    table = out.split(": 3 trials\n")[1].splitlines()
    assert [row.split()[:2] for row in table[1:]] == [["0", "COMPLETE"], ["1", "COMPLETE"], ["2", "COMPLETE"]]
    logs = sorted((tmp_path / "par" / "workers").glob("*.log"))
    assert [sum("COMPLETE" in line for line in log.read_text().splitlines()) for log in logs] == [2, 1]


@pytest.mark.parametrize("extra, message", [
    (["--search", "actor.optim.lrr=log:1e-6:1e-4"], "unknown config key 'actor.optim.lrr' (did you mean 'lr'?)"),
    (["--search", "actor.optim.lr=log:1e-6"], "actor.optim.lr=log:1e-6: log takes two bounds"),
    (["--search", "algorithm.update_epoch=float:1:4"], "algorithm.update_epoch must be an integer"),
    ([], "nothing to search"),
    (["--trials", "0", "--search", "actor.optim.lr"], "--trials must be >= 1"),
    (["--processes", "0", "--search", "actor.optim.lr"], "--processes must be >= 1"),
    (["--search", "actor.optim.lr"], "actor.model.model_path=/nonexistent does not exist"),  # seen as the trial starts
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys, extra, message):
    trials = [] if "--trials" in extra else ["--trials", "1"]
    code = main(["tune", "tabletop_ppo_nano", "actor.model.model_path=/nonexistent", *trials,
                 "--storage", f"sqlite:///{tmp_path}/bad.db", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("pi0lab tune: error: ") and message in err


def test_an_unknown_pruner_is_an_argparse_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "tabletop_ppo_nano", "--trials", "1", "--pruner", "fast", "--search", "actor.optim.lr"])
    assert exit_info.value.code == 2
