"""The HIFA gate: the criteria's thresholds, and each criterion judged with its value and inputs.

The criteria (``vocab.CRITERIA``): a minimum number of trades (independent bets), then the seed's
three (FINDINGS_MODEL_COLLAPSE.md): CPCV mean Sharpe, deflated Sharpe (read as the paper defines
it: the DSR probability and the annualised haircut must both pass), permutation p-value. The
thresholds are overridable by a TOML ``[hifa]`` table; :func:`hifa_verdict` computes the values
from an option's returns and judges them, with how far the option is from passing: the minimum
track record length and the minimum backtest length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.dsr import (
    expected_max_sharpe,
    min_backtest_length,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from flagcore.analysis.sharpe import sharpe_defined
from flagcore.errors import FlagcoreError
from flagcore.vocab import CRITERION

DEFAULT_CRITERIA = {
    # a Sharpe from fewer round trips is noise whatever the bar count (PSR counts bars, not bets):
    # 30 independent bets is the usual floor for the normal approximation that PSR, the t-test and
    # Lo's (2002) standard error of the Sharpe ratio rest on (validation-math.md, "Independent bets")
    "min_trades": 30,
    # the seed's HIFA gate (FINDINGS_MODEL_COLLAPSE.md)
    "cpcv_mean_sharpe_min": 1.5,  # annualised
    # the deflated Sharpe passes on both readings: the seed's ">= 1.0" as the annualised haircut
    # SR - SR0, and the DSR of Bailey & Lopez de Prado (2014), a probability, at the usual 0.95
    "deflated_sharpe_min": 1.0,
    "dsr_probability_min": 0.95,
    "permutation_p_max": 0.05,
    "n_permutations": 10000,
    "permutation_block": 24,
    "cpcv_groups": 6,
    "cpcv_test_groups": 2,
}


def load_criteria(path=None) -> dict:
    """The HIFA thresholds: the seed's values, overridden by a TOML file's ``[hifa]`` table."""
    import tomllib

    out = dict(DEFAULT_CRITERIA)
    if path is None:
        return out
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FlagcoreError(f"{path}: no such criteria file") from None
    except tomllib.TOMLDecodeError as e:
        raise FlagcoreError(f"{path}: not valid TOML ({e})") from None
    table = data.get("hifa", data)
    unknown = sorted(set(table) - set(DEFAULT_CRITERIA))
    if unknown:
        raise FlagcoreError(
            f"{path}: unknown HIFA setting {unknown[0]!r}; known: {', '.join(DEFAULT_CRITERIA)}"
        )
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise FlagcoreError(f"{path}: {k} must be a number, got {v!r}")
        if isinstance(DEFAULT_CRITERIA[k], int) and v != int(v):
            raise FlagcoreError(f"{path}: {k} must be a whole number, got {v!r}")
        out[k] = type(DEFAULT_CRITERIA[k])(v)
    return out


@dataclass
class CriterionResult:
    """One HIFA criterion judged for one option: its value against its threshold, with its inputs."""

    criterion: str  # a key of ``vocab.CRITERION``
    value: float
    threshold: float
    rule: str  # ">=" or "<"
    passed: bool
    inputs: dict[str, Any] = field(default_factory=dict)  # what the value was computed from


@dataclass
class HifaVerdict:
    """The HIFA criteria of one option, in ``vocab.CRITERIA`` order; it passes when all of them do."""

    criteria: dict[str, CriterionResult]

    def __getitem__(self, criterion: str) -> CriterionResult:
        return self.criteria[criterion]

    @property
    def passed_all(self) -> bool:
        return bool(self.criteria) and all(c.passed for c in self.criteria.values())

    @property
    def n_passed(self) -> int:
        return sum(c.passed for c in self.criteria.values())


def judge(criterion: str, value: float, criteria: dict, inputs: dict | None = None) -> CriterionResult:
    """``value`` judged by ``criterion``'s rule against its threshold in ``criteria``."""
    c = CRITERION[criterion]
    threshold = float(criteria[c.threshold_key])
    return CriterionResult(
        criterion, float(value), threshold, c.rule, c.passes(value, threshold), dict(inputs or {})
    )


def rule_text(result: CriterionResult) -> str:
    """The rule a criterion applies, with its thresholds, in words: "trades >= 30",
    "DSR >= 0.95 and SR - SR0 >= 1 (annualised)"."""
    t = f"{result.threshold:g}"
    if result.criterion == "min_trades":
        return f"trades >= {t}"
    if result.criterion == "cpcv_mean_sharpe":
        return f"mean of the CPCV paths' annualised Sharpe >= {t}"
    if result.criterion == "deflated_sharpe":
        p = result.inputs.get("dsr_probability_threshold")
        both = f"DSR probability >= {p:g} and " if p is not None else ""
        return f"{both}SR - SR0 >= {t} (annualised)"
    return f"permutation p < {t}"


def why_not(result: CriterionResult) -> str | None:
    """One sentence on why a criterion failed; None when it passed."""
    if result.passed:
        return None
    i = result.inputs
    if result.criterion == "min_trades":
        return (
            f"{result.value:.0f} trades, below {result.threshold:g}: a Sharpe from so few "
            "independent bets is noise, so this option cannot pass"
        )
    if result.criterion == "deflated_sharpe":
        parts = []
        if not i.get("haircut_passed", True):
            parts.append(f"SR - SR0 = {result.value:.2f} < {result.threshold:g}")
        if not i.get("probability_passed", True):
            parts.append(
                f"DSR probability {i['dsr_probability']:.3f} < {i['dsr_probability_threshold']:g}"
                + _track_record_hint(i)
            )
        return "; ".join(parts) or None
    return f"{result.value:.3g} is not {result.rule} {result.threshold:g}"


