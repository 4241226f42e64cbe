"""The "Root cause" page's live ablation: a sample of evaluated bars inferred again after a fill.

The reviewer picks the inputs and the fill; the steps, and how often each runs:

    ablation_problem    (files there, sha256; no torch)   on view        (the hash cached per file)
    load_ablation_model (checked checkpoint, datasets)    once per run, on demand  (st.cache_resource)
    plan_sample         (a few windows timed)             once per run   (st.cache_resource)
    sample_windows      (the sample's windows, logits)    per (run, bars, seed)  (st.cache_data)
    ablate              (fill, infer again, outcome)      per press of the button, with progress

The sample and the fills are ``flagcore explain``'s own (``pipeline.explain_inputs``:
``sample_bars``, ``median_fill``, ``resample_fill``, ``quantile_fill``), and the outcome of the
logits (action shares, confidence, trades, Sharpe) is ``analysis.root_cause_measures.outcome``, so a
live fill of the padded inputs with the training medians on explain's sample and seed reproduces
explain's padding counterfactual. A big model (over ``BIG_MODEL_PARAMS`` parameters: the ``full``
preset) gets a sample that stays under about ``TIME_BUDGET_S`` seconds per inference, from the
time one small batch of windows takes on this machine (:func:`sample_size_for`). The before/after
table is ``root_cause.outcome_table``, as the stored counterfactuals'.

Torch and the pipeline are imported lazily: the page shows what it can tell from the store and the
files (:func:`ablation_problem`) without them, and loads the model (torch, peft: seconds) only when
the reviewer asks for the live ablation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flagcore.analysis.root_cause_measures import Outcome, outcome
from flagcore.dashboard.root_cause import BIG_MODEL_PARAMS, DEFAULT_BARS, outcome_table
from flagcore.errors import FlagcoreError
from flagcore.models.file_id import file_sha256

MIN_BARS = 20  # as ``pipeline.explain.MIN_BARS``: fewer bars give no backtest worth the name
TIME_BUDGET_S = 30.0  # seconds one inference of the sample may take for a big model
TIMING_WINDOWS = 8  # windows timed to measure the time per window
ABLATION_BATCH = 64  # windows per forward pass (and per step of the progress bar)

FILLS = {
    "median": "training medians",
    "resample": "resampled training rows",
    "quantile": "quantile map onto the training distribution",
}


# ----------------------------------------------------------------------------- the live ablation


@dataclass
class AblationModel:
    """What the live ablation reads for one run: the checked network and the run's inputs."""

    run_id: int
    net: Any  # a frozen, eval-mode FlagTrader (``models.attribution.inference_network``)
    features: np.ndarray  # (n, D) the evaluated dataset's inputs, its history bars included
    close: np.ndarray  # (n,)
    eval_index: int  # the first evaluated bar
    names: list[str]  # the model's input names (``pipeline.run.input_names``)
    padded: list[int]  # the inputs that are zero padding in the evaluated period
    train_features: np.ndarray | None  # (n_train, D), None when the run has no training data
    n_params: int
    periods_per_year: float
    payoff: float = 1.0  # the baseline's Kelly payoff ratio (``explain_inputs.run_trading``)
    backtest: Any = None  # the run's BacktestConfig; None: the defaults
    source: str = ""
    medians: np.ndarray = field(init=False)  # (D,) training medians (the evaluated period's without)

    def __post_init__(self) -> None:
        ref = self.train_features if self.train_features is not None else self.features[self.eval_index :]
        self.medians = np.median(np.asarray(ref, dtype=np.float32), axis=0).astype(np.float32)

    @property
    def window(self) -> int:
        return int(self.net.config.window)

    @property
    def first(self) -> int:
        """The first bar a sample may take: evaluated, with a full window of history."""
        return max(self.eval_index, self.window - 1)

    @property
    def candidates(self) -> int:
        """The evaluated bars a sample is drawn from."""
        return len(self.features) - self.first

    @property
    def big(self) -> bool:
        return self.n_params > BIG_MODEL_PARAMS

    def fills(self) -> dict[str, str]:
        """The fills this run offers (key -> label): all three with training data, else the medians
        of the evaluated period."""
        if self.train_features is None:
            return {"median": "evaluated-period medians (the run has no training data)"}
        return dict(FILLS)


