"""Root cause of a collapse (analysis.root_cause, root_cause_measures): each rule on synthetic logits
whose cause is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flagcore.analysis.root_cause import Evidence, fill_removes_collapse, root_cause_verdicts
from flagcore.analysis.root_cause_measures import attribution_summary, outcome, prior_check, sensitivity
from flagcore.errors import FlagcoreError
from flagcore.vocab import CAUSE_VERDICTS, ROOT_CAUSES

N = 400
PPY = 8760.0
PI = np.array([0.2, 0.61, 0.19])  # the seed's HOLD-dominated label prior


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def close(rng):
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, N)))


def verdicts(ev: Evidence) -> dict[str, str]:
    out = root_cause_verdicts(ev)
    assert [v.cause for v in out] == list(ROOT_CAUSES)
    assert all(v.verdict in CAUSE_VERDICTS and v.title == ROOT_CAUSES[v.cause] for v in out)
    return {v.cause: v.verdict for v in out}


def constant(row, rng, noise):
    return np.asarray(row, dtype=np.float64) + rng.normal(0.0, noise, (N, 3))


def balanced(rng, scale=1.0):
    return rng.normal(0.0, scale, (N, 3))


def test_prior_only_model_names_the_prior_and_nothing_else(rng, close):
    x = constant(np.log(PI), rng, 1e-3)  # softmax = the prior on every bar
    same = outcome(constant(np.log(PI), rng, 1e-3), close, PPY)  # fills that change nothing
    ev = Evidence(
        test=outcome(x, close, PPY),
        prior=prior_check(x, PI),
        padding_median=same,
        padding_resample=same,
        shift=same,
        shifted_inputs=["vol_20"],
        sensitivity=sensitivity(x, x + rng.normal(0, 1e-4, x.shape), np.log(PI)),
        in_sample=outcome(constant(np.log(PI), rng, 1e-3), close, PPY),
        has_padding=True,
    )
    v = verdicts(ev)
    assert v == {
        "prior": "supported",
        "padding": "not supported",
        "shift": "not supported",
        "input_blind": "not supported",  # it ignores its inputs, but the prior is why
        "overconfidence": "not supported",  # confidence = the 61% prior share
    }
    pc = ev.prior
    assert pc is not None
    assert pc.mean_gaps["SELL"] == pytest.approx(np.log(0.61 / 0.2), abs=0.01)
    assert pc.margin_explained == pytest.approx(1.0, abs=0.01)
    assert pc.mean_probs == pytest.approx(PI.tolist(), abs=0.01)
    assert pc.mean_confidence == pytest.approx(0.61, abs=0.01)
    prior = root_cause_verdicts(ev)[0]
    assert "0.5 nats" in prior.rule and "in sample" in prior.rule and not prior.missing


def test_padding_driven_collapse_is_removed_by_the_fill(rng, close):
    before = constant([0.0, 2.5, 0.0], rng, 0.3)  # HOLD everywhere, gap 2.5 nats: not the prior's 1.1
    test = outcome(before, close, PPY)
    assert test.collapsed and test.trades == 0
    filled = outcome(balanced(rng), close, PPY)  # the inputs back: balanced shares, trades
    assert not filled.collapsed and filled.trades >= 10
    ev = Evidence(
        test=test,
        prior=prior_check(before, PI),
        padding_median=filled,
        padding_resample=outcome(balanced(rng), close, PPY),
        sensitivity=sensitivity(before, before + rng.normal(0, 0.01, before.shape), [0.0, -1.0, 0.5]),
        has_padding=True,
    )
    v = verdicts(ev)
    assert v["padding"] == "supported"
    assert v["prior"] == "not supported"
    assert v["input_blind"] == "not supported"  # the fill moves it: the model reads its inputs
    assert v["overconfidence"] == "not supported"
    assert v["shift"] == "inconclusive"
    padding = root_cause_verdicts(ev)[1]
    assert (
        padding.numbers["padding_median_share_drop"] > 0.5 and padding.numbers["padding_median_trades"] >= 10
    )
    assert "HOLD 100% ->" in padding.rule

    # one fill missing and the other one moving nothing: not enough to say "not supported"
    half = Evidence(test=test, padding_median=test, has_padding=True)
    p = root_cause_verdicts(half)[1]
    assert (p.verdict, p.missing) == ("inconclusive", ["padding_resample"])
    # both fills moving nothing: not supported; no padded input at all: not supported either
    assert (
        verdicts(Evidence(test=test, padding_median=test, padding_resample=test, has_padding=True))["padding"]
        == "not supported"
    )
    assert verdicts(Evidence(test=test, has_padding=False))["padding"] == "not supported"


def test_fill_rule_counts_trades_from_zero_and_needs_the_collapse_gone(rng, close):
    test = outcome(constant([0.0, 2.5, 0.0], rng, 0.3), close, PPY)
    # still 96% HOLD but trading where it never did: the trades arm of the rule
    x = constant([0.0, 2.5, 0.0], rng, 0.3)
    x[::25, 2] = 5.0
    some = outcome(x, close, PPY)
    assert some.collapsed and some.trades >= 10
    assert fill_removes_collapse(test, some)
    # a share drop of 20 points that leaves the model collapsed on another class does not count
    y = constant([0.0, 2.5, 0.0], rng, 0.3)
    y[:, 2] = 4.0
    other = outcome(y, close, PPY)
    assert other.collapsed and other.dominant_class == "BUY" and other.trades < 10
    assert not fill_removes_collapse(test, other)


def test_input_blind_model(rng, close):
    prior = np.array([0.3, 0.4, 0.3])
    row = [0.0, 1.8, -0.2]  # constant logits that are not the prior's (gap 1.8 vs log(0.4/0.3) = 0.29)
    x = constant(row, rng, 1e-4)
    same = outcome(constant(row, rng, 1e-4), close, PPY)
    names = [f"f{j}" for j in range(6)]
    ev = Evidence(
        test=outcome(x, close, PPY),
        prior=prior_check(x, prior),
        padding_median=same,
        padding_resample=same,
        shift=same,
        sensitivity=sensitivity(x, x + rng.normal(0, 1e-4, x.shape), row),
        attribution=attribution_summary(np.array([5.0, 3.0, 2.0, 0.0, 0.0, 0.0]), names, [3, 4, 5], 1e-3),
        has_padding=True,
    )
    assert ev.sensitivity is not None and ev.sensitivity.input_blind
    v = verdicts(ev)
    assert v == {
        "prior": "not supported",
        "padding": "not supported",
        "shift": "not supported",
        "input_blind": "supported",
        "overconfidence": "not supported",
    }
    blind = root_cause_verdicts(ev)[3]
    assert "near 0" in blind.rule and blind.numbers["padded_attribution_share"] == 0.0
    # without the probes the variation alone cannot say
    alone = Evidence(test=ev.test, prior=ev.prior, sensitivity=sensitivity(x))
    b = root_cause_verdicts(alone)[3]
    assert (b.verdict, b.missing) == ("inconclusive", ["sensitivity"])


def test_seed_like_overconfidence_is_not_the_prior(rng, close):
    x = np.column_stack(
        [rng.normal(-5.6, 0.66, N), rng.normal(5.0, 1.0, N), rng.normal(-5.6, 0.66, N)]
    )  # the seed's HOLD +5 against -5.6
    ev = Evidence(test=outcome(x, close, PPY), prior=prior_check(x, PI))
    out = {v.cause: v for v in root_cause_verdicts(ev)}
    assert out["prior"].verdict == "not supported"
    assert out["prior"].numbers["gap_sell"] == pytest.approx(10.6, abs=0.3)
    assert out["prior"].numbers["log_prior_ratio_sell"] == pytest.approx(1.1, abs=0.05)
    assert out["prior"].numbers["margin_explained"] < 0.2
    assert out["overconfidence"].verdict == "supported"
    assert out["overconfidence"].numbers["mean_confidence"] > 0.95
    assert out["overconfidence"].numbers["margin_excess"] > 8
    assert out["padding"].verdict == "not supported"  # has_padding defaults to False: no padded input
    # ... when the fill removes the collapse and the 99% confidence with it, padding is the cause
    filled = outcome(balanced(rng), close, PPY)
    ev2 = Evidence(
        test=ev.test, prior=ev.prior, padding_median=filled, padding_resample=filled, has_padding=True
    )
    v2 = verdicts(ev2)
    assert (v2["padding"], v2["overconfidence"]) == ("supported", "not supported")
    assert "lowers the confidence" in root_cause_verdicts(ev2)[4].rule


def test_healthy_model_has_no_cause(rng, close):
    x = balanced(rng)
    ev = Evidence(
        test=outcome(x, close, PPY),
        prior=prior_check(x, PI),
        sensitivity=sensitivity(x, balanced(rng), [0.1, 0.0, -0.1]),
        has_padding=True,
    )
    assert not ev.test.collapsed and ev.sensitivity is not None and not ev.sensitivity.input_blind
    out = root_cause_verdicts(ev)
    assert [v.verdict for v in out] == ["not supported"] * 5
    assert all(not v.missing for v in out)
    # not collapsed decides four of them without any other measure
    bare = root_cause_verdicts(Evidence(test=ev.test))
    assert [v.verdict for v in bare] == ["not supported"] * 4 + ["inconclusive"]


def test_missing_measures_are_inconclusive_and_named(rng, close):
    test = outcome(constant([0.0, 3.0, 0.0], rng, 0.2), close, PPY)
    out = {v.cause: v for v in root_cause_verdicts(Evidence(test=test, has_padding=True))}
    assert {k: (v.verdict, v.missing) for k, v in out.items()} == {
        "prior": ("inconclusive", ["prior"]),
        "padding": ("inconclusive", ["padding_median", "padding_resample"]),
        "shift": ("inconclusive", ["shift"]),
        "input_blind": ("inconclusive", ["sensitivity"]),
        "overconfidence": ("inconclusive", ["prior"]),
    }
    assert "needs the training label prior" in out["prior"].rule


def test_to_dict_is_json_safe(rng, close):
    zero_mean = np.tile([0.0, 0.0, 0.0], (N, 1))
    zero_mean[::2, 1], zero_mean[1::2, 1] = 1.0, -1.0
    s = sensitivity(zero_mean, zero_mean, [0.0, 0.0, 0.0])
    assert s.variation_ratio == np.inf and s.to_dict()["variation_ratio"] is None
    x = constant([0.0, 3.0, 0.0], rng, 0.2)
    ev = Evidence(
        test=outcome(x, close, PPY),
        prior=prior_check(x, PI),
        padding_median=outcome(np.tile([0.0, 1.0, 0.0], (N, 1)), close, PPY),
        sensitivity=s,
        attribution=attribution_summary([1.0, 0.0], ["a", "b"], [1], None),
        shifted_inputs=["a"],
        has_padding=True,
    )
    text = json.dumps(
        {"evidence": ev.to_dict(), "verdicts": [v.to_dict() for v in root_cause_verdicts(ev)]},
        allow_nan=False,
    )
    back = json.loads(text)
    assert back["evidence"]["attribution"]["top"][0] == ["a", 1.0]
    assert back["evidence"]["test"]["dominant_class"] == "HOLD"
    assert back["verdicts"][0]["cause"] == "prior"


def test_measures_validate_their_inputs(close):
    with pytest.raises(FlagcoreError, match="prior must be three positive"):
        prior_check(np.zeros((5, 3)), [0.5, 0.5, 0.0])
    with pytest.raises(FlagcoreError, match=r"shape \(n, 3\)"):
        prior_check(np.zeros((5, 2)), PI)
    with pytest.raises(FlagcoreError, match="one price per bar"):
        outcome(np.zeros((5, 3)), close, PPY)
    with pytest.raises(FlagcoreError, match="payoff"):
        outcome(np.zeros((N, 3)), close, PPY, payoff=0.0)
    with pytest.raises(FlagcoreError, match="shuffled_logits"):
        sensitivity(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(FlagcoreError, match="constant_logits"):
        sensitivity(np.zeros((5, 3)), None, np.zeros((2, 3)))
    with pytest.raises(FlagcoreError, match="2 input names for 3 inputs"):
        attribution_summary([1.0, 2.0, 3.0], ["a", "b"], [], None)
    with pytest.raises(FlagcoreError, match="padded input index 5"):
        attribution_summary([1.0, 2.0], ["a", "b"], [5], None)
    with pytest.raises(FlagcoreError, match="non-negative"):
        attribution_summary([1.0, -2.0], ["a", "b"], [], None)
    with pytest.raises(FlagcoreError, match="Evidence"):
        root_cause_verdicts({"test": None})  # type: ignore[arg-type]


def test_attribution_summary_ranks_and_shares():
    a = attribution_summary([1.0, 6.0, 3.0, 0.0], ["a", "b", "c", "pad"], [2, 3], 0.02, top=3)
    assert a.top == [("b", 0.6), ("c", 0.3), ("a", 0.1)]
    assert a.padded_share == pytest.approx(0.3) and a.padded_inputs == ["c", "pad"]
    assert a.completeness_error == 0.02 and a.total == 10.0
    none = attribution_summary([0.0, 0.0], ["a", "b"], [0], None)
    assert none.padded_share == 0.0 and none.total == 0.0


def test_no_input_shifted_is_said_in_the_shift_verdict(rng, close):
    collapsed = outcome(constant([0.0, 2.5, 0.0], rng, 0.3), close, PPY)
    # explain found no real input with PSI > 0.25: the counterfactual is the test period itself
    none = root_cause_verdicts(Evidence(test=collapsed, shift=collapsed, shifted_inputs=[]))[2]
    assert none.verdict == "not supported" and not none.missing
    assert "no input shifted: no real input has PSI > 0.25" in none.rule
    assert none.numbers["no_input_shifted"] is True and none.numbers["shifted_inputs"] == ""
    # inputs mapped that move nothing: "nothing moves enough", not "no input shifted"
    mapped = root_cause_verdicts(Evidence(test=collapsed, shift=collapsed, shifted_inputs=["vol_20"]))[2]
    assert mapped.verdict == "not supported" and "nothing moves enough" in mapped.rule
    assert mapped.numbers["no_input_shifted"] is False and "no input shifted" not in mapped.rule
    # not measured at all: inconclusive, never "no input shifted"
    unmeasured = root_cause_verdicts(Evidence(test=collapsed))[2]
    assert unmeasured.verdict == "inconclusive" and "no input shifted" not in unmeasured.rule
    # a healthy model: does not collapse, and says that nothing shifted too
    healthy = outcome(balanced(rng), close, PPY)
    h = root_cause_verdicts(Evidence(test=healthy, shift=healthy))[2]
    assert h.verdict == "not supported" and "does not collapse" in h.rule and "no input shifted" in h.rule