def _track_record_hint(i: dict) -> str:
    bars = i.get("min_track_record_bars")
    if bars is None or not np.isfinite(bars):
        return " (the Sharpe does not exceed SR0: no track record length would pass)"
    return f" (needs {bars:,.0f} bars at this Sharpe, has {i['n_obs']:,})"


def trades_verdict(trades: int, criteria: dict) -> CriterionResult:
    """The minimum-trades criterion: a run of bars in the market on one side counts as one bet."""
    return judge(
        "min_trades", int(trades), criteria, {"what": "round trips (runs in the market on one side)"}
    )


def deflated_verdict(returns, n_trials: int, trial_sharpes, periods_per_year: float, criteria: dict):
    """The deflated-Sharpe criterion as Bailey & Lopez de Prado (2014) define it, with the seed's
    haircut: passes when DSR = PSR(SR0) >= ``dsr_probability_min`` and the annualised haircut
    SR - SR0 >= ``deflated_sharpe_min``; its inputs carry the minimum track record length (bars and
    years for PSR(SR0) >= the threshold) and the minimum backtest length for ``n_trials``."""
    ann = np.sqrt(periods_per_year)
    sr, n, skew, kurt = sharpe_moments(returns)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    var = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    n_trials = max(int(n_trials), 1)
    sr0 = expected_max_sharpe(n_trials, var)
    undefined = not sharpe_defined(returns)  # never trades: no Sharpe
    dsr = 0.0 if undefined else probabilistic_sharpe_ratio(sr, n, skew, kurt, sr0)
    p_min = float(criteria["dsr_probability_min"])
    min_trl = float("inf") if undefined else min_track_record_length(sr, skew, kurt, sr0, p_min)
    haircut = float((sr - sr0) * ann)
    res = judge(
        "deflated_sharpe",
        haircut,
        criteria,
        {
            "sharpe_annual": sr * ann,
            "sharpe_defined": not undefined,
            "sr0_annual": sr0 * ann,
            "n_trials": n_trials,
            "trial_sharpe_variance": var,
            "dsr_probability": dsr,
            "dsr_probability_threshold": p_min,
            "skew": skew,
            "kurtosis": kurt,
            "n_obs": n,
            "periods_per_year": float(periods_per_year),
            "min_track_record_bars": min_trl,
            "min_track_record_years": min_trl / periods_per_year,
            "backtest_years": n / periods_per_year,
            "min_backtest_years": min_backtest_length(n_trials, sr * ann),
        },
    )
    res.inputs["haircut_passed"] = res.passed
    res.inputs["probability_passed"] = bool(dsr >= p_min)
    res.passed = res.passed and res.inputs["probability_passed"]
    return res


def hifa_verdict(
    *,
    cpcv_path_sharpes,
    returns,
    trades: int,
    n_trials: int,
    trial_sharpes,
    permutation_p: float,
    periods_per_year: float,
    criteria: dict | None = None,
) -> HifaVerdict:
    """The HIFA criteria for one option, each with value, threshold, pass/fail and inputs.

    - Trades: at least ``min_trades`` round trips (independent bets).
    - CPCV mean Sharpe: mean of the paths' per-period Sharpes, annualised.
    - Deflated Sharpe: DSR probability PSR(SR0) >= ``dsr_probability_min`` and the annualised
      haircut (SR - SR0) x sqrt(ppy) >= ``deflated_sharpe_min`` (:func:`deflated_verdict`), with
      SR0 the expected maximum Sharpe of ``n_trials`` trials whose Sharpes vary as
      ``trial_sharpes`` do.
    - Permutation p-value below the threshold.
    A strategy without trades has Sharpe 0, p = 1, and fails all of them.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.zeros(500); r[100:124] = 0.01  # one lucky 24-bar position
    >>> v = hifa_verdict(cpcv_path_sharpes=[0.2], returns=r, trades=1, n_trials=1,
    ...                  trial_sharpes=[0.2], permutation_p=0.01, periods_per_year=8766)
    >>> v.passed_all, v["min_trades"].passed
    (False, False)
    """
    c = {**DEFAULT_CRITERIA, **(criteria or {})}
    ann = np.sqrt(periods_per_year)
    if not periods_per_year or periods_per_year <= 0:
        raise FlagcoreError(f"periods per year must be > 0, got {periods_per_year!r}")
    cpcv_mean = float(np.mean(cpcv_path_sharpes) * ann)
    return HifaVerdict(
        {
            "min_trades": trades_verdict(trades, c),
            "cpcv_mean_sharpe": judge(
                "cpcv_mean_sharpe",
                cpcv_mean,
                c,
                {"paths": len(cpcv_path_sharpes), "annualised_with": periods_per_year},
            ),
            "deflated_sharpe": deflated_verdict(returns, n_trials, trial_sharpes, periods_per_year, c),
            "permutation_p": judge("permutation_p", float(permutation_p), c),
        }
    )
