"""One market of the gate's calibration (``benchmarks/gate_calibration.py``) evaluated and judged:
the run an evaluation computes on its test period (``pipeline.run.compute_run``), read as the gate's
answer (did any candidate option pass every criterion, and which criteria did the work); and the
synthetic logits the tests feed it instead of trained models' inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- one market judged


@dataclass
class MarketOutcome:
    """What the gate said on one market."""

    seed: int
    strength: float
    passed: bool  # some candidate option passed every criterion
    passing: list[str]  # the candidate options that did
    n_trials: int
    n_candidates: int
    criterion_any: dict[str, bool]  # criterion -> some candidate passed it
    criterion_options: dict[str, int]  # criterion -> how many candidates passed it
    blocked_only_by: dict[str, bool]  # criterion -> some candidate passed every other criterion but not it
    seconds: dict[str, float] = field(default_factory=dict)  # market, inference, compute, total

    def to_dict(self) -> dict:
        return asdict(self)


def criteria_keys() -> list[str]:
    """The gate's criteria in ``vocab.CRITERIA`` order, with the deflated Sharpe's two readings."""
    from flagcore.vocab import CRITERIA

    return [c.key for c in CRITERIA] + ["dsr_haircut", "dsr_probability"]


def _criterion_passes(verdict) -> dict[str, bool]:
    out = {k: bool(c.passed) for k, c in verdict.criteria.items()}
    inputs = verdict["deflated_sharpe"].inputs
    out["dsr_haircut"] = bool(inputs["haircut_passed"])
    out["dsr_probability"] = bool(inputs["probability_passed"])
    return out


def judge_run(run, seed: int, strength: float) -> MarketOutcome:
    """A computed run (``compute_run``'s ``RunResult``) read as the gate's answer on one market."""
    from flagcore.vocab import NOT_A_TRIAL

    gate = [c for c in criteria_keys() if not c.startswith("dsr_")]
    candidates = {k: o for k, o in run.options.items() if k not in NOT_A_TRIAL}
    passes = {k: _criterion_passes(o["hifa"]) for k, o in candidates.items()}
    passing = [k for k, o in candidates.items() if o["hifa"].passed_all]
    if sorted(passing) != sorted(run.summary["options_passing_hifa"]):  # one reading of the gate, not two
        raise AssertionError(
            f"passing options {passing} differ from the run's {run.summary['options_passing_hifa']}"
        )
    keys = criteria_keys()
    return MarketOutcome(
        seed=int(seed),
        strength=float(strength),
        passed=bool(passing),
        passing=passing,
        n_trials=int(run.summary["n_trials"]),
        n_candidates=len(candidates),
        criterion_any={c: any(p[c] for p in passes.values()) for c in keys},
        criterion_options={c: sum(p[c] for p in passes.values()) for c in keys},
        blocked_only_by={
            c: any(not p[c] and all(p[o] for o in gate if o != c) for p in passes.values()) for c in gate
        },
    )


def evaluate_market(
    test_p: Path,
    train_p: Path,
    logits_for: Callable[[Any, Any], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    *,
    model_ids: Mapping[str, str] | None = None,
    settings=None,
):
    """The run an evaluation computes on one market's test period: ``compute_run`` over each model's
    logits. ``logits_for(test, train)`` gives ``({role: test-period logits}, {role: training-stretch
    logits})`` (after each dataset's lead-in); the role "cgdt" is the ensemble partner too."""
    from flagcore.models.flag_trader import preset
    from flagcore.pipeline.evaluate import load_evaluation_data
    from flagcore.pipeline.inference_cache import ModelLogits
    from flagcore.pipeline.run import compute_run
    from flagcore.pipeline.settings import EvaluateSettings

    s = settings or EvaluateSettings()
    test, train, full_train = load_evaluation_data(test_p, train_p, preset("demo"), s)
    test_logits, train_logits = logits_for(test, train)
    ids = dict(model_ids or {})
    models = {
        r: ModelLogits(
            r, ids.get(r, r), "cgdt" if r == "cgdt" else "flag-trader", r, {}, x, train_logits.get(r)
        )
        for r, x in test_logits.items()
    }
    return compute_run(
        models,
        test,
        train,
        partner=models.get("cgdt"),
        settings=s,
        name="gate-calibration",
        full_train=full_train,
    )


# ----------------------------------------------------------------------------- synthetic logits (tests)


def synthetic_logits(n: int, rng: np.random.Generator, labels=None, edge: float = 0.0) -> np.ndarray:
    """(n, 3) logits: standard normal noise, plus ``edge`` on the logit of each bar's label (a
    planted edge: the label is the triple-barrier outcome ahead, so ``edge`` > 0 leaks the future).
    With ``edge`` 0 they carry no information about the market."""
    x = rng.standard_normal((n, 3))
    if edge:
        y = np.asarray(labels)
        known = y >= 0
        x[np.flatnonzero(known), y[known]] += edge
    return x
