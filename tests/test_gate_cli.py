"""``flagcore validate --gate``: the exit code is the HIFA decision; the table says how far each option
is from passing; ``--criteria`` re-judges the stored values, min trades and both DSR readings included.

The runs here are written straight into a store from verdicts computed on synthetic returns: no
demo, no model."""

import json

import numpy as np
import pandas as pd
import pytest

from flagcore.analysis.gate import DEFAULT_CRITERIA, hifa_verdict
from flagcore.cli import main
from flagcore.store.codec import to_json
from flagcore.store.runs import RunRows
from flagcore.store.store import Store

PPY = 8766.0
T = 2000


def _verdict(mean: float, trades: int, p: float, seed: int, criteria: dict):
    r = np.random.default_rng(seed).normal(mean, 0.01, T)
    return hifa_verdict(
        cpcv_path_sharpes=[mean / 0.01] * 5,
        returns=r,
        trades=trades,
        n_trials=3,
        trial_sharpes=[0.0, 0.05, mean / 0.01],
        permutation_p=p,
        periods_per_year=PPY,
        criteria=criteria,
    )


# option -> (mean return per bar, trades, permutation p): a strong edge with many trades, a strong
# edge from a handful of trades, no edge, and the perfect-foresight labels (never a candidate)
STRONG = {
    "opt3_threshold": (0.003, 120, 0.001),
    "opt4_ensemble": (0.003, 12, 0.001),
    "baseline": (0.0, 80, 0.6),
    "opt5_labels": (0.004, 300, 0.0001),
}


def write_synthetic_run(
    path, options: dict, *, old: bool = False, settings: dict | None = None, summary: dict | None = None
) -> int:
    """A run with ``options``' verdicts stored as the pipeline stores them. ``old``: as stored before
    the minimum-trades criterion and the DSR probability bar existed (no min_trades row, no
    ``min_trades`` / ``dsr_probability_min`` in the run's criteria). ``settings`` and ``summary``
    add to the run's own."""
    crit = dict(DEFAULT_CRITERIA)
    res, hifa = [], []
    for i, (option, (mean, trades, p)) in enumerate(options.items()):
        v = _verdict(mean, trades, p, i, crit)
        res.append(
            {"option": option, "ordinal": i, "title": option.title(), "trades": trades, "metrics": "{}"}
        )
        for c, cr in v.criteria.items():
            if old and c == "min_trades":
                continue
            hifa.append(
                {
                    "option": option,
                    "criterion": c,
                    "value": cr.value,
                    "threshold": cr.threshold,
                    "rule": cr.rule,
                    "passed": bool(cr.passed),
                    "inputs": to_json(cr.inputs),
                }
            )
    if old:
        crit = {k: v for k, v in crit.items() if k not in ("min_trades", "dsr_probability_min")}
    rows = RunRows(
        name="tiny",
        request_key="k",
        flagcore_version="0",
        model_id="m",
        dataset_id="d",
        train_dataset_id=None,
        settings={"criteria": crit, **(settings or {})},
        summary={"n_trials": 3, **(summary or {})},
        datasets=[],
        models=[],
        tables={
            "option_results": pd.DataFrame(res),
            "hifa_criteria": pd.DataFrame(hifa),
            "cpcv_paths": pd.DataFrame(
                [
                    {"option": o, "mode": "post-hoc", "path": k, "sharpe": 1.0}
                    for o in options
                    for k in range(5)
                ]
            ),
        },
    )
    return Store(path).write_run(rows)


def _validate(capsys, path, rid, *extra):
    rc = main(["validate", "--store", str(path), "--run", str(rid), *extra])
    return rc, capsys.readouterr()


