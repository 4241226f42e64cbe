"""What an evaluation is asked to compute: :class:`EvaluateSettings` and the progress callback.

The settings are recorded with every run (``to_dict``) and are part of its request key, so a
repeated request with the same settings can reuse the stored run. Two fields are not settings of
the computation and stay out of both: ``device`` (where it runs) and ``author`` (who asked for it,
recorded in the run's ``author`` column).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from flagcore.analysis.backtest import BacktestConfig
from flagcore.errors import FlagcoreError
from flagcore.vocab import CALIBRATIONS, PRECISIONS

Progress = Callable[[str, float], None]
MAX_AUTHOR = 200  # as a reviewer's name (store.store.MAX_REVIEWER)


def no_progress(stage: str, frac: float) -> None:
    """The progress callback that reports nothing."""


def time_left(frac: float, elapsed: float) -> float | None:
    """Seconds a stage still needs at the pace so far: ``elapsed * (1 - frac) / frac``.

    Parameters
    ----------
    frac : float
        The stage's fraction done (clipped to [0, 1]).
    elapsed : float
        Seconds since the stage began.

    Returns
    -------
    float or None
        None before the stage has made progress (nothing to extrapolate from); 0 when it is done.

    Examples
    --------
    >>> time_left(0.25, 30.0)
    90.0
    >>> time_left(0.0, 30.0) is None
    True
    """
    f = min(max(float(frac), 0.0), 1.0)
    if f <= 0.0 or elapsed <= 0.0:
        return None
    return float(elapsed) * (1.0 - f) / f


def duration_text(seconds: float) -> str:
    """A time left in words, rounded as a person would read it: ``about 45 s``, ``about 1 min 20 s``
    (5 s steps), ``about 2 h 5 min``.

    Examples
    --------
    >>> duration_text(80.4), duration_text(3.2), duration_text(7500)
    ('about 1 min 20 s', 'about 3 s', 'about 2 h 5 min')
    """
    s = max(0.0, float(seconds))
    if s < 59.5:
        return f"about {max(1, round(s))} s"
    if s < 3570:
        m, sec = divmod(int(round(s / 5) * 5), 60)
        return f"about {m} min" + (f" {sec} s" if sec else "")
    h, m = divmod(int(round(s / 60)), 60)
    return f"about {h} h" + (f" {m} min" if m else "")


def progress_text(stage: str, frac: float, elapsed: float) -> str:
    """A progress line with the stage's time left: ``inference: 43% - about 1 min 20 s left``
    (no estimate before the stage has made progress, none once it is done).

    Examples
    --------
    >>> progress_text("validation", 0.5, 40.0)
    'validation: 50% - about 40 s left'
    """
    f = min(max(float(frac), 0.0), 1.0)
    left = time_left(f, elapsed)
    head = f"{stage}: {f:.0%}"
    return head if left is None or f >= 1.0 else f"{head} - {duration_text(left)} left"


def default_thresholds() -> list[float]:
    """HOLD thresholds swept: coarse where little flips, fine near 1 where a confident model's
    HOLDs start to flip."""
    g = np.concatenate(
        [np.arange(0.35, 0.90, 0.05), np.arange(0.90, 0.99, 0.01), [0.99, 0.995, 0.999, 0.9999, 1.0]]
    )
    return [float(x) for x in np.unique(np.round(g, 4))]


def default_taus() -> list[float]:
    """Logit-adjustment taus swept: 0 to 3 in steps of 0.25."""
    return [float(x) for x in np.round(np.arange(0.0, 3.0001, 0.25), 4)]


@dataclass
class EvaluateSettings:
    hold_threshold: float = 0.95  # the seed's option-3 threshold
    tau: float = 1.0  # logit adjustment: 1 is the Bayes rule for balanced error
    thresholds: list[float] = field(default_factory=default_thresholds)
    taus: list[float] = field(default_factory=default_taus)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    criteria: dict | None = None  # HIFA thresholds (hifa.load_criteria); None: the seed's
    permutation_seed: int = 0
    pbo_blocks: int = 16
    payoff_years: float = 1.0  # the training period's last year: payoff ratios and training-period signals
    # bars of that stretch the models infer: None, all of them; else blocks of payoff_block bars spread
    # over it (analysis.backtest.sample_blocks), the payoff ratio with its standard error
    payoff_sample: int | None = None
    payoff_block: int = 250
    # the FLAG-TRADER inference's arithmetic: "fp32", or "int8" (dynamic quantisation of the Linear
    # layers on the CPU; its agreement with fp32 is measured and stored with the run)
    precision: str = "fp32"
    # bars per year for annualising; None: the evaluated dataset's calendar (data.calendar)
    periods_per_year: float | None = None
    # the probabilities Kelly sizing reads: the model's ("none"), or calibrated on the training
    # period ("isotonic", "platt"; analysis.calibration)
    calibration: str = "none"
    device: str | None = None
    # who asks for the run: the CLI's --author (default the OS user), the dashboard's reviewer identity
    author: str | None = None

    def __post_init__(self) -> None:
        if self.author is not None:
            self.author = self.author.strip() or None
            if self.author is not None and len(self.author) > MAX_AUTHOR:
                raise FlagcoreError(f"author: at most {MAX_AUTHOR} characters, got {len(self.author)}")
        if not 0.0 <= self.hold_threshold <= 1.0:
            raise FlagcoreError(f"hold_threshold must lie in [0, 1], got {self.hold_threshold!r}")
        if self.tau < 0:
            raise FlagcoreError(f"tau must be >= 0, got {self.tau!r}")
        if not self.thresholds or any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise FlagcoreError("thresholds must be values in [0, 1]")
        if not self.taus or any(t < 0 for t in self.taus):
            raise FlagcoreError("taus must be values >= 0")
        if not self.payoff_years > 0:
            raise FlagcoreError(f"payoff_years must be > 0, got {self.payoff_years!r}")
        self._check_payoff_sample()
        if self.precision not in PRECISIONS:
            raise FlagcoreError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.periods_per_year is not None and not (
            np.isfinite(self.periods_per_year) and self.periods_per_year > 0
        ):
            raise FlagcoreError(f"periods_per_year must be > 0, got {self.periods_per_year!r}")
        if self.calibration not in CALIBRATIONS:
            raise FlagcoreError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )

    def _check_payoff_sample(self) -> None:
        if (
            isinstance(self.payoff_block, bool)
            or not isinstance(self.payoff_block, int)
            or self.payoff_block < 2
        ):
            raise FlagcoreError(
                f"payoff_block must be a whole number of bars >= 2, got {self.payoff_block!r}"
            )
        n = self.payoff_sample
        if n is None:
            return
        if isinstance(n, bool) or not isinstance(n, int) or n < 2 * self.payoff_block:
            raise FlagcoreError(
                f"payoff sample must be a whole number of bars >= {2 * self.payoff_block} "
                f"(two blocks of {self.payoff_block}, for its standard error), got {n!r}"
            )

    @property
    def payoff_blocks(self) -> int | None:
        """Blocks in the payoff sample (None: the whole stretch)."""
        return None if self.payoff_sample is None else self.payoff_sample // self.payoff_block

    def resolved_criteria(self) -> dict:
        from flagcore.analysis.gate import DEFAULT_CRITERIA

        return dict(self.criteria or DEFAULT_CRITERIA)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backtest"] = self.backtest.to_dict()
        d["criteria"] = self.resolved_criteria()
        d.pop("device")
        d.pop("author")  # who asked is not what was computed: the request key and supersession ignore it
        return d
