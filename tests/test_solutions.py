import numpy as np
import pytest

from flagcore.analysis.backtest import BacktestConfig
from flagcore.analysis.remedies import (
    agreement,
    ensemble_rule,
    evaluate_actions,
    hold_flip_thresholds,
    logit_adjustment,
    perfect_foresight_actions,
    probability_average,
    threshold_rule,
)
from flagcore.errors import FlagcoreError

ACTIONS = ["SELL", "HOLD", "BUY"]


def seed_rule(logits, threshold):
    """The findings document's pseudo-code, bar by bar."""
    out = []
    for row in logits:
        p = np.exp(row - row.max())
        p /= p.sum()
        action = ACTIONS[int(np.argmax(row))]
        confidence = p.max()
        if action == "HOLD" and confidence < threshold:
            second_best_action = ACTIONS[int(np.argsort(row)[-2])]
            action = second_best_action
        out.append(ACTIONS.index(action))
    return np.array(out)


@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.6, 0.9, 0.95, 0.99])
def test_threshold_rule_matches_the_seed_pseudo_code(threshold):
    rng = np.random.default_rng(int(threshold * 100))
    logits = rng.normal(size=(3000, 3)) * 2 + np.array([0.0, 1.5, 0.0])
    assert np.array_equal(threshold_rule(logits, threshold), seed_rule(logits, threshold))


def test_threshold_extremes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3)) + np.array([0, 40.0, 0])  # P(HOLD) rounds to 1.0 in floats
    assert (threshold_rule(logits, 0.0) == 1).all()
    flipped = threshold_rule(logits, 1.0)
    assert (flipped != 1).all()  # every HOLD flips, even where its probability rounds to 1
    assert np.array_equal(flipped, np.where(logits[:, 0] > logits[:, 2], 0, 2))
    with pytest.raises(FlagcoreError, match="hold_threshold"):
        threshold_rule(logits, 1.2)


def test_flip_thresholds_give_the_whole_sweep():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(400, 3)) + np.array([0, 1.0, 0])
    flip_at = hold_flip_thresholds(logits)
    for t in (0.3, 0.5, 0.8, 0.97):
        changed = (threshold_rule(logits, t) != logits.argmax(1)).sum()
        assert changed == (flip_at < t).sum()


def test_ensemble_rule():
    flag = np.array([1, 1, 1, 0, 2, 1])
    partner = np.array([0, 1, 2, 2, 0, 1])
    assert ensemble_rule(flag, partner).tolist() == [0, 1, 2, 0, 2, 1]
    ag = agreement(flag, partner)
    assert ag["overrides"] == 2 and ag["agreement"] == pytest.approx(2 / 6)


def test_probability_average_and_logit_adjustment():
    p = np.array([[0.2, 0.7, 0.1]])
    q = np.array([[0.8, 0.1, 0.1]])
    np.testing.assert_allclose(probability_average(p, q), [[0.5, 0.4, 0.1]])
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 3))
    prior = np.array([0.2, 0.6, 0.2])
    assert np.array_equal(logit_adjustment(logits, prior, 0.0), logits.argmax(1))
    adjusted = logit_adjustment(logits, prior, 1.0)
    assert (adjusted == 1).mean() < (logits.argmax(1) == 1).mean()  # HOLD's prior is taken out
    # hand case: logits (0, 1, 0), prior (0.2, 0.6, 0.2): 1 - ln 0.6 = 1.51 < 0 - ln 0.2 = 1.61 -> SELL
    assert logit_adjustment(np.array([[0.0, 1.0, 0.0]]), prior, 1.0)[0] == 0


def test_labels_as_signals_beat_a_model_and_random():
    rng = np.random.default_rng(2)
    n = 3000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    from flagcore.data.labels import triple_barrier

    labels = triple_barrier(close, np.full(n, 0.01), 24, 1.0)
    foresight = evaluate_actions(
        perfect_foresight_actions(labels), labels, close, 8760, cfg=BacktestConfig(sizing="unit")
    )
    noise = evaluate_actions(rng.integers(0, 3, n), labels, close, 8760, cfg=BacktestConfig(sizing="unit"))
    assert foresight["accuracy"] == 1.0 and foresight["backtest"]["sharpe"] > 5
    assert foresight["backtest"]["sharpe"] > noise["backtest"]["sharpe"] + 5


