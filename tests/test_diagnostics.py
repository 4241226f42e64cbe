import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
)
from sklearn.metrics import (
    confusion_matrix as sk_confusion,
)

from flagcore.analysis.diagnostics import (
    action_distribution,
    classification_metrics,
    collapse_verdict,
    confusion_matrix,
    diagnose,
    feature_shift,
    logit_stats,
    population_stability_index,
    reliability_curve,
)
from flagcore.errors import FlagcoreError


def collapsed_logits(n=9073, seed=0):
    """Logits with the seed's statistics: SELL -5.64 +- 0.66, HOLD 5.04 +- 1.01, BUY -1.51 +- 1.56."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(-5.64, 0.66, n), rng.normal(5.04, 1.01, n), rng.normal(-1.51, 1.56, n)], 1)


def test_seed_picture_for_a_collapsed_model():
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=9073, p=[0.19, 0.6142, 0.1958])
    d = diagnose(collapsed_logits(), labels)
    assert d["action_distribution"]["shares"]["HOLD"] > 0.99
    assert d["confidence"]["mean"] > 0.98
    assert d["logits"]["HOLD"]["mean"] == pytest.approx(5.04, abs=0.05)
    assert d["logits"]["SELL"]["std"] == pytest.approx(0.66, abs=0.03)
    v = d["collapse"]
    assert v["collapsed"] and not v["healthy"] and v["dominant_class"] == "HOLD" and "HOLD" in v["reason"]
    assert v["logits_vary"]  # the margins still move: a threshold can make trades
    m = d["metrics"]
    # the seed's key insight: accuracy equals the HOLD share
    assert m["accuracy"] == pytest.approx(m["majority_baseline"], abs=0.002)
    assert m["balanced_accuracy"] == pytest.approx(1 / 3, abs=0.002)
    assert abs(m["mcc"]) < 0.02 and abs(m["cohen_kappa"]) < 0.02


def test_constant_logits_cannot_be_fixed_post_hoc():
    v = collapse_verdict(np.tile([-5.0, 5.0, -1.0], (100, 1)))
    assert v["collapsed"] and not v["logits_vary"] and "constant" in v["post_hoc_outlook"]


def test_healthy_and_unhealthy_verdicts():
    eye = np.eye(3) * 5
    healthy = collapse_verdict(eye[np.repeat([0, 1, 2], [20, 60, 20])])
    assert not healthy["collapsed"] and healthy["healthy"]
    thin = collapse_verdict(eye[np.repeat([0, 1, 2], [5, 80, 15])])
    assert not thin["collapsed"] and not thin["healthy"] and "SELL below the 10% health bar" in thin["reason"]


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2, -1])
    a = np.array([0, 1, 1, 1, 2, 2, 0])  # the last bar is unlabelled and ignored
    m = classification_metrics(a, y)
    assert m["labelled_bars"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["majority_baseline"] == pytest.approx(3 / 6) and m["majority_class"] == "HOLD"
    # recalls: SELL 1/2, HOLD 2/3, BUY 1/1
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["per_class"]["BUY"]["precision"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]


def test_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    a = np.where(rng.random(500) < 0.4, y, rng.integers(0, 3, 500))
    m = classification_metrics(a, y)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, a))
    assert m["macro_f1"] == pytest.approx(f1_score(y, a, average="macro"))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, a))
    assert m["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, a))
    assert np.array_equal(confusion_matrix(a, y), sk_confusion(y, a, labels=[0, 1, 2]))


def test_all_hold_gives_zero_mcc_and_kappa_not_nan():
    y = np.array([0, 1, 1, 2, 1])
    m = classification_metrics(np.ones(5, int), y)
    assert m["mcc"] == 0.0 and m["cohen_kappa"] == 0.0 and m["per_class"]["BUY"]["f1"] == 0.0


def test_reliability_and_ece_by_hand():
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.1, 0.6, 0.3]])
    y = np.array([0, 1, 1, 1])  # bin 0.9: 1 of 2 right; bin 0.6: 2 of 2 right
    r = reliability_curve(probs, y, n_bins=10)
    assert r["count"][8] == 2 and r["count"][5] == 2
    assert r["accuracy"][8] == 0.5 and r["confidence"][8] == pytest.approx(0.9)
    assert r["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_psi_and_feature_shift_show_padding():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, 3))
    test = np.column_stack([rng.normal(size=1000), rng.normal(1.0, 1, 1000), np.zeros(1000)])
    rows = feature_shift(train, test, ["a", "b", "flow"], padded_inputs=[2])
    assert rows[0]["shift"] == "stable" and rows[0]["psi"] < 0.05
    assert rows[1]["psi"] > 0.25 and rows[1]["ks"] > 0.3
    assert rows[2]["padding"] and rows[2]["test_all_zero"] and rows[2]["shift"] == "major"
    assert population_stability_index(train[:, 0], train[:, 0]) == pytest.approx(0.0, abs=1e-12)


def test_small_tables():
    assert action_distribution(np.array([1, 1, 2, 0]))["shares"] == {"SELL": 0.25, "HOLD": 0.5, "BUY": 0.25}
    s = logit_stats(np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]))
    assert s["BUY"] == {"mean": 3.0, "std": pytest.approx(np.sqrt(2))}
    with pytest.raises(FlagcoreError, match=r"shape \(n, 3\)"):
        diagnose(np.zeros((4, 2)))
