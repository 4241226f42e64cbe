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

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["flagcore"] == "flagcore.cli:main"
    assert command_main is main and flagcore.cli.main is main


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