def test_compare_options_gives_every_option_the_same_metrics():
    from flagcore.analysis.remedies import PeriodInputs, compare_options
    from flagcore.data.labels import triple_barrier
    from flagcore.vocab import OPTIONS

    rng = np.random.default_rng(7)

    def period(n):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        labels = triple_barrier(close, np.full(n, 0.01), 24, 1.0)
        collapsed = rng.normal(size=(n, 3)) * 0.3 + np.array([-2.0, 2.0, -1.0])
        logits = {
            "baseline": collapsed,
            **{
                k: rng.normal(size=(n, 3))
                for k in (
                    "opt1_class_weights",
                    "opt2_focal",
                    "logit_adjusted_loss",
                    "oversample",
                    "multitask",
                    "walk_forward",
                    "cgdt",
                )
            },
        }
        return PeriodInputs(
            logits,
            labels,
            close,
            8760.0,
            partner_actions=rng.integers(0, 3, n),
            prior=np.array([0.2, 0.6, 0.2]),
        )

    table = compare_options(period(800), period(2000), hold_threshold=0.99)
    assert set(table) == set(OPTIONS)
    keys = {k for k in table["baseline"] if k not in ("actions", "confidence")}
    assert {"unit", "sizing", "kelly_p"} <= keys
    for name, row in table.items():
        assert keys <= set(row), name
        assert abs(sum(row["action_shares"].values()) - 1) < 1e-9
        assert row["sizing"]["probability"] == "model", name
        assert row["unit"]["periods"] == row["backtest"]["periods"], name
    assert table["baseline"]["action_shares"]["HOLD"] == 1.0 and table["baseline"]["backtest"]["trades"] == 0
    assert table["baseline"]["backtest"]["sharpe_defined"] is False
    assert table["opt3_threshold"]["backtest"]["trades"] > 0  # the threshold makes the collapsed model trade
    assert table["opt5_labels"]["accuracy"] == 1.0
    assert table["opt1_class_weights"]["payoff_source"] == "training period"
    best_model = max(r["backtest"]["sharpe"] for k, r in table.items() if k != "opt5_labels")
    assert table["opt5_labels"]["backtest"]["sharpe"] > best_model


def test_option_signals_read_q_from_the_vector_of_the_model_whose_action_is_taken():
    from flagcore.analysis.backtest import kelly_probability
    from flagcore.analysis.diagnostics import softmax
    from flagcore.analysis.remedies import option_signals

    logits = {"baseline": np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 3.0, 0.5], [0.0, 1.0, 2.0]])}
    p = softmax(logits["baseline"])
    partner = np.array([0, 1, 2, 0])
    ens = option_signals("opt4_ensemble", logits, partner_actions=partner)
    assert ens.actions.tolist() == [0, 0, 2, 2]  # bars 0 and 2 overridden by the partner
    q = kelly_probability(ens.probs, ens.actions)
    # the partner gave actions only: its one-hot vector, q = 1; kept bars read FLAG-TRADER's vector
    assert q[0] == 1.0 and q[2] == 1.0
    assert q[1] == pytest.approx(p[1, 0] / (p[1, 0] + p[1, 2]))
    assert q[3] == pytest.approx(p[3, 2] / (p[3, 0] + p[3, 2]))
    partner_p = np.array([[0.5, 0.2, 0.3]] * 4)
    avg = option_signals("opt4_prob_average", logits, partner_actions=partner, partner_probs=partner_p)
    np.testing.assert_allclose(avg.probs, 0.5 * p + 0.5 * partner_p)
    lab = option_signals("opt5_labels", logits, labels=np.array([0, 1, -1, 2]))
    assert lab.actions.tolist() == [0, 1, 1, 2]
    assert kelly_probability(lab.probs, lab.actions).tolist() == [1.0, 0.0, 0.0, 1.0]
    thr = option_signals("opt3_threshold", logits, hold_threshold=1.0)
    assert thr.actions.tolist() == [2, 0, 2, 2] and np.array_equal(thr.probs, p)