def ablation_problem(
    run: dict,
    models: pd.DataFrame,
    dataset: Callable[[str], dict | None],
    sha256: Callable[[str], str] = file_sha256,
) -> str | None:
    """Why the live ablation cannot run for ``run`` (its row of ``Store.run``), as one line, or None:
    the run has no FLAG-TRADER baseline in ``models`` (``Store.run_models``), its checkpoint is gone
    or changed since the run (``sha256``, the stored model id), or a dataset file (``dataset``: a
    dataset id to its ``Store.dataset`` record) is gone. Reads files and the store only: no torch,
    no model built. The datasets' content hashes are checked when the model is loaded
    (:func:`load_ablation_model`)."""
    run_id = run["run_id"]
    rows = models[models["role"] == "baseline"]
    if rows.empty:
        return f"run {run_id} records no baseline model: the live ablation needs one"
    rec = rows.iloc[0]
    if rec["kind"] != "flag-trader":
        return (
            f"run {run_id}'s baseline is a {rec['kind']} model, not a FLAG-TRADER checkpoint: "
            "the live ablation needs one to infer again"
        )
    source = str(rec["source"])
    if not os.path.isfile(source):
        return f"{source}: run {run_id}'s checkpoint is gone; the live ablation and explain need it"
    if sha256(source) != rec["model_id"]:
        return f"{source}: changed since run {run_id} was evaluated (sha256 differs from the stored model id)"
    for key, what in (("dataset_id", "evaluated"), ("train_dataset_id", "training")):
        if run.get(key):
            ds = dataset(run[key])
            if ds is None:
                return f"run {run_id}'s {what} dataset is not in the store"
            if not os.path.exists(str(ds["source"])):
                return f"{ds['source']}: run {run_id}'s {what} dataset is gone; the live ablation needs it"
    return None


def load_ablation_model(store, run_id: int) -> AblationModel:
    """The run's baseline checkpoint (checked: ``explain_inputs.CheckpointUnavailable`` in one line
    when it is gone or changed) and datasets (content hashes checked), for the live ablation."""
    from flagcore.models.attribution import inference_network
    from flagcore.pipeline.explain_inputs import baseline_record, load_baseline, load_run_dataset, run_trading
    from flagcore.pipeline.run import input_names

    rec = baseline_record(store, run_id)
    if rec["kind"] != "flag-trader":
        raise FlagcoreError(
            f"run {run_id}'s baseline is a {rec['kind']} model, not a FLAG-TRADER checkpoint: "
            "the live ablation needs one to infer again"
        )
    model = load_baseline(rec, run_id)
    run = store.run(run_id)
    state_dim = model.checkpoint_info.config.state_dim
    test = load_run_dataset(store, run, "dataset_id", "evaluated", state_dim)
    if test is None or test.close is None:
        raise FlagcoreError(f"{store.path}: run {run_id}'s evaluated dataset has no close prices")
    train = load_run_dataset(store, run, "train_dataset_id", "training", state_dim)
    ppy, payoff, cfg = run_trading(store, run)
    net = inference_network(model)
    total = rec.get("total_parameters")
    n_params = (
        int(total) if total is not None and total == total else sum(p.numel() for p in net.parameters())
    )
    return AblationModel(
        run_id=int(run_id),
        net=net,
        features=np.asarray(test.features, dtype=np.float32),
        close=np.asarray(test.close, dtype=np.float64),
        eval_index=test.eval_index,
        names=input_names(test),
        padded=list(test.padded_inputs),
        train_features=None if train is None else np.asarray(train.features, dtype=np.float32),
        n_params=n_params,
        periods_per_year=ppy,
        payoff=payoff,
        backtest=cfg,
        source=str(rec["source"]),
    )


def _infer(net, windows: np.ndarray, progress=None, batch: int = ABLATION_BATCH) -> np.ndarray:
    """Logits of ``windows`` in batches of ``batch``, reporting progress after each; the same
    batches for the sample as evaluated and after a fill, so that an unchanged window gives
    identical logits."""
    from flagcore.models.attribution import window_logits

    m = len(windows)
    out = np.empty((m, 3), dtype=np.float64)
    for s in range(0, m, batch):
        out[s : s + batch] = window_logits(net, windows[s : s + batch], batch_size=batch)
        if progress is not None:
            done = min(s + batch, m)
            progress(f"inferring {done:,} of {m:,} bars", done / m)
    return out


