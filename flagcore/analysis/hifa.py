"""HIFA validation statistics, the public face: one import for the statistics and the gate.

The work is done in four modules; this one re-exports their public names, so that callers can
write ``from flagcore.analysis.hifa import hifa_verdict, permutation_test`` without knowing where
each lives:

- :mod:`flagcore.analysis.dsr`: probabilistic and deflated Sharpe ratios, the expected maximum
  Sharpe of N trials, the moments they read (Bailey & Lopez de Prado 2012, 2014);
- :mod:`flagcore.analysis.cpcv`: combinatorial purged cross-validation, its splits and paths, and
  post-hoc CPCV of a fitted rule (Lopez de Prado 2018, ch. 7 and 12);
- :mod:`flagcore.analysis.permutation`: the block permutation test (Phipson & Smyth 2010);
- :mod:`flagcore.analysis.pbo`: the probability of backtest overfitting (Bailey et al. 2017);
- :mod:`flagcore.analysis.gate`: the criteria's thresholds and the verdict of one option.

All Sharpe ratios are per period (not annualised) unless a name says ``annual``; kurtosis is the
raw kurtosis (normal = 3); every Sharpe goes through :mod:`flagcore.analysis.sharpe`.
"""

from __future__ import annotations

from flagcore.analysis.cpcv import (
    CPCVSplit,
    PostHocCPCV,
    cpcv_paths,
    cpcv_splits,
    group_indices,
    posthoc_cpcv,
)
from flagcore.analysis.dsr import (
    EULER_GAMMA,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from flagcore.analysis.gate import (
    DEFAULT_CRITERIA,
    CriterionResult,
    HifaVerdict,
    hifa_verdict,
    judge,
    load_criteria,
)
from flagcore.analysis.pbo import PBOResult, probability_of_backtest_overfitting
from flagcore.analysis.permutation import PermutationResult, block_permutations, permutation_test

__all__ = [
    "CPCVSplit", "PostHocCPCV", "cpcv_paths", "cpcv_splits", "group_indices", "posthoc_cpcv",
    "EULER_GAMMA", "deflated_sharpe_ratio", "expected_max_sharpe", "probabilistic_sharpe_ratio",
    "sharpe_moments",
    "DEFAULT_CRITERIA", "CriterionResult", "HifaVerdict", "hifa_verdict", "judge", "load_criteria",
    "PBOResult", "probability_of_backtest_overfitting",
    "PermutationResult", "block_permutations", "permutation_test",
]
