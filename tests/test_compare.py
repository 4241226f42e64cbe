"""Two runs side by side (dashboard/compare.py), on small synthetic store frames."""

import numpy as np
import pandas as pd

from flagcore.dashboard.compare import (
    DIFFERS,
    RunSide,
    criteria_table,
    default_vs,
    equity_pair,
    flat,
    inputs_table,
    options_table,
    summary_lines,
)


def _side(run_id, *, ckpt="aaa", sizing="kelly", base_trades=3, sharpe_defined=True, extra=True):
    opts = [("baseline", "Baseline (plain CE)", 0.01, 0.98, 0.01, base_trades, 0.5, sharpe_defined, 2)]
    if extra:
        opts.append(("opt1_class_weights", "1. Class weights", 0.2, 0.6, 0.2, 80, 1.8, True, 3))
    options = pd.DataFrame(
        opts,
        columns=[
            "option",
            "title",
            "share_sell",
            "share_hold",
            "share_buy",
            "trades",
            "sharpe",
            "sharpe_defined",
            "hifa_passed",
        ],
    )
    hifa = pd.DataFrame(
        [(o[0], "min_trades", float(o[5]), 30.0, ">=", o[5] >= 30, {}) for o in opts],
        columns=["option", "criterion", "value", "threshold", "rule", "passed", "inputs"],
    )
    ts = pd.date_range("2025-01-01", periods=3, freq="h", tz="UTC")
    equity = pd.DataFrame(
        [(o[0], t, 1.0 + i * 0.01) for o in opts for i, t in enumerate(ts)],
        columns=["option", "timestamp", "equity"],
    )
    run = {
        "name": f"run{run_id}",
        "author": "ana",
        "dataset_id": "ddd",
        "train_dataset_id": None,
        "settings": {
            "hold_threshold": 0.95,
            "backtest": {"sizing": sizing, "fee_bps": 4.0},
            "taus": [0.0, 1.0],
        },
    }
    models = pd.DataFrame({"role": ["baseline"], "model_id": [ckpt]})
    return RunSide(run_id, run, models, options, hifa, equity)


def test_the_inputs_mark_what_differs():
    a, b = _side(1), _side(2, ckpt="bbb", sizing="unit")
    t = inputs_table(a, b).set_index("input")
    assert list(t.columns) == ["#1", "#2", DIFFERS]
    assert t.loc["checkpoint sha256 (baseline)", DIFFERS] and t.loc["settings: backtest.sizing", DIFFERS]
    assert t.loc["settings: backtest.sizing", "#2"] == "unit"
    assert not t.loc["test dataset sha256", DIFFERS] and not t.loc["settings: backtest.fee_bps", DIFFERS]
    assert t.loc["training dataset sha256", "#1"] == "none" and t.loc["settings: taus", "#1"] == "0.0, 1.0"
    assert flat({"a": {"b": None}}) == {"a.b": "none"}
    lines = summary_lines(a, b)
    assert lines[0] == "Inputs that differ: checkpoint sha256 (baseline), settings: backtest.sizing."


def test_per_option_differences_in_trades_sharpe_and_criteria():
    a = _side(1, base_trades=3, sharpe_defined=False)
    b = _side(2, base_trades=40, extra=False)
    t = options_table(a, b).set_index("key")
    base = t.loc["baseline"]
    assert (base["trades #1"], base["trades #2"], base["trades change"]) == (3, 40, 37)
    assert np.isnan(base["Sharpe #1"]) and base["Sharpe #2"] == 0.5  # no trades: undefined, not 0
    assert base["HOLD #1"] == 0.98 and base["HIFA #2"] == "2/4"
    assert (
        np.isnan(t.loc["opt1_class_weights", "trades #2"]) and t.loc["opt1_class_weights", "HIFA #2"] == "n/a"
    )
    c = criteria_table(a, b)
    row = c[(c["option"] == "Baseline (plain CE)") & (c["criterion"] == "Trades (independent bets)")].iloc[0]
    assert (row["value #1"], row["result #1"], row["value #2"], row["result #2"]) == (
        "3",
        "FAIL",
        "40",
        "PASS",
    )
    assert row["changed"]
    cpcv = c[(c["option"] == "Baseline (plain CE)") & (c["criterion"] == "CPCV mean Sharpe")].iloc[0]
    assert cpcv["result #1"] == "not judged" and not cpcv["changed"]
    only = c[c["option"] == "1. Class weights"]
    assert set(only["result #2"]) == {"not in run"}
    lines = summary_lines(a, b)
    assert "Only in run #1: 1. Class weights." in lines
    assert lines[-1] == "HIFA criteria passed changed for: no option in both runs."


def test_both_equity_curves_on_one_chart_and_the_default_partner():
    a, b = _side(1), _side(2, extra=False)
    frame, titles = equity_pair(a, b, ["baseline", "opt1_class_weights"])
    assert set(frame["option"]) == {"baseline@1", "baseline@2", "opt1_class_weights@1"}
    assert titles["baseline@2"] == "#2 Baseline (plain CE)" and len(frame) == 9
    runs = pd.DataFrame({"run_id": [4, 3, 2, 1], "model_id": ["x", "y", "y", "z"]})
    assert default_vs(runs, 3, None) == 2  # the newest other run of the same checkpoint
    assert default_vs(runs, 1, None) == 4  # else the newest other run
    assert default_vs(runs, 3, 1) == 1 and default_vs(runs, 3, 3) == 2 and default_vs(runs, 3, 99) == 2
    assert default_vs(runs[runs["run_id"] == 1], 1, None) is None
