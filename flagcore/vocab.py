"""The shared words of flagcore: classes, logit columns, options, roles, losses, criteria, verdicts.

Every module that names a class, an option, a model role or a HIFA criterion imports it from here,
so that the order of the classes, an option's title or a criterion's rule is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# ----------------------------------------------------------------------------- classes

CLASS_NAMES = ("SELL", "HOLD", "BUY")  # class ids 0, 1, 2: the order of every logit and probability
SELL, HOLD, BUY = 0, 1, 2
N_CLASSES = len(CLASS_NAMES)
DIRECTION = (-1.0, 0.0, 1.0)  # the position each class takes: short, flat, long
UNLABELLED = -1  # a label not yet resolved (its barrier lies beyond the data)
# how a dataset's label column may spell the classes
LABEL_CODES = {"SELL": SELL, "HOLD": HOLD, "BUY": BUY, "-1": SELL, "0": HOLD, "1": BUY}

LOGIT_COLUMNS = ("logit_sell", "logit_hold", "logit_buy")
PROB_COLUMNS = ("p_sell", "p_hold", "p_buy")

# ----------------------------------------------------------------------------- models

PRESET_NAMES = ("full", "demo")  # FLAG-TRADER presets (models.flag_trader.PRESETS), named without torch
# inference precisions: float32 (any device, bf16 on a GPU through dtype) or int8 dynamic quantisation (CPU)
PRECISIONS = ("fp32", "int8")
# a lower-precision run whose actions equal fp32's on fewer of the sampled bars is flagged: check with fp32
AGREEMENT_MIN = 0.99

# ----------------------------------------------------------------------------- options and roles

# option key -> (title, what it is); the order is the order of the comparison table
OPTIONS: dict[str, tuple[str, str]] = {
    "baseline": ("Baseline (plain CE)", "the model as trained with plain cross-entropy: the seed's setting"),
    "opt1_class_weights": ("1. Class weights", "retrained with class-weighted cross-entropy"),
    "opt2_focal": ("2. Focal loss", "retrained with alpha-balanced focal loss"),
    "opt3_threshold": ("3. HOLD threshold", "second-best action where HOLD's confidence < hold_threshold"),
    "opt4_ensemble": ("4. Ensemble rule", "the partner's BUY/SELL where FLAG-TRADER says HOLD"),
    "opt4_prob_average": ("4b. Probability average", "argmax of the mean of both models' probabilities"),
    "opt5_labels": ("5. Labels (perfect foresight)", "the true labels as signals: the upper bound"),
    "logit_adjust": ("Logit adjustment (post hoc)", "argmax(logit - tau * log prior), no retraining"),
    "logit_adjusted_loss": ("Logit-adjusted loss", "retrained with the logit-adjusted cross-entropy"),
    "oversample": ("Oversampling", "retrained on class-balanced batches"),
    "multitask": ("Multi-task", "retrained with a forward-return head beside the action head"),
    "walk_forward": ("Walk-forward", "remedy 1 fine-tuned every 720 bars on resolved labels"),
    "cgdt": ("CGDT alone", "the ensemble partner on its own"),
}
THRESHOLD_OPTION = "opt3_threshold"  # the option the HOLD-threshold slider recomputes
TAU_OPTION = "logit_adjust"  # the option the tau slider recomputes
LABELS_OPTION = "opt5_labels"  # the labels as a perfect-foresight signal
NOT_A_TRIAL = (LABELS_OPTION,)  # the upper bound, not a strategy one would pick

# training losses (``flagcore train --loss``) and the option each one's model stands for
LOSSES = ("ce", "weighted", "focal", "logit_adjusted", "oversample", "multitask")
ROLE_BY_LOSS = {
    "ce": "baseline",
    "weighted": "opt1_class_weights",
    "focal": "opt2_focal",
    "logit_adjusted": "logit_adjusted_loss",
    "oversample": "oversample",
    "multitask": "multitask",
}
# the roles a model can play in a run: the model under review, its retrained variants, the partner
MODEL_ROLES = (*ROLE_BY_LOSS.values(), "walk_forward", "cgdt")
TRAINABLE_ROLES = tuple(ROLE_BY_LOSS.values())  # what retraining CPCV can retrain
SEED_CLASS_WEIGHTS = (1.0, 0.5, 1.0)  # the seed's remedy 1, SELL/HOLD/BUY


def option_title(option: str) -> str:
    """The option's title, or its key when it is not one of ``OPTIONS``."""
    return OPTIONS.get(option, (option, ""))[0]


