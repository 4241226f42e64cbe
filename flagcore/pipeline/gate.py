"""``flagcore gate``: may this run ship? Its HIFA decision and its review status, as one exit code.

The HIFA part is ``validate --gate``'s (:func:`flagcore.pipeline.validate.gate_decision` over the
stored criteria re-judged with the team's thresholds); the review part is the run's status under
the team's review policy (``Store.run_status``). Exit codes (``GATE_CODES``):

- 0: HIFA passed and the run is approved;
- 4: HIFA failed (the same code as ``validate --gate``), whatever the reviews say;
- 5: HIFA passed but the run is not approved: awaiting review, needs work, rejected or superseded
  (the line says which);
- 6: HIFA passed on lower-precision (int8) inference whose actions equal fp32's on under
  ``vocab.AGREEMENT_MIN`` of the sampled bars, or were not compared: the verdict may be the
  precision's, not the model's, so the run is evaluated again in fp32 first, whatever the reviews say.

The CLI keeps its own codes: 1 bad input (no such run, a bad config file), 2 usage, 3 internal error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flagcore.analysis.review_policy import ReviewPolicy, RunStatus
from flagcore.pipeline.validate import GATE_FAILED, GATE_PASSED, GateDecision, gate_decision, rejudge
from flagcore.store.store import Store
from flagcore.vocab import AGREEMENT_MIN

GATE_NOT_APPROVED = 5
GATE_LOW_AGREEMENT = 6
GATE_CODES = {
    GATE_PASSED: "HIFA passed and the run is approved",
    GATE_FAILED: "HIFA failed: no candidate option passes every criterion",
    GATE_NOT_APPROVED: "HIFA passed but the run is not approved (awaiting review, needs work, rejected or "
    "superseded)",
    GATE_LOW_AGREEMENT: "HIFA passed on int8 inference that agrees with fp32 on under "
    f"{AGREEMENT_MIN:.0%} of the sampled actions: evaluate again in fp32",
}


def low_agreement(settings: dict, summary: dict) -> list[str]:
    """Why a run's lower-precision inference cannot stand for the model: each role whose actions
    equal fp32's on under ``AGREEMENT_MIN`` of the sampled bars, or were never compared; empty for
    an fp32 run. ``settings`` and ``summary`` as ``Store.run`` gives them."""
    if (settings or {}).get("precision", "fp32") == "fp32":
        return []
    out = []
    for role, inf in ((summary or {}).get("inference") or {}).items():
        if (inf or {}).get("precision", "fp32") == "fp32":
            continue
        a = inf.get("agreement")
        if not a:
            out.append(f"{role}: {inf['precision']} never compared with fp32")
        elif float(a["actions_equal_share"]) < AGREEMENT_MIN:
            out.append(
                f"{role}: {inf['precision']} actions equal fp32's on {float(a['actions_equal_share']):.1%} "
                f"of {int(a['bars_sampled']):,} sampled bars"
            )
    return out


@dataclass(frozen=True)
class ReleaseGate:
    """A run's gate: its HIFA decision, its review status, the exit code and the line that explains it."""

    run_id: int
    hifa: GateDecision
    review: RunStatus
    exit_code: int
    low_agreement: tuple[str, ...] = ()  # ``low_agreement``'s reasons: HIFA's pass is int8's, not fp32's

    @property
    def message(self) -> str:
        review = f"the run is {self.review.status} ({'; '.join(self.review.reasons)})"
        if not self.hifa.passed:
            return f"{self.hifa.message}; {review}"
        if self.low_agreement:
            return (
                f"{self.hifa.message}, but on int8 inference ({'; '.join(self.low_agreement)}, under "
                f"{AGREEMENT_MIN:.0%}): evaluate again in fp32; {review}"
            )
        joiner = "and" if self.review.approved else "but"
        return f"{self.hifa.message}, {joiner} {review}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "exit_code": self.exit_code,
            "passed": self.exit_code == GATE_PASSED,
            "message": self.message,
            "hifa": self.hifa.to_dict(),
            "review": self.review.to_dict(),
            "low_agreement": list(self.low_agreement),
        }


def release_gate(
    store: Store, run_id: int, criteria: dict | None = None, policy: ReviewPolicy | None = None
) -> tuple[ReleaseGate, dict]:
    """The gate of a stored run, and the HIFA report (:func:`rejudge`) it was decided on.

    Parameters
    ----------
    store : Store
    run_id : int
    criteria : dict, optional
        HIFA thresholds to judge the stored values against (the team config's ``[hifa]``); default
        the run's own.
    policy : ReviewPolicy, optional
        The team's review policy; default ``ReviewPolicy()``.
    """
    report = rejudge(store, run_id, criteria)
    hifa = gate_decision(report)
    review = store.run_status(run_id, policy)
    run = store.run(run_id)
    low = tuple(low_agreement(run["settings"], run["summary"]))
    code = GATE_PASSED if review.approved else GATE_NOT_APPROVED
    if low:
        code = GATE_LOW_AGREEMENT
    if not hifa.passed:
        code = GATE_FAILED
    return ReleaseGate(int(run_id), hifa, review, code, low), report
