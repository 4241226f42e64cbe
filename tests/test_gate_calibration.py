"""The gate's calibration harness (benchmarks/gate_calibration.py), small and deterministic.

The full calibration trains the demo's models and runs hundreds of markets (minutes); here the
pipeline's own run (``compute_run``) is fed synthetic logits instead of trained models' inference:
standard normal noise, which carries no information about the market, or noise plus a planted edge
on each bar's label logit. Three noise markets must not pass; a market whose every model sees a
strong planted edge must.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binomtest

from flagcore.analysis.gate import CriterionResult, HifaVerdict
from flagcore.errors import FlagcoreError
from flagcore.vocab import CRITERIA, LABELS_OPTION

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:  # the harness's modules live in benchmarks/
    sys.path.insert(0, str(ROOT / "benchmarks"))

import gate_calibration as gc  # noqa: E402
import gate_calibration_judge as judge  # noqa: E402
import gate_calibration_report as report  # noqa: E402

# every model a run of the calibration has: the six training losses' roles and the CGDT partner
ROLES = (
    "baseline",
    "opt1_class_weights",
    "opt2_focal",
    "logit_adjusted_loss",
    "oversample",
    "multitask",
    "cgdt",
)
SEED = 7


def synthetic(seed: int, edge: float):
    """``logits_for`` of ``evaluate_market``: every model's logits drawn from ``seed``, with ``edge``."""

    def logits_for(test, train):
        rng = np.random.default_rng(seed)
        te, tr = test.labels[test.eval_index :], train.labels[train.eval_index :]
        return (
            {r: judge.synthetic_logits(te.size, rng, te, edge) for r in ROLES},
            {r: judge.synthetic_logits(tr.size, rng, tr, edge) for r in ROLES},
        )

    return logits_for


@pytest.fixture(scope="module")
def markets(tmp_path_factory):
    """One training market and four test markets, all noise (strength 0), from fixed seeds."""
    d = tmp_path_factory.mktemp("gate-calibration")
    train_p, _ = gc.build_market(gc.market_seed(SEED, gc.TRAINING_MARKET, 0), 0.0, d / "train")
    tests = [gc.build_market(gc.market_seed(SEED, gc.NOISE, i), 0.0, d / f"m{i}")[1] for i in range(4)]
    return train_p, tests


def test_noise_markets_do_not_pass_and_a_planted_edge_does(markets):
    train_p, tests = markets
    noise = []
    for i, test_p in enumerate(tests[:3]):
        run = judge.evaluate_market(test_p, train_p, synthetic(i, 0.0))
        noise.append(judge.judge_run(run, i, 0.0).to_dict())
        assert run.summary["n_trials"] > len(ROLES)  # the sweeps' values count as trials too
    s = report.summarise(noise)
    assert s["passed"] == 0, s["passing_options"]
    assert s["ci95"] == list(report.clopper_pearson(0, 3))
    # noise passes some criteria on its own (trades are plenty); the gate as a whole stops it
    assert s["criterion_markets"]["min_trades"] == 3

    # every model sees each bar's label (the triple-barrier outcome ahead) with logit +3: a strong edge
    run = judge.evaluate_market(tests[3], train_p, synthetic(3, 3.0))
    edge = judge.judge_run(run, 3, 0.0)
    assert edge.passed
    assert "baseline" in edge.passing and LABELS_OPTION not in edge.passing
    assert all(edge.criterion_any.values())


def _verdict(passed: dict[str, bool], haircut: bool = True, probability: bool = True) -> HifaVerdict:
    out = {}
    for c in CRITERIA:
        inputs = (
            {"haircut_passed": haircut, "probability_passed": probability}
            if c.key == "deflated_sharpe"
            else {}
        )
        out[c.key] = CriterionResult(c.key, 0.0, 0.0, c.rule, passed[c.key], inputs)
    return HifaVerdict(out)


