"""The gate as the dashboard, the report and ``runs --json`` show it, from synthetic stored rows: the
rule next to each value, why an option cannot pass, both readings of the deflated Sharpe, the minimum
track record and backtest lengths (infinity read back from the store as null), runs stored before the
minimum-trades criterion, and the signal apart from its sizing."""

import json

import numpy as np
import pandas as pd
import pytest

from flagcore.analysis.gate import hifa_verdict
from flagcore.dashboard import gate_views, views
from flagcore.store.codec import from_json, to_json
from flagcore.vocab import CRITERIA

PPY = 8766.0


def _stored(verdicts: dict) -> pd.DataFrame:
    """``hifa_criteria`` rows as ``Store.hifa`` returns them: inputs through the JSON column (infinity
    becomes null), sorted by criterion name as the store's query sorts them."""
    rows = [
        {
            "option": option,
            "criterion": k,
            "value": c.value,
            "threshold": c.threshold,
            "rule": c.rule,
            "passed": c.passed,
            "inputs": from_json(to_json(c.inputs)),
        }
        for option, v in verdicts.items()
        for k, c in v.criteria.items()
    ]
    return pd.DataFrame(rows).sort_values(["option", "criterion"], ignore_index=True)


def _lucky():
    """One 24-bar position chosen with hindsight on 1,755 hourly bars: the issue's example."""
    r = np.zeros(1755)
    r[100:124] = 0.01
    return hifa_verdict(
        cpcv_path_sharpes=[0.14],
        returns=r,
        trades=1,
        n_trials=1,
        trial_sharpes=[0.2],
        permutation_p=0.024,
        periods_per_year=PPY,
    )


def _loser():
    """A losing option among many trials: SR <= SR0, so no track record length would pass."""
    r = np.random.default_rng(0).normal(-1e-4, 1e-3, 2000)
    return hifa_verdict(
        cpcv_path_sharpes=[-0.01],
        returns=r,
        trades=80,
        n_trials=40,
        trial_sharpes=np.random.default_rng(1).normal(0, 0.02, 40),
        permutation_p=0.9,
        periods_per_year=PPY,
    )


def _options(metrics: dict[str, dict], trades: dict[str, int]) -> pd.DataFrame:
    keys = list(metrics)
    return pd.DataFrame(
        {
            "option": keys,
            "title": [f"title of {k}" for k in keys],
            "share_sell": [0.02] * len(keys),
            "share_hold": [0.96] * len(keys),
            "share_buy": [0.02] * len(keys),
            "accuracy": [0.5] * len(keys),
            "balanced_accuracy": [0.4] * len(keys),
            "macro_f1": [0.3] * len(keys),
            "trades": [trades[k] for k in keys],
            "total_return": [0.01] * len(keys),
            "sharpe": [0.5] * len(keys),
            "sharpe_defined": [True] * len(keys),
            "max_drawdown": [-0.02] * len(keys),
            "hifa_passed": [1] * len(keys),
            "metrics": [metrics[k] for k in keys],
        }
    )


def test_stored_criteria_show_the_rule_and_why_the_lucky_position_cannot_pass():
    h = _stored({"lucky": _lucky()})
    table = views.criteria_table(h, "lucky")
    assert list(table["criterion"]) == [c.label for c in CRITERIA]  # gate order, not the store's
    trades = table.iloc[0]
    assert (trades["value"], trades["rule"], trades["result"]) == ("1", "trades >= 30", "FAIL")
    assert trades["why not"].startswith("1 trades, below 30") and "cannot pass" in trades["why not"]
    dsr = table[table["criterion"] == "Deflated Sharpe"].iloc[0]
    assert dsr["rule"] == "DSR probability >= 0.95 and SR - SR0 >= 1 (annualised)"
    p = h[(h["criterion"] == "deflated_sharpe")]["inputs"].iloc[0]["dsr_probability"]
    assert f"DSR probability {p:.3f}" in dsr["value"] and dsr["threshold"] == "1 and 0.95"
    lines = gate_views.why_not_lines(gate_views.stored_criteria(h, "lucky"))
    assert lines[0].startswith("Trades (independent bets): 1 trades, below 30")


