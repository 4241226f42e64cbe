"""The HIFA gate: the criteria's thresholds, and each criterion judged with its value and inputs.

The three criteria (``vocab.CRITERIA``): CPCV mean Sharpe, deflated Sharpe, permutation p-value.
The thresholds are the seed's (FINDINGS_MODEL_COLLAPSE.md), overridable by a TOML ``[hifa]``
table; :func:`hifa_verdict` computes the values from an option's returns and judges them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flagcore.analysis.dsr import expected_max_sharpe, probabilistic_sharpe_ratio, sharpe_moments
from flagcore.analysis.sharpe import sharpe_defined
from flagcore.errors import FlagcoreError
from flagcore.vocab import CRITERION

DEFAULT_CRITERIA = {
    # the seed's HIFA gate (FINDINGS_MODEL_COLLAPSE.md)
    "cpcv_mean_sharpe_min": 1.5,  # annualised
    "deflated_sharpe_min": 1.0,  # annualised Sharpe left after the selection haircut, SR - SR0
    "dsr_probability_min": 0.95,  # the conventional bar for the DSR as a probability (shown, not gating)
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


def hifa_verdict(
    *,
    cpcv_path_sharpes,
    returns,
    n_trials: int,
    trial_sharpes,
    permutation_p: float,
    periods_per_year: float,
    criteria: dict | None = None,
) -> HifaVerdict:
    """The three HIFA criteria for one option, each with value, threshold, pass/fail and inputs.

    - CPCV mean Sharpe: mean of the paths' per-period Sharpes, annualised.
    - Deflated Sharpe: the seed's ">= 1.0" cannot be a probability, so it is read as the
      annualised Sharpe left after the selection haircut, (SR - SR0) x sqrt(ppy), with SR0 the
      expected maximum Sharpe of ``n_trials`` trials whose Sharpes vary as ``trial_sharpes`` do;
      the DSR probability PSR(SR0) is reported beside it.
    - Permutation p-value below the threshold.
    A strategy without trades has Sharpe 0, p = 1, and fails all three.
    """
    c = criteria or DEFAULT_CRITERIA
    ann = np.sqrt(periods_per_year)
    sr, n, skew, kurt = sharpe_moments(returns)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    var = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    sr0 = expected_max_sharpe(max(int(n_trials), 1), var)
    undefined = not sharpe_defined(returns)  # never trades: no Sharpe
    dsr = 0.0 if undefined else probabilistic_sharpe_ratio(sr, n, skew, kurt, sr0)
    cpcv_mean = float(np.mean(cpcv_path_sharpes) * ann)
    deflated = float((sr - sr0) * ann)
    return HifaVerdict(
        {
            "cpcv_mean_sharpe": judge(
                "cpcv_mean_sharpe",
                cpcv_mean,
                c,
                {"paths": len(cpcv_path_sharpes), "annualised_with": periods_per_year},
            ),
            "deflated_sharpe": judge(
                "deflated_sharpe",
                deflated,
                c,
                {
                    "sharpe_annual": sr * ann,
                    "sharpe_defined": not undefined,
                    "sr0_annual": sr0 * ann,
                    "n_trials": int(n_trials),
                    "trial_sharpe_variance": var,
                    "dsr_probability": dsr,
                    "dsr_probability_threshold": c["dsr_probability_min"],
                    "skew": skew,
                    "kurtosis": kurt,
                    "n_obs": n,
                },
            ),
            "permutation_p": judge("permutation_p", float(permutation_p), c),
        }
    )