@dataclass
class AblationSample:
    """A sample of evaluated bars: their windows, closes and logits as evaluated."""

    rows: np.ndarray  # (m,) rows of the evaluated dataset
    windows: np.ndarray  # (m, W, D) float32
    close: np.ndarray  # (m,)
    stride: int  # every k-th bar: the backtest annualises with periods_per_year / k
    seed: int
    logits: np.ndarray  # (m, 3) the windows as they are
    seconds: float  # the time their inference took

    @property
    def bars(self) -> int:
        return len(self.rows)


def sample_windows(model: AblationModel, bars: int, seed: int) -> AblationSample:
    """``flagcore explain``'s sample (``explain_inputs.sample_bars``) of the evaluated bars, with
    their windows and their logits as they are."""
    from flagcore.models.attribution import bar_windows
    from flagcore.pipeline.explain_inputs import sample_bars

    if isinstance(bars, bool) or not isinstance(bars, (int, np.integer)) or bars < MIN_BARS:
        raise FlagcoreError(f"the sample needs at least {MIN_BARS} bars, got {bars!r}")
    s = sample_bars(model.first, len(model.features), int(bars), int(seed))
    windows = bar_windows(model.features, s.rows, model.window)
    t0 = time.perf_counter()
    logits = _infer(model.net, windows)
    return AblationSample(
        s.rows, windows, model.close[s.rows], s.stride, int(seed), logits, time.perf_counter() - t0
    )


def make_fill(model: AblationModel, kind: str, inputs: Sequence[int], seed: int = 0):
    """The fill ``kind`` (``FILLS``) of ``inputs``: ``explain_inputs``' own fills."""
    from flagcore.pipeline.explain_inputs import median_fill, quantile_fill, resample_fill

    if kind not in model.fills():
        raise FlagcoreError(f"unknown fill {kind!r} for this run; choose one of {', '.join(model.fills())}")
    if kind == "median":
        return median_fill(inputs, model.medians)
    assert model.train_features is not None  # fills() offers the others only with training data
    if kind == "resample":
        return resample_fill(inputs, model.train_features, seed)
    return quantile_fill(inputs, model.features[model.eval_index :], model.train_features)


@dataclass
class Ablation:
    """One live ablation: the sample before and after the fill of the chosen inputs."""

    fill: str  # a key of FILLS
    inputs: list[str]  # the chosen inputs
    changed: list[str]  # the chosen inputs the fill actually changed
    before: Outcome
    after: Outcome
    max_logit_change: float  # the largest |logit change| over the sample's bars and classes
    bars: int
    seconds: float  # the fill and the inference

    def table(self) -> pd.DataFrame:
        return outcome_table(
            {"as evaluated": self.before, f"after the fill ({FILLS.get(self.fill, self.fill)})": self.after}
        )

    def caption(self) -> str:
        n = len(self.inputs)
        unchanged = n - len(self.changed)
        note = f" ({unchanged} of them already held those values)" if unchanged else ""
        return (
            f"{self.bars:,} sampled bars inferred again in {self.seconds:.2f} s after filling {n} input"
            f"{'s' if n != 1 else ''}{note}; the largest logit change is {self.max_logit_change:.3g} nats."
        )


def sample_outcome(model: AblationModel, sample: AblationSample, logits: np.ndarray) -> Outcome:
    """``analysis.root_cause_measures.outcome`` of the sample's logits, annualised with
    periods_per_year / k (each position held for the k bars between samples)."""
    return outcome(
        logits,
        sample.close,
        model.periods_per_year / sample.stride,
        payoff=model.payoff,
        cfg=model.backtest,
    )