def test_a_track_record_no_length_reaches_reads_back_as_never():
    live = _loser()
    assert live["deflated_sharpe"].inputs["min_track_record_bars"] == np.inf
    h = _stored({"loser": live})
    stored = gate_views.stored_criteria(h, "loser")["deflated_sharpe"]
    assert stored.inputs["min_track_record_bars"] is None  # the store writes infinity as null
    for d in (live["deflated_sharpe"], stored):  # live (inf) and stored (null) read the same
        assert gate_views.track_record_text(d.inputs) == "never (SR <= SR0)"
        assert gate_views.backtest_length_text(d.inputs) == "never (SR <= 0)"
        table = gate_views.deflated_table(d).set_index("reading")
        assert table.loc["Minimum track record", "result"] == "unreachable"
        assert table.loc["Minimum track record", "needs"] == "has 2,000 bars (0.23 years)"
        assert table.loc["DSR probability, PSR(SR0)", "result"] == "FAIL"
        js = gate_views.deflated_json(d)
        assert js["min_track_record_bars"] is None and js["min_track_record_reachable"] is False
        assert js["min_backtest_years"] is None and js["min_backtest_reachable"] is False
        json.dumps(js, allow_nan=False)  # valid JSON: no NaN or infinity
    why = gate_views.why_text(stored)
    assert "no track record length would pass" in why and "< 0.95" in why


def test_a_finite_track_record_in_bars_and_years_against_the_sample():
    inputs = {
        "min_track_record_bars": 4100.4,
        "min_track_record_years": 4100.4 / PPY,
        "n_obs": 1755,
        "backtest_years": 1755 / PPY,
        "periods_per_year": PPY,
        "min_backtest_years": 0.35,
    }
    assert gate_views.track_record_text(inputs) == "4,100 bars (0.47 years)"
    assert gate_views.sample_text(inputs) == "1,755 bars (0.20 years)"
    assert gate_views.backtest_length_text(inputs) == "0.35 years"
    # years from the bars and the data's frequency where only the bars were stored
    assert gate_views.track_record_text({"min_track_record_bars": 876.6, "periods_per_year": PPY}) == (
        "877 bars (0.10 years)"
    )
    lucky = gate_views.stored_criteria(_stored({"lucky": _lucky()}), "lucky")["deflated_sharpe"]
    table = gate_views.deflated_table(lucky).set_index("reading")
    bars = lucky.inputs["min_track_record_bars"]
    assert table.loc["Minimum track record", "value"].startswith(f"{bars:,.0f} bars")
    want = "long enough" if bars <= 1755 else "too short"
    assert table.loc["Minimum track record", "result"] == want
    assert table.loc["Minimum backtest length", "value"] == "0.00 years"  # one trial: no selection


def test_a_run_stored_before_min_trades_shows_not_judged():
    h = _stored({"old": _lucky()})
    h = h[h["criterion"] != "min_trades"].copy()
    old_keys = ("sharpe_annual", "sharpe_defined", "sr0_annual", "n_trials", "dsr_probability", "n_obs")
    h["inputs"] = [
        {k: v for k, v in i.items() if k in old_keys} if c == "deflated_sharpe" else i
        for c, i in zip(h["criterion"], h["inputs"], strict=True)
    ]
    results = gate_views.stored_criteria(h, "old")
    assert results["min_trades"] is None
    table = views.criteria_table(h, "old").set_index("criterion")
    assert table.loc["Trades (independent bets)", "why not"] == gate_views.NOT_JUDGED
    assert table.loc["Trades (independent bets)", "result"] == "not judged"
    assert gate_views.passed_count(results) == f"{sum(r.passed for r in results.values() if r)}/3"
    d = results["deflated_sharpe"]
    assert gate_views.track_record_text(d.inputs) == gate_views.NOT_STORED
    readings = gate_views.deflated_table(d).set_index("reading")
    assert readings.loc["DSR probability, PSR(SR0)", "needs"] == "not gated"
    opts = _options({"old": {"action_counts": {"SELL": 3, "HOLD": 90, "BUY": 7}}}, {"old": 1})
    gate = gate_views.gate_table(h, opts).iloc[0]
    assert gate["trades"] == "not judged"  # no run judged it: the header has no rule
    assert gate["min track record"] == gate_views.NOT_STORED
    js = gate_views.deflated_json(d)
    assert js["min_track_record_reachable"] is None and js["probability_passed"] is None
    badges = views.hifa_badges(h, opts).iloc[0]
    assert badges["Trades (independent bets)"] == "not judged"


