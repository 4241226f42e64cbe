import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from flagcore.cli import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_every_command_is_listed():
    assert {
        "info",
        "import",
        "check-data",
        "predict",
        "init",
        "market",
        "features",
        "train",
        "walk-forward",
        "train-cgdt",
        "diagnose",
    } <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: flagcore " + command in capsys.readouterr().out


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info"])  # needs --preset or --checkpoint
    assert e.value.code == 2


def test_the_console_script_names_the_command():
    import tomllib
    from pathlib import Path

    import flagcore.cli
    from flagcore.cli.command import main as command_main
    from flagcore.cli.command import run as command_run

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["flagcore"] == "flagcore.cli:run"
    assert command_main is main and flagcore.cli.main is main and flagcore.cli.run is command_run


def test_shared_options_keep_their_defaults():
    sub = build_parser()._subparsers._group_actions[0].choices
    evaluate = sub["evaluate"].parse_args(["--checkpoint", "c", "--data", "d"])
    validate = sub["validate"].parse_args([])
    assert (evaluate.workers, evaluate.task_cpus, evaluate.ray_address, evaluate.store) == (1, 1, None, None)
    assert (validate.workers, validate.task_cpus, validate.quiet, validate.json) == (2, 1, False, False)
    assert sub["predict"].parse_args(["--checkpoint", "c", "--data", "d", "--out", "o"]).device is None


def test_info_full_preset_in_a_real_process():
    r = subprocess.run(
        [sys.executable, "-m", "flagcore", "info", "--preset", "full", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["total_params"], info["trainable_params"]) == (87955971, 2938371)
    assert info["config"]["d_model"] == 768 and info["config"]["lora_rank"] == 16


def test_unexpected_errors_are_one_line_naming_where_they_were_raised(monkeypatch, capsys):
    """An error deep in a module names that module and function (the innermost frame), not the CLI."""
    import flagcore.models.flag_trader as flag_trader

    # a network whose config has no heads: describe() divides d_model by num_heads
    config = SimpleNamespace(to_dict=dict, lora_scaling=1.0, d_model=64, num_heads=0)
    headless = SimpleNamespace(config=config)
    monkeypatch.setattr(flag_trader, "base_network", lambda model: headless)
    monkeypatch.delenv("FLAGCORE_DEBUG", raising=False)
    assert main(["info", "--preset", "demo"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error: ZeroDivisionError" in err
    assert "(in describe at flagcore/models/flag_trader.py:" in err, err
    assert "cli" not in err, err


def test_an_error_outside_flagcore_also_names_our_caller():
    """When the innermost frame is a library's, the line adds the flagcore frame that called it."""
    import json

    from flagcore.cli.command import internal_error_line
    from flagcore.store.codec import from_json

    with pytest.raises(json.JSONDecodeError) as e:
        from_json("{bad")  # json's pure-Python decoder raises
    line = internal_error_line(e.value)
    assert line.startswith("flagcore: internal error: JSONDecodeError: ")
    assert (
        "in raw_decode at decoder.py:" in line
        and ", called from from_json at flagcore/store/codec.py:" in line
    )


def test_evaluate_records_the_author_outside_the_request_key(tmp_path, monkeypatch):
    """--author (default the OS user) goes with the run, not into its settings or request key; the
    team config's [hifa] gives the thresholds when --criteria is absent."""
    from flagcore.cli.runs import os_user, settings

    monkeypatch.delenv("FLAGCORE_CONFIG", raising=False)
    sub = build_parser()._subparsers._group_actions[0].choices
    args = sub["evaluate"].parse_args(["--checkpoint", "c", "--data", "d", "--author", " ann "])
    s = settings(args)
    assert s.author == "ann" and "author" not in s.to_dict()
    default = settings(sub["evaluate"].parse_args(["--checkpoint", "c", "--data", "d"]))
    assert default.author == os_user() and default.to_dict() == s.to_dict()
    cfg = tmp_path / "team.toml"
    cfg.write_text("[hifa]\nmin_trades = 12\n[review]\napprovals_required = 1\n")
    team = settings(sub["evaluate"].parse_args(["--checkpoint", "c", "--data", "d", "--config", str(cfg)]))
    assert (
        team.criteria["min_trades"] == 12
        and team.criteria["permutation_p_max"] == s.criteria["permutation_p_max"]
    )


def test_runs_json_has_each_runs_status_and_author_and_review_stores_typed(tmp_path, capsys):
    from flagcore.store.runs import RunRows
    from flagcore.store.store import Store

    path = tmp_path / "s.duckdb"
    rows = RunRows("r", "k", "0", "m", "d", None, {}, {}, [], [], {}, author="carl")
    rid = Store(path).write_run(rows)
    assert (
        main(["review", "--store", str(path), "--run", str(rid), "--reviewer", "ann", "--verdict", "approve"])
        == 0
    )
    assert "approve by ann, a typed name (unverified)" in capsys.readouterr().out
    assert Store(path).reviews(rid)["identity_source"].tolist() == ["typed"]
    assert main(["runs", "--store", str(path), "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["author"] == "carl" and run["status"]["status"] == "awaiting review"
    assert run["status"]["approvals"] == 1 and run["status"]["unverified_approvers"] == ["ann"]
    cfg = tmp_path / "team.toml"
    cfg.write_text("[review]\napprovals_required = 1\n")
    assert main(["runs", "--store", str(path), "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert f"run {rid}: r (" in text and ") by carl," in text
    assert "  status: approved (1 of 1 approvals: ann (unverified))" in text
