import json
import subprocess
import sys

import pytest

from flagcore.cli.main import build_parser, main

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def test_every_command_is_listed():
    assert {"info", "import", "check-data", "predict", "init", "market", "features", "train", "walk-forward",
            "train-cgdt", "diagnose"} <= set(COMMANDS)


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


def test_info_full_preset_in_a_real_process():
    r = subprocess.run([sys.executable, "-m", "flagcore", "info", "--preset", "full", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["total_params"], info["trainable_params"]) == (87955971, 2938371)
    assert info["config"]["d_model"] == 768 and info["config"]["lora_rank"] == 16


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    import flagcore.cli.main as cli

    def boom(args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(cli, "cmd_info", boom)
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=boom)
    assert main(["info", "--preset", "demo"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error: ZeroDivisionError" in err