def test_gate_table_puts_the_rule_in_the_header_and_both_dsr_readings_in_cells():
    h = _stored({"lucky": _lucky(), "loser": _loser()})
    opts = _options({"lucky": {}, "loser": {}}, {"lucky": 1, "loser": 80})
    gate = gate_views.gate_table(h, opts).set_index("option")
    assert list(gate.columns[:5]) == [
        "trades >= 30",
        "CPCV mean Sharpe >= 1.5",
        "SR - SR0 >= 1",
        "DSR probability >= 0.95",
        "permutation p < 0.05",
    ]
    lucky, loser = gate.loc["title of lucky"], gate.loc["title of loser"]
    assert lucky["trades >= 30"] == "FAIL 1" and loser["trades >= 30"] == "PASS 80"
    d = _lucky()["deflated_sharpe"]
    haircut = "PASS" if d.inputs["haircut_passed"] else "FAIL"
    assert lucky["SR - SR0 >= 1"] == f"{haircut} {d.value:.2f}"
    assert lucky["DSR probability >= 0.95"].endswith(f"{d.inputs['dsr_probability']:.3f}")
    assert loser["min track record"] == "never (SR <= SR0)"
    assert lucky["passed"] == f"{_lucky().n_passed}/4"
    assert "Trades (independent bets): 1 trades, below 30" in lucky["why not"]
    assert "trades" not in loser["why not"].split(":")[0].lower()  # 80 trades pass


def test_the_signal_apart_from_its_sizing():
    unit = {"trades": 25, "sharpe": 0.8, "sharpe_defined": True, "total_return": 0.02, "max_drawdown": -0.01}
    sizing = {"signals": 60, "sized_zero": 57, "sized_zero_share": 0.95, "probability": "isotonic"}
    counts = {"SELL": 20, "HOLD": 40, "BUY": 40}
    metrics = {
        "new": {"action_counts": counts, "unit": unit, "sizing": sizing},
        "old": {"action_counts": {"SELL": 1, "HOLD": 97, "BUY": 2}},  # stored before the unit metrics
    }
    opts = _options(metrics, {"new": 3, "old": 0})
    assert gate_views.sizing_text(sizing, "kelly") == "Kelly sized 57 of 60 signals to 0"
    table = gate_views.signal_sizing_table(opts, "kelly").set_index("option")
    new, old = table.loc["title of new"], table.loc["title of old"]
    assert (new["signals"], new["trades"], new["trades (unit)"], new["Sharpe (unit)"]) == (60, 3, 25, 0.8)
    assert new["sized to 0"] == "Kelly sized 57 of 60 signals to 0"
    # the old baseline: 0 trades, but its 3 signals show
    assert old["signals"] == 3 and old["trades"] == 0 and pd.isna(old["trades (unit)"])
    assert old["sized to 0"] == gate_views.NOT_STORED
    assert list(views.options_table(opts)["signals"]) == [60, 3]
    sentence = gate_views.signal_sentence(counts, sizing, "kelly")
    assert sentence.startswith("60 SELL/BUY signals (60.0% of 100 bars); Kelly sized 57 of 60")
    assert "isotonic" in sentence
    rows = gate_views.sizing_rows(opts.iloc[0], unit, "kelly")
    assert list(rows["trades"]) == ["3", "25"] and list(rows["Sharpe"]) == ["0.50", "0.80"]
    assert gate_views.sizing_rows(opts.iloc[1], None, "kelly")["trades"].iloc[1] == gate_views.NOT_STORED


def test_runs_json_option_is_valid_json_with_rules_and_readings():
    from flagcore.cli.runs import _option_json

    h = _stored({"loser": _loser()})
    opts = _options({"loser": {"action_counts": {"SELL": 30, "HOLD": 40, "BUY": 30}}}, {"loser": 80})
    o = _option_json(opts.iloc[0], h)
    text = json.dumps(o, allow_nan=False)
    assert json.loads(text)["hifa"]["min_trades"] == {
        "judged": True,
        "value": 80.0,
        "threshold": 30.0,
        "rule": ">=",
        "rule_text": "trades >= 30",
        "passed": True,
        "why": None,
    }
    assert o["signals"] == 60 and o["min_track_record_reachable"] is False and o["unit"] is None
    assert o["hifa"]["permutation_p"]["why"] == "0.9 is not < 0.05"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), np.float64("-inf")])
def test_emit_writes_valid_json(value, capsys):
    from flagcore.cli.output import emit

    emit({"a": value, "b": [1.5, value], "c": np.arange(2)}, True, [])
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [1.5, None], "c": [0, 1]}
