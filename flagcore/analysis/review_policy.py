"""The team's review policy and a run's review status: who signed, and whether that is enough.

The team config file (one TOML file, named by ``--config PATH`` or ``$FLAGCORE_CONFIG``; absent:
the defaults) has three sections: ``[hifa]`` (the HIFA thresholds, as a ``--criteria`` file),
``[review]`` (:class:`ReviewPolicy`) and ``[identity]`` (read by the dashboard alone).

:func:`run_status` is pure: it takes a run's reviews, its author, the policy and the run that
supersedes it (if any), and gives a :class:`RunStatus`. The rules, in the order they decide:

1. a run superseded by a later run (the same checkpoint on the same data, other settings) is
   "superseded", whatever its reviews;
2. each reviewer counts once, by their newest verdict (names compared case-insensitively);
3. with ``rejection_blocks``, a standing reject makes the run "rejected": only a later approve by
   the same reviewer lifts it;
4. "approved" once the approvals reach ``approvals_required``. The author's own approval counts
   only with ``author_may_approve``; a typed (unverified) name's counts only with
   ``count_unverified``;
5. otherwise "rejected" (a standing reject the policy does not let block), "needs work" (a standing
   needs-work verdict) or "awaiting review".
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flagcore.errors import FlagcoreError
from flagcore.vocab import IDENTITY_SOURCES, RUN_STATUSES, VERDICTS, VERIFIED_SOURCES

CONFIG_ENV = "FLAGCORE_CONFIG"  # names the team config file when no --config is given
SECTIONS = ("hifa", "review", "identity")

AWAITING, APPROVED, NEEDS_WORK, REJECTED, SUPERSEDED = RUN_STATUSES


@dataclass(frozen=True)
class ReviewPolicy:
    """The ``[review]`` section of the team config file.

    Attributes
    ----------
    approvals_required : int
        Distinct reviewers whose approval makes a run approved (>= 1).
    author_may_approve : bool
        Whether the run's author may be one of them.
    rejection_blocks : bool
        Whether a standing reject keeps a run from approval (lifted by the same reviewer's approve).
    count_unverified : bool
        Whether typed names (no login, no trusted header) count toward approval; on by default, so
        that a team without a login still works (their approvals are shown "unverified").
    """

    approvals_required: int = 2
    author_may_approve: bool = False
    rejection_blocks: bool = True
    count_unverified: bool = True

    def __post_init__(self) -> None:
        n = self.approvals_required
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise FlagcoreError(f"approvals_required must be a whole number >= 1, got {n!r}")
        for f in fields(self)[1:]:
            if not isinstance(getattr(self, f.name), bool):
                raise FlagcoreError(f"{f.name} must be true or false, got {getattr(self, f.name)!r}")


def team_config_path(path: str | os.PathLike | None = None) -> Path | None:
    """The team config file: ``path``, else ``$FLAGCORE_CONFIG``, else None (the defaults)."""
    if path is not None and str(path) != "":
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else None


def read_team_config(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The team config file's sections (``team_config_path`` resolves ``path``); {} without a file.

    Raises FlagcoreError naming the file for a missing file, bad TOML, an unknown section or a
    section that is not a table.
    """
    p = team_config_path(path)
    if p is None:
        return {}
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise FlagcoreError(f"{p}: no such team config file") from None
    except IsADirectoryError:
        raise FlagcoreError(f"{p}: a folder, not a team config file") from None
    except tomllib.TOMLDecodeError as e:
        raise FlagcoreError(f"{p}: not valid TOML ({e})") from None
    for key, value in data.items():
        if key not in SECTIONS:
            raise FlagcoreError(f"{p}: unknown section or key {key!r}; sections: {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise FlagcoreError(f"{p}: {key} must be a [{key}] section")
    return data


def load_review_policy(path: str | os.PathLike | None = None) -> ReviewPolicy:
    """The ``[review]`` section of the team config file (``path``, else ``$FLAGCORE_CONFIG``);
    the defaults for keys it leaves out, or without a file.

    Examples
    --------
    A file holding ``[review]`` and ``approvals_required = 1`` gives ``ReviewPolicy(approvals_required=1)``;
    the other keys keep their defaults:

    >>> ReviewPolicy(approvals_required=1).author_may_approve
    False
    """
    table = read_team_config(path).get("review", {})
    p = team_config_path(path)
    known = [f.name for f in fields(ReviewPolicy)]
    for key in table:
        if key not in known:
            raise FlagcoreError(f"{p}: unknown [review] key {key!r}; known: {', '.join(known)}")
    try:
        return ReviewPolicy(**table)
    except FlagcoreError as e:
        raise FlagcoreError(f"{p}: [review] {e}") from None


def hifa_section(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The HIFA thresholds the team config file's ``[hifa]`` section sets (checked as a
    ``--criteria`` file is), without the defaults it leaves out; None without a ``[hifa]`` section."""
    from flagcore.analysis.gate import load_criteria

    data = read_team_config(path)
    if "hifa" not in data:
        return None
    full = load_criteria(team_config_path(path))
    return {k: full[k] for k in data["hifa"]}


# ----------------------------------------------------------------------------- the status


@dataclass
class RunStatus:
    """A run's review status under a :class:`ReviewPolicy` (one of ``vocab.RUN_STATUSES``).

    ``approvals`` counts the approvals that count (``approvers``, oldest first; the unverified
    among them also in ``unverified_approvers``); ``rejections`` and ``needs_work`` count the
    reviewers whose newest verdict is that; ``reasons`` says in words why the status is what it is.
    """

    status: str
    approvals: int
    required: int
    approvers: list[str]
    rejections: int
    needs_work: int
    superseded_by: int | None
    reasons: list[str]
    unverified_approvers: list[str] = field(default_factory=list)

    @property
    def approved(self) -> bool:
        return self.status == APPROVED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(name: str) -> str:
    return name.strip().casefold()


def _newest_per_reviewer(reviews: list[dict]) -> dict[str, dict]:
    """Each reviewer's newest review (by ``created_at``, then ``review_id``), keyed by name."""

    def order(r: dict) -> tuple:
        return (str(r.get("created_at") or ""), int(r.get("review_id") or 0))

    out: dict[str, dict] = {}
    for r in sorted(reviews, key=order):
        name = str(r.get("reviewer") or "").strip()
        if not name:
            continue
        verdict = r.get("verdict")
        if verdict not in VERDICTS:
            raise FlagcoreError(f"review by {name!r}: verdict must be one of {', '.join(VERDICTS)}")
        out.pop(_key(name), None)  # re-inserted: the dict keeps reviewers in the order of their newest
        out[_key(name)] = {**r, "reviewer": name}
    return out


def _tally(
    newest: dict, author: str | None, policy: ReviewPolicy
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """Each reviewer's newest verdict sorted into approvers (and which of them are unverified),
    rejecters and needs-work, with the reasons a verdict does not count."""
    author_key = _key(author) if author else None
    approvers, unverified, rejecters, needing, reasons = [], [], [], [], []
    for r in newest.values():
        name, verdict = r["reviewer"], r["verdict"]
        source = r.get("identity_source") or "typed"
        if source not in IDENTITY_SOURCES:
            raise FlagcoreError(
                f"review by {name!r}: identity_source must be one of {', '.join(IDENTITY_SOURCES)}"
            )
        verified = source in VERIFIED_SOURCES
        if not verified and not policy.count_unverified:
            reasons.append(f"{name}'s {verdict} does not count: a typed name, unverified")
            continue
        if verdict == "approve":
            if author_key is not None and _key(name) == author_key and not policy.author_may_approve:
                reasons.append(f"{name}'s approval does not count: {name} is the run's author")
                continue
            approvers.append(name)
            if not verified:
                unverified.append(name)
        elif verdict == "reject":
            rejecters.append(name)
        else:
            needing.append(name)
    return approvers, unverified, rejecters, needing, reasons


def run_status(
    reviews: list[dict],
    author: str | None,
    policy: ReviewPolicy | None = None,
    superseded_by: int | None = None,
) -> RunStatus:
    """A run's review status (see the module docstring for the rules).

    Parameters
    ----------
    reviews : list of dict
        The run's reviews, each with ``reviewer``, ``verdict`` (``vocab.VERDICTS``),
        ``identity_source`` (``vocab.IDENTITY_SOURCES``; missing: "typed") and ``created_at``
        (a datetime or ISO 8601 text; with ``review_id`` it orders the reviews).
    author : str or None
        Who ran the evaluation (None: unknown, as for runs stored before authors were recorded).
    policy : ReviewPolicy, optional
        Default ``ReviewPolicy()``: two approvals, not the author's, a reject blocks.
    superseded_by : int, optional
        The later run that evaluated the same checkpoint on the same data with other settings.

    Returns
    -------
    RunStatus

    Examples
    --------
    >>> rs = run_status([{"reviewer": "ann", "verdict": "approve", "identity_source": "oidc",
    ...                   "created_at": "2026-01-01T10:00:00+00:00"}], author="bob")
    >>> rs.status, rs.approvals, rs.required
    ('awaiting review', 1, 2)
    """
    policy = policy or ReviewPolicy()
    approvers, unverified, rejecters, needing, reasons = _tally(_newest_per_reviewer(reviews), author, policy)
    n, need = len(approvers), policy.approvals_required
    if approvers:
        shown = [f"{a} (unverified)" if a in unverified else a for a in approvers]
        reasons.insert(0, f"{n} of {need} approvals: {', '.join(shown)}")
    else:
        reasons.insert(0, f"0 of {need} approvals")
    if rejecters:
        lifts = "; it blocks approval until they approve" if policy.rejection_blocks else ""
        reasons.append(f"rejected by {', '.join(rejecters)}{lifts}")
    if needing:
        reasons.append(f"needs work says {', '.join(needing)}")
    if superseded_by is not None:
        status = SUPERSEDED
        reasons.insert(0, f"superseded by run {superseded_by}: the same checkpoint and data, other settings")
    elif rejecters and policy.rejection_blocks:
        status = REJECTED
    elif n >= need:
        status = APPROVED
    elif rejecters:
        status = REJECTED
    elif needing:
        status = NEEDS_WORK
    else:
        status = AWAITING
    return RunStatus(
        status, n, need, approvers, len(rejecters), len(needing), superseded_by, reasons, unverified
    )