def test_judge_run_counts_candidates_only_and_finds_the_criterion_that_blocked():
    every = {c.key: True for c in CRITERIA}
    no_dsr = {**every, "deflated_sharpe": False}
    no_dsr_no_perm = {**no_dsr, "permutation_p": False}
    options = {
        LABELS_OPTION: {"hifa": _verdict(every)},  # perfect foresight passes, but is not a candidate
        "baseline": {"hifa": _verdict(no_dsr, haircut=True, probability=False)},
        "opt3_threshold": {"hifa": _verdict(no_dsr_no_perm, haircut=False, probability=False)},
    }
    run = SimpleNamespace(options=options, summary={"options_passing_hifa": [], "n_trials": 30})
    o = judge.judge_run(run, 1, 0.0)
    assert not o.passed and o.passing == [] and o.n_candidates == 2
    assert o.blocked_only_by == {
        "min_trades": False,
        "cpcv_mean_sharpe": False,
        "deflated_sharpe": True,
        "permutation_p": False,
    }
    assert o.criterion_options["permutation_p"] == 1 and o.criterion_options["min_trades"] == 2
    assert o.criterion_any["dsr_haircut"] and not o.criterion_any["dsr_probability"]

    options["baseline"] = {"hifa": _verdict(every)}
    with pytest.raises(AssertionError, match="differ"):  # the run's own list must agree
        judge.judge_run(run, 1, 0.0)
    run.summary["options_passing_hifa"] = ["baseline"]
    assert judge.judge_run(run, 1, 0.0).passing == ["baseline"]


@pytest.mark.parametrize("k,n", [(0, 200), (1, 200), (7, 50), (50, 50), (3, 10)])
def test_clopper_pearson_is_the_exact_interval(k, n):
    lo, hi = report.clopper_pearson(k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)


def test_clopper_pearson_refuses_impossible_counts():
    with pytest.raises(FlagcoreError, match="k must"):
        report.clopper_pearson(5, 4)
    with pytest.raises(FlagcoreError, match="n must"):
        report.clopper_pearson(0, 0)


def test_market_seeds_are_fixed_and_distinct():
    seeds = {gc.market_seed(0, g, i) for g in (gc.NOISE, gc.EDGE, gc.TRAINING_MARKET) for i in range(1000)}
    assert len(seeds) == 3000
    assert gc.market_seed(0, gc.NOISE, 5) == gc.market_seed(0, gc.NOISE, 5)
    assert gc.market_seed(0, gc.NOISE, 5) != gc.market_seed(1, gc.NOISE, 5)


def _fake_result(passed: int, markets: int) -> dict:
    keys = judge.criteria_keys()
    gate = [c.key for c in CRITERIA]
    outs = [
        {
            "passed": i < passed,
            "passing": ["baseline"] if i < passed else [],
            "n_trials": 40,
            "n_candidates": 11,
            "criterion_any": dict.fromkeys(keys, True),
            "criterion_options": dict.fromkeys(keys, 3),
            "blocked_only_by": dict.fromkeys(gate, False),
            "seconds": {"total": 10.0},
        }
        for i in range(markets)
    ]
    s = report.summarise(outs)
    return {
        "noise": {"summary": s, "wall_seconds": 50.0},
        "power": {"4": {"summary": report.summarise(outs[:2])}},
        "target_upper": gc.TARGET_UPPER,
        "target_met": s["ci95"][1] <= gc.TARGET_UPPER,
        "model_sets": {"0": {"seconds": 60.0}, "4": {"seconds": 61.0}},
        "meta": {
            "command": "python benchmarks/gate_calibration.py --markets 10",
            "date": "today",
            "workers": 2,
        },
    }


def test_the_section_is_appended_once_then_replaced_in_place(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nother figures\n")
    report.write_section(report.calibration_markdown(_fake_result(1, 10)), md)
    first = md.read_text()
    assert first.startswith("# Benchmarks\n\nother figures\n") and first.count(report.START_MARK) == 1
    assert "| 10 noise | 0 | 1 | 10.0% |" in first and "**NOT met**" in first

    md.write_text(first + "\n## After\n")
    report.write_section(report.calibration_markdown(_fake_result(0, 10)), md)
    second = md.read_text()
    assert second.count(report.START_MARK) == 1 and second.count(report.END_MARK) == 1
    assert "| 10 noise | 0 | 0 | 0.0% |" in second and "| 10 noise | 0 | 1 |" not in second
    assert second.startswith("# Benchmarks\n\nother figures\n") and second.endswith("\n## After\n")
