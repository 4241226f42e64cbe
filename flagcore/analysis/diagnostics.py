"""Collapse diagnostics: the seed's tables, a collapse verdict, honest classification metrics,
calibration, and feature coverage and shift. Pure functions over arrays.

Class ids: 0 SELL, 1 HOLD, 2 BUY; labels equal to -1 are unresolved and left out of every metric.
"""

from __future__ import annotations

import numpy as np

from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, CLASS_NAMES, HOLD, N_CLASSES, SELL

DOMINANT_SHARE = 0.95  # one class at or above this share of predictions: collapsed
MIN_TRADE_SHARE = 0.10  # the seed's health bar: BUY and SELL each at least 10% of predictions
ENTROPY_FLOOR = 0.10  # normalised entropy of the action distribution below this: collapsed
LOGIT_VARIATION_FLOOR = 1e-3  # std of a logit margin across bars below this: the logits are constant


def _logits(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise FlagcoreError(f"logits must have shape (n, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise FlagcoreError("no bars: logits are empty")
    if not np.isfinite(x).all():
        raise FlagcoreError("logits hold NaN or infinite values")
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def action_distribution(actions: np.ndarray) -> dict:
    """Counts and shares of SELL/HOLD/BUY among the predicted actions (the seed's first table)."""
    a = np.asarray(actions)
    counts = np.bincount(a, minlength=N_CLASSES)[:N_CLASSES]
    n = max(len(a), 1)
    return {
        "counts": {c: int(counts[i]) for i, c in enumerate(CLASS_NAMES)},
        "shares": {c: float(counts[i] / n) for i, c in enumerate(CLASS_NAMES)},
        "bars": int(len(a)),
    }


def confidence_stats(probs: np.ndarray) -> dict:
    """Mean, min and max of the chosen action's probability (the seed's confidence table)."""
    conf = np.asarray(probs).max(axis=1)
    return {
        "mean": float(conf.mean()),
        "min": float(conf.min()),
        "max": float(conf.max()),
        "median": float(np.median(conf)),
    }


def logit_stats(logits) -> dict:
    """Per-class logit mean and standard deviation (the seed's logits table)."""
    x = _logits(logits)
    return {
        c: {"mean": float(x[:, i].mean()), "std": float(x[:, i].std(ddof=1) if len(x) > 1 else 0.0)}
        for i, c in enumerate(CLASS_NAMES)
    }


def collapse_verdict(
    logits,
    *,
    dominant_share: float = DOMINANT_SHARE,
    min_trade_share: float = MIN_TRADE_SHARE,
    entropy_floor: float = ENTROPY_FLOOR,
) -> dict:
    """Has the model collapsed onto one action, and can a post-hoc fix still work?

    Collapsed when one class takes at least ``dominant_share`` of the predictions or the
    normalised entropy of the action distribution, H / ln 3, is below ``entropy_floor``.
    Healthy (the seed's bar) when BUY and SELL each take at least ``min_trade_share``.
    ``logits_vary`` says whether the margins logit_BUY - logit_HOLD and logit_SELL - logit_HOLD
    change across bars: a threshold or logit adjustment can only make trades if they do.
    """
    x = _logits(logits)
    actions = x.argmax(axis=1)
    shares = np.bincount(actions, minlength=N_CLASSES) / len(actions)
    nz = shares[shares > 0]
    entropy = float(-(nz * np.log(nz)).sum() / np.log(N_CLASSES))
    top = int(shares.argmax())
    margins = x[:, [SELL, BUY]] - x[:, [HOLD]]
    margin_std = margins.std(axis=0)
    logits_vary = bool((margin_std > LOGIT_VARIATION_FLOOR).all())
    collapsed = bool(shares[top] >= dominant_share or entropy < entropy_floor)
    healthy = bool(shares[SELL] >= min_trade_share and shares[BUY] >= min_trade_share)
    if collapsed:
        reason = (
            f"predicts {CLASS_NAMES[top]} on {shares[top]:.2%} of bars (collapse at >= {dominant_share:.0%})"
            if shares[top] >= dominant_share
            else f"action entropy {entropy:.3f} of its maximum (collapse below {entropy_floor})"
        )
    elif not healthy:
        low = [CLASS_NAMES[k] for k in (SELL, BUY) if shares[k] < min_trade_share]
        reason = f"not collapsed, but {' and '.join(low)} below the {min_trade_share:.0%} health bar"
    else:
        reason = f"BUY {shares[BUY]:.1%} and SELL {shares[SELL]:.1%} of bars, both >= {min_trade_share:.0%}"
    fixable = (
        "a post-hoc threshold or logit adjustment can still produce trades"
        if logits_vary
        else "the logit margins are constant across bars: no post-hoc rule can produce informative trades"
    )
    return {
        "collapsed": collapsed,
        "healthy": healthy,
        "dominant_class": CLASS_NAMES[top],
        "dominant_share": float(shares[top]),
        "action_entropy": entropy,
        "reason": reason,
        "logits_vary": logits_vary,
        "margin_std": {"SELL-HOLD": float(margin_std[0]), "BUY-HOLD": float(margin_std[1])},
        "post_hoc_outlook": fixable,
    }


def confusion_matrix(actions, labels) -> np.ndarray:
    """(3, 3) counts, rows = true label, columns = predicted action; unresolved labels left out."""
    a, y = np.asarray(actions), np.asarray(labels)
    if a.shape != y.shape:
        raise FlagcoreError(f"actions and labels differ in length: {a.shape} vs {y.shape}")
    ok = y >= 0
    k = N_CLASSES
    return np.bincount(k * y[ok].astype(np.int64) + a[ok], minlength=k * k).reshape(k, k)


def classification_metrics(actions, labels) -> dict:
    """Accuracy beside the majority-class baseline, and the metrics that a majority guess cannot fool.

    Balanced accuracy is the mean per-class recall; macro-F1 the mean per-class F1 (0 for a class
    never predicted); Matthews correlation in the multi-class form of Gorodkin (2004); Cohen's
    kappa (1960) = (p_o - p_e) / (1 - p_e).
    """
    cm = confusion_matrix(actions, labels).astype(np.float64)
    n = cm.sum()
    if n == 0:
        raise FlagcoreError("no labelled bars to score")
    true_k, pred_k, diag = cm.sum(1), cm.sum(0), np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_k > 0, diag / pred_k, 0.0)
        recall = np.where(true_k > 0, diag / true_k, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = true_k > 0
    accuracy = diag.sum() / n
    p_e = (true_k * pred_k).sum() / n**2
    kappa = 0.0 if np.isclose(p_e, 1.0) else (accuracy - p_e) / (1 - p_e)
    cov = n * diag.sum() - (true_k * pred_k).sum()
    denom = np.sqrt((n**2 - (pred_k**2).sum()) * (n**2 - (true_k**2).sum()))
    mcc = 0.0 if denom == 0 else cov / denom
    majority = int(true_k.argmax())
    return {
        "labelled_bars": int(n),
        "accuracy": float(accuracy),
        "majority_class": CLASS_NAMES[majority],
        "majority_baseline": float(true_k[majority] / n),
        "accuracy_over_baseline": float(accuracy - true_k[majority] / n),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "mcc": float(mcc),
        "cohen_kappa": float(kappa),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(true_k[i]),
                "predicted": int(pred_k[i]),
            }
            for i, c in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": cm.astype(int).tolist(),
    }


def reliability_curve(probs, labels, n_bins: int = 10) -> dict:
    """Confidence of the chosen action against its hit rate, in equal-width bins, and the ECE.

    ECE = sum_b (n_b / n) |accuracy_b - confidence_b| (Guo et al. 2017).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if n_bins < 1:
        raise FlagcoreError(f"n_bins must be >= 1, got {n_bins}")
    ok = y >= 0
    if not ok.any():
        raise FlagcoreError("no labelled bars for a reliability curve")
    p, y = p[ok], y[ok]
    conf = p.max(axis=1)
    hit = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(b, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, hit_sum / count, np.nan)
    used = count > 0
    ece = float((count[used] / count.sum() * np.abs(accuracy[used] - mean_conf[used])).sum())
    return {
        "bin_edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in accuracy],
        "ece": ece,
    }


def population_stability_index(expected: np.ndarray, actual: np.ndarray, n_bins: int = 10) -> float:
    """PSI = sum (a_i - e_i) ln(a_i / e_i) over quantile bins of ``expected`` (shares floored at 1e-4)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    edges = np.unique(np.quantile(e, np.linspace(0, 1, n_bins + 1)[1:-1]))
    e_share = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    a_share = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    e_share, a_share = np.maximum(e_share, 1e-4), np.maximum(a_share, 1e-4)
    return float(((a_share - e_share) * np.log(a_share / e_share)).sum())


def feature_shift(
    train_features: np.ndarray,
    test_features: np.ndarray,
    names: list[str] | None = None,
    padded_inputs: list[int] | None = None,
) -> list[dict]:
    """Per model input: is it padding in the test set, and how far its test distribution moved.

    PSI over ten training-quantile bins (rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25
    major shift) and the two-sample Kolmogorov-Smirnov statistic. An input that held data in
    training and zeros in the test set shows as ``padding`` with a large shift: the seed's 49 -> 60.
    """
    from scipy.stats import ks_2samp

    tr = np.asarray(train_features, dtype=np.float64)
    te = np.asarray(test_features, dtype=np.float64)
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise FlagcoreError(f"feature matrices differ in width: {tr.shape} vs {te.shape}")
    padded = set(padded_inputs or [])
    rows = []
    for j in range(tr.shape[1]):
        # the asymptotic p-value: the exact one costs seconds per evaluate over 60 inputs of thousands
        # of bars, where both agree to a few digits
        ks = ks_2samp(tr[:, j], te[:, j], method="asymp")
        psi = population_stability_index(tr[:, j], te[:, j])
        rows.append(
            {
                "input": j,
                "name": (names[j] if names and j < len(names) else f"input_{j}"),
                "padding": j in padded,
                "train_all_zero": bool(not tr[:, j].any()),
                "test_all_zero": bool(not te[:, j].any()),
                "psi": psi,
                "ks": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "shift": "major" if psi > 0.25 else "moderate" if psi > 0.1 else "stable",
            }
        )
    return rows


def diagnose(logits, labels=None) -> dict:
    """Everything above for one model's logits: the seed's tables, verdict, metrics, calibration."""
    x = _logits(logits)
    probs = softmax(x)
    actions = x.argmax(axis=1)
    out = {
        "action_distribution": action_distribution(actions),
        "confidence": confidence_stats(probs),
        "logits": logit_stats(x),
        "collapse": collapse_verdict(x),
    }
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != actions.shape:
            raise FlagcoreError(f"labels ({y.shape[0]}) and logits ({x.shape[0]}) differ in length")
        if (y >= 0).any():
            out["metrics"] = classification_metrics(actions, y)
            out["calibration"] = reliability_curve(probs, y)
    return out