def ablate(
    model: AblationModel, sample: AblationSample, kind: str, inputs: Sequence[int], *, progress=None
) -> Ablation:
    """Fill ``inputs`` of the sample's windows with the fill ``kind``, infer them again, and compare
    the outcome with the sample as evaluated. No inputs: the windows are inferred as they are, and
    the outcome is unchanged."""
    idx = [int(j) for j in inputs]
    t0 = time.perf_counter()
    fill = make_fill(model, kind, idx, sample.seed)
    filled = np.asarray(fill(sample.windows.copy()), dtype=np.float32)
    if filled.shape != sample.windows.shape:
        raise FlagcoreError(f"the fill changed the windows' shape to {filled.shape}")
    logits = _infer(model.net, filled, progress)
    seconds = time.perf_counter() - t0
    changed = [model.names[j] for j in idx if not np.array_equal(filled[:, :, j], sample.windows[:, :, j])]
    return Ablation(
        fill=kind,
        inputs=[model.names[j] for j in idx],
        changed=changed,
        before=sample_outcome(model, sample, sample.logits),
        after=sample_outcome(model, sample, logits),
        max_logit_change=float(np.abs(logits - sample.logits).max()) if len(logits) else 0.0,
        bars=sample.bars,
        seconds=seconds,
    )


# ----------------------------------------------------------------------------- sample size from time


def sample_size_for(
    per_window_s: float,
    n_params: int,
    *,
    default: int = DEFAULT_BARS,
    budget_s: float = TIME_BUDGET_S,
    candidates: int | None = None,
) -> int:
    """The page's sample size: ``default`` bars, or for a big model (over ``BIG_MODEL_PARAMS``)
    as many as one inference runs in ``budget_s`` at ``per_window_s`` (at least ``MIN_BARS``);
    never more than the ``candidates`` evaluated bars.

    Examples
    --------
    >>> sample_size_for(0.001, 126_723), sample_size_for(0.1, 87_955_971), sample_size_for(5.0, 87_955_971)
    (500, 300, 20)
    """
    bars = default
    if n_params > BIG_MODEL_PARAMS and per_window_s > 0:
        bars = max(MIN_BARS, min(default, int(budget_s / per_window_s)))
    if candidates is not None:
        bars = min(bars, max(int(candidates), 1))
    return int(bars)


@dataclass
class SamplePlan:
    """The page's default sample, from the time a few windows take on this machine."""

    bars: int
    per_window_s: float
    timed_windows: int
    n_params: int
    big: bool
    budget_s: float
    candidates: int

    def note(self) -> str:
        ms = self.per_window_s * 1000
        took = self.bars * self.per_window_s
        if self.big:
            return (
                f"The baseline has {self.n_params:,} parameters (over {BIG_MODEL_PARAMS / 1e6:.0f} M): "
                f"one window takes {ms:.0f} ms on this machine (timed on {self.timed_windows}), so the "
                f"sample is {self.bars:,} bars, at most about {took:.0f} s per inference (the budget is "
                f"{self.budget_s:.0f} s). More bars take longer."
            )
        return (
            f"The baseline has {self.n_params:,} parameters; one window takes about {ms:.2f} ms on "
            f"this machine (timed in a batch of {self.timed_windows}), so {self.bars:,} bars take "
            f"about {took:.1f} s (longer while other processes keep the cores busy)."
        )


def plan_sample(
    model: AblationModel, *, budget_s: float = TIME_BUDGET_S, timed: int | None = None
) -> SamplePlan:
    """Time one batch of ``timed`` windows of the evaluated period (after a warm-up call, the faster
    of two calls) and size the sample (:func:`sample_size_for`). By default a big model times
    ``TIMING_WINDOWS`` windows (a small batch takes longer per window than the ablation's batches
    of ``ABLATION_BATCH``: the estimate errs on the safe side), a small one a whole batch of
    ``ABLATION_BATCH`` (on a busy machine the fixed cost of a call dominates a small batch)."""
    from flagcore.models.attribution import bar_windows, window_logits

    if timed is None:
        timed = TIMING_WINDOWS if model.big else ABLATION_BATCH
    k = max(1, min(timed, model.candidates))
    rows = np.arange(len(model.features) - k, len(model.features))
    windows = bar_windows(model.features, rows, model.window)
    window_logits(model.net, windows, batch_size=k)  # warm-up: the first call of a shape allocates
    times = []
    for _ in range(2):  # the faster of two: one call slowed by another process does not set the sample
        t0 = time.perf_counter()
        window_logits(model.net, windows, batch_size=k)
        times.append(time.perf_counter() - t0)
    per = min(times) / k
    bars = sample_size_for(per, model.n_params, budget_s=budget_s, candidates=model.candidates)
    return SamplePlan(bars, per, k, model.n_params, model.big, budget_s, model.candidates)