# the probabilities Kelly sizing reads: the model's own, or calibrated on the training period
CALIBRATIONS = ("none", "isotonic", "platt")

# ----------------------------------------------------------------------------- HIFA criteria


@dataclass(frozen=True)
class Criterion:
    """One HIFA criterion: its key, label, the comparison and the ``[hifa]`` setting of its threshold."""

    key: str
    label: str
    rule: str  # ">=" or "<"
    threshold_key: str

    def passes(self, value: float, threshold: float) -> bool:
        return bool(value >= threshold) if self.rule == ">=" else bool(value < threshold)

    def rule_text(self, threshold: float) -> str:
        return f"{self.rule} {threshold:g}"


CRITERIA = (
    # a Sharpe from a handful of round trips is noise whatever the bar count: checked first
    Criterion("min_trades", "Trades (independent bets)", ">=", "min_trades"),
    Criterion("cpcv_mean_sharpe", "CPCV mean Sharpe", ">=", "cpcv_mean_sharpe_min"),
    Criterion("deflated_sharpe", "Deflated Sharpe", ">=", "deflated_sharpe_min"),
    Criterion("permutation_p", "Permutation p-value", "<", "permutation_p_max"),
)
CRITERION = {c.key: c for c in CRITERIA}
CRITERION_LABELS = {c.key: c.label for c in CRITERIA}
BADGE = {True: "PASS", False: "FAIL"}

# ----------------------------------------------------------------------------- reviews

VERDICTS = ("approve", "reject", "needs-work")
# where a reviewer's name came from, and how it is shown: a login and a trusted proxy header are
# verified by the server; a typed name is whatever the reviewer typed
IDENTITY_SOURCES = {
    "oidc": "logged in",
    "header": "trusted proxy header",
    "typed": "typed name (unverified)",
}
VERIFIED_SOURCES = ("oidc", "header")
# a run's review status (analysis.review_policy.run_status)
RUN_STATUSES = ("awaiting review", "approved", "needs work", "rejected", "superseded")

# ----------------------------------------------------------------------------- the collapse verdict


def collapse_label(collapse: Mapping[str, Any]) -> str:
    """ "COLLAPSED" or "not collapsed": the one word a table shows for a collapse verdict."""
    return "COLLAPSED" if collapse.get("collapsed") else "not collapsed"


def collapse_sentence(collapse: Mapping[str, Any]) -> str:
    """The collapse verdict as one sentence: status, the reason, and whether a post-hoc fix can work."""
    label = collapse_label(collapse)
    text = f"{label[0].upper()}{label[1:]}: {collapse.get('reason')}."
    outlook = collapse.get("post_hoc_outlook")
    return f"{text} {outlook[0].upper()}{outlook[1:]}." if outlook else text


# ----------------------------------------------------------------------------- root cause of a collapse

# the suspected causes `flagcore explain` tests on the model itself (root-cause.md), in table order
ROOT_CAUSES = {
    "prior": "Class imbalance and plain cross-entropy (the label prior)",
    "padding": "Zero-padded inputs missing at test time",
    "shift": "Distribution shift of the inputs",
    "input_blind": "The model ignores its inputs",
    "overconfidence": "Overconfidence (logits scaled beyond the prior)",
}
CAUSE_VERDICTS = ("supported", "not supported", "inconclusive")