def test_the_gate_passes_when_a_candidate_passes_every_criterion(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    rc, out = _validate(capsys, path, rid, "--gate", "--json")
    assert rc == 0, out.err
    data = json.loads(out.out)
    assert data["gate"] == {
        "passed": True,
        "passing_options": ["opt3_threshold"],
        "exit_code": 0,
        "message": "HIFA passed: opt3_threshold passes every criterion",
    }
    opts = {o["option"]: o for o in data["criteria"]["options"]}
    # a strong Sharpe from 12 trades fails on the trades alone, and says so
    few = opts["opt4_ensemble"]["criteria"]
    assert not opts["opt4_ensemble"]["passed_all"] and not few["min_trades"]["passed"]
    assert few["cpcv_mean_sharpe"]["passed"] and few["deflated_sharpe"]["passed"]
    assert few["min_trades"]["rule_text"] == "trades >= 30" and "cannot pass" in few["min_trades"]["why_not"]
    assert opts["opt5_labels"]["passed_all"] and not opts["opt5_labels"]["candidate"]
    # text: the gate line with its code after the table
    rc, out = _validate(capsys, path, rid, "--gate")
    assert rc == 0 and out.out.rstrip().endswith("(exit code 0)")
    assert "PASS  (an upper bound, not a candidate)" in out.out


def test_the_gate_fails_with_its_own_exit_code(tmp_path, capsys):
    from flagcore.pipeline.validate import GATE_FAILED

    path = tmp_path / "s.duckdb"
    # only the labels pass: the upper bound is not a candidate, so the gate fails
    rid = write_synthetic_run(path, {k: STRONG[k] for k in ("opt4_ensemble", "baseline", "opt5_labels")})
    rc, out = _validate(capsys, path, rid, "--gate", "--json")
    assert rc == GATE_FAILED == 4
    assert json.loads(out.out)["gate"] == {
        "passed": False,
        "passing_options": [],
        "exit_code": 4,
        "message": "HIFA failed: no candidate option passes every criterion",
    }
    rc, out = _validate(capsys, path, rid, "--gate")
    assert (
        rc == 4 and "gate: HIFA failed: no candidate option passes every criterion (exit code 4)" in out.out
    )
    # without --gate the verdicts do not set the exit code, and the JSON has no gate
    rc, out = _validate(capsys, path, rid, "--json")
    assert rc == 0 and "gate" not in json.loads(out.out)
    # errors keep the CLI's code 1
    rc, out = _validate(capsys, path, rid + 7, "--gate")
    assert rc == 1 and f"no run {rid + 7}" in out.err


def test_gate_decision_counts_candidates_only():
    from flagcore.errors import FlagcoreError
    from flagcore.pipeline.validate import gate_decision

    d = gate_decision(
        {
            "options": [
                {"option": "opt5_labels", "passed_all": True},
                {"option": "baseline", "passed_all": False},
                {"option": "logit_adjust", "passed_all": True},
            ]
        }
    )
    assert (d.passed, d.passing_options, d.candidates, d.exit_code) == (
        True,
        ["logit_adjust"],
        ["baseline", "logit_adjust"],
        0,
    )
    assert gate_decision({"options": []}).exit_code == 4  # nothing to pass: failed
    with pytest.raises(FlagcoreError, match="no options"):
        gate_decision({})


def test_the_help_documents_the_gate_exit_codes(capsys):
    from flagcore.pipeline.validate import GATE_FAILED, GATE_PASSED

    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    text = capsys.readouterr().out
    assert f"  {GATE_PASSED}  HIFA passed" in text and f"  {GATE_FAILED}  HIFA failed" in text
    assert "3 internal error" in text  # 4, not 3: 3 is the CLI's internal error (cli.command)


def test_validate_shows_how_far_each_option_is_from_passing(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)
    rc, out = _validate(capsys, path, rid, "--json")
    opts = {o["option"]: o for o in json.loads(out.out)["criteria"]["options"]}
    d = opts["opt3_threshold"]["distance"]
    assert (d["trades"], d["min_trades"], d["dsr_probability_min"], d["haircut_min"]) == (120, 30, 0.95, 1.0)
    assert d["dsr_probability"] > 0.95 and d["haircut"] > 1.0 and d["n_obs"] == T
    assert 0 < d["min_track_record_bars"] < T and d["min_track_record_years"] == pytest.approx(
        d["min_track_record_bars"] / PPY
    )
    assert d["backtest_years"] == pytest.approx(T / PPY) and d["min_backtest_years"] > 0
    # no edge: no track record length reaches the bar ("never"), the backtest length neither
    flat = opts["baseline"]["distance"]
    if flat["haircut"] <= 0:
        assert flat["min_track_record_bars"] is None and flat["min_track_record_years"] is None
    rule = opts["opt3_threshold"]["criteria"]["deflated_sharpe"]["rule_text"]
    assert rule == "DSR probability >= 0.95 and SR - SR0 >= 1 (annualised)"
    rc, out = _validate(capsys, path, rid)
    text = out.out
    assert "trades 12 vs 30 (trades >= 30)" in text
    assert f"vs 0.95, SR - SR0 {d['haircut']:.2f} vs 1 ({rule})" in text
    assert f"min track record {d['min_track_record_bars']:,.0f} bars" in text and f"has {T:,} bars" in text
    assert f"vs {T / PPY:,.2f} years backtested" in text


def test_validate_shows_never_for_an_infinite_track_record(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, {"baseline": (-0.001, 80, 0.9)})
    rc, out = _validate(capsys, path, rid, "--json")
    d = json.loads(out.out)["criteria"]["options"][0]["distance"]
    assert d["min_track_record_bars"] is None and d["min_backtest_years"] is None
    rc, out = _validate(capsys, path, rid)
    assert "min track record never (the Sharpe does not exceed SR0)" in out.out
    assert "min backtest length never for 3 trials" in out.out


def test_criteria_rejudge_min_trades_and_both_deflated_readings(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, STRONG)

    def judged(toml: str):
        f = tmp_path / "c.toml"
        f.write_text("[hifa]\n" + toml)
        rc, out = _validate(capsys, path, rid, "--criteria", str(f), "--gate", "--json")
        data = json.loads(out.out)
        return rc, {o["option"]: o for o in data["criteria"]["options"]}, data

    # fewer trades needed: the 12-trade option now passes too
    rc, opts, data = judged("min_trades = 10\n")
    assert rc == 0 and data["gate"]["passing_options"] == ["opt3_threshold", "opt4_ensemble"]
    assert opts["opt4_ensemble"]["criteria"]["min_trades"]["threshold"] == 10
    # more trades needed than any candidate made: the gate fails
    rc, opts, _ = judged("min_trades = 500\n")
    assert rc == 4 and not opts["opt3_threshold"]["criteria"]["min_trades"]["passed"]
    # the DSR probability bar above what the option reached: the haircut passes, the probability fails
    p = opts["opt3_threshold"]["dsr_probability"]
    rc, opts, _ = judged(f"dsr_probability_min = {min(p + (1 - p) / 2, 0.999999999)}\n")
    ds = opts["opt3_threshold"]["criteria"]["deflated_sharpe"]
    assert rc == 4 and not ds["passed"]
    assert ds["inputs"]["haircut_passed"] and not ds["inputs"]["probability_passed"]
    assert "DSR probability" in ds["why_not"] and "SR - SR0" not in ds["why_not"]
    # a stricter probability bar needs a longer track record
    before = _validate(capsys, path, rid, "--json")[1]
    base = {o["option"]: o for o in json.loads(before.out)["criteria"]["options"]}
    assert (
        opts["opt3_threshold"]["distance"]["min_track_record_bars"]
        > base["opt3_threshold"]["distance"]["min_track_record_bars"]
    )
    # no probability bar: every option clears that reading and needs no track record
    rc, opts, _ = judged("dsr_probability_min = 0\n")
    assert all(o["criteria"]["deflated_sharpe"]["inputs"]["probability_passed"] for o in opts.values())
    assert opts["baseline"]["distance"]["min_track_record_bars"] == 0
    # the haircut bar above the option's haircut: the probability passes, the haircut fails
    rc, opts, _ = judged(f"deflated_sharpe_min = {ds['value'] + 1}\n")
    ds = opts["opt3_threshold"]["criteria"]["deflated_sharpe"]
    assert rc == 4 and not ds["inputs"]["haircut_passed"] and ds["inputs"]["probability_passed"]


def test_a_run_stored_before_min_trades_is_judged_on_its_trades(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    rid = write_synthetic_run(path, {k: STRONG[k] for k in ("opt4_ensemble", "baseline")}, old=True)
    rc, out = _validate(capsys, path, rid, "--gate", "--json")
    data = json.loads(out.out)
    assert rc == 4 and data["criteria"]["defaults_added"] == ["min_trades", "dsr_probability_min"]
    few = data["criteria"]["options"][0]
    assert few["option"] == "opt4_ensemble" and list(few["criteria"]) == [
        "min_trades",
        "cpcv_mean_sharpe",
        "deflated_sharpe",
        "permutation_p",
    ]
    assert few["criteria"]["min_trades"]["value"] == 12 and not few["criteria"]["min_trades"]["passed"]
    f = tmp_path / "c.toml"
    f.write_text("[hifa]\nmin_trades = 10\n")
    rc, out = _validate(capsys, path, rid, "--gate", "--criteria", str(f))
    assert rc == 0 and "HIFA passed: opt4_ensemble" in out.out
    assert "the run stored no dsr_probability_min" in out.out


@pytest.mark.slow
def test_the_gate_on_the_quick_demo_matches_its_table(quick_demo, capsys):
    """The demo's own numbers change with its settings: the gate must agree with its table, whatever
    they are."""
    from flagcore.vocab import NOT_A_TRIAL

    st = str(quick_demo["store"].path)
    rc = main(["validate", "--store", st, "--run", str(quick_demo["run_id"]), "--gate", "--json"])
    data = json.loads(capsys.readouterr().out)
    passing = [
        o["option"] for o in data["criteria"]["options"] if o["passed_all"] and o["option"] not in NOT_A_TRIAL
    ]
    assert data["gate"]["passing_options"] == passing and data["gate"]["passed"] == bool(passing)
    assert rc == data["gate"]["exit_code"] == (0 if passing else 4)
    for o in data["criteria"]["options"]:
        assert list(o["criteria"])[0] == "min_trades"
        assert {"trades", "dsr_probability", "min_track_record_bars", "min_backtest_years"} <= set(
            o["distance"]
        )
