"""The evaluate pipeline: load, infer, diagnose, every option, backtests, HIFA, one write.

``evaluate`` does all the heavy work first (inference is cached in the store by checkpoint hash,
dataset hash and inference settings), then writes the whole run in one transaction: an
interrupted run leaves no part of a run behind and earlier runs untouched. (Inference results
enter the cache as they are computed, each in its own transaction: a cache entry is complete or
absent, and an interrupted run's logits are reused by the next.)

Trials for the deflated Sharpe: every option evaluated (the perfect-foresight labels excepted:
they are an upper bound, not a candidate) plus every other value of the HOLD threshold and of the
logit-adjustment tau in the stored sweeps. Each counts once in ``n_trials``, and their Sharpe
ratios give the trial variance.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from flagcore.analysis.backtest import BacktestConfig, simple_returns
from flagcore.analysis.remedies import PeriodInputs
from flagcore.errors import FlagcoreError
from flagcore.store.store import Store, insert_frame, to_json

ROLE_BY_LOSS = {"ce": "baseline", "weighted": "opt1_class_weights", "focal": "opt2_focal",
                "logit_adjusted": "logit_adjusted_loss", "oversample": "oversample", "multitask": "multitask"}
MODEL_ROLES = ("baseline", "opt1_class_weights", "opt2_focal", "logit_adjusted_loss", "oversample", "multitask",
               "walk_forward", "cgdt")
NOT_A_TRIAL = ("opt5_labels",)  # the upper bound, not a strategy one would pick
INFERENCE_SETTINGS = "last-position;float32;v1"


def default_thresholds() -> list[float]:
    """HOLD thresholds swept: coarse where little flips, fine near 1 where a confident model's
    HOLDs start to flip."""
    g = np.concatenate([np.arange(0.35, 0.90, 0.05), np.arange(0.90, 0.99, 0.01), [0.99, 0.995, 0.999, 0.9999, 1.0]])
    return [float(x) for x in np.unique(np.round(g, 4))]


def default_taus() -> list[float]:
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
    device: str | None = None

    def __post_init__(self) -> None:
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

    def resolved_criteria(self) -> dict:
        from flagcore.analysis.hifa import DEFAULT_CRITERIA

        return dict(self.criteria or DEFAULT_CRITERIA)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backtest"] = self.backtest.to_dict()
        d["criteria"] = self.resolved_criteria()
        d.pop("device")
        return d


Progress = Callable[[str, float], None]


def _noop(stage: str, frac: float) -> None:
    pass


# ----------------------------------------------------------------------------- models and logits


@dataclass
class ModelLogits:
    role: str
    model_id: str
    kind: str  # flag-trader, cgdt, predictions
    source: str
    record: dict  # the models table row
    test: np.ndarray  # (n_eval, 3) logits over the evaluation period; for action-only files one-hot
    train: np.ndarray | None  # (n_train, 3) over the training dataset, when it was given and fits
    probs_given: bool = True  # False for a partner file with actions only


def _model_record(model_id: str, kind: str, source: str, config: dict, total: int, trainable: int,
                  provenance: dict) -> dict:
    return {"model_id": model_id, "kind": kind, "source": source, "config": config,
            "total_parameters": total, "trainable_parameters": trainable, "provenance": provenance}


def _cache_settings(settings: str, ds) -> str:
    return f"{settings};bars={ds.attrs.get('slice', 'all')}"


def _cached_or_run(store: Store, model_id: str, ds, run: Callable[[], tuple[np.ndarray, np.ndarray]],
                   settings: str, stats: dict) -> np.ndarray:
    settings = _cache_settings(settings, ds)
    cached = store.cached_logits(model_id, ds.content_hash, settings)
    if cached is not None and len(cached) == ds.n_bars:
        # prefetched by this evaluate's tasks: computed now, not found from an earlier run
        stats["computed" if (model_id, ds.content_hash, settings) in stats.get("fresh", ()) else "cached"] += 1
        return cached[["logit_sell", "logit_hold", "logit_buy"]].to_numpy(np.float64)
    logits, short = run()
    store.put_inference(model_id, ds.content_hash, settings, np.asarray(logits, np.float64), short)
    stats["computed"] += 1
    return np.asarray(logits, np.float64)


def flag_trader_settings(info) -> str:
    """The inference-cache settings of a FLAG-TRADER checkpoint (its ``checkpoint_info``)."""
    return f"{INFERENCE_SETTINGS};window={info.config.window}"


def flag_trader_logits(store: Store, model, role: str, test, train, stats: dict, device=None,
                       progress: Progress = _noop) -> ModelLogits:
    """Logits of a FLAG-TRADER (from ``checkpoint.load_checkpoint``) on both periods, cached."""
    from flagcore.models.inference import predict
    from flagcore.models.flag_trader import count_parameters

    info = model.checkpoint_info
    path = info.path
    total, trainable = count_parameters(model)
    rec = _model_record(info.sha256, "flag-trader", str(path), info.config.to_dict(), total, trainable,
                        {"source_format": info.source_format, **info.meta.to_dict()})
    settings = flag_trader_settings(info)

    def runner(ds, label):
        def run():
            p = predict(model, ds.features, device=device,
                        progress=lambda d, n: progress(f"{role}: inference on {label}", d / n))
            return p.logits, p.short_history
        return run

    full = _cached_or_run(store, info.sha256, test, runner(test, "test"), settings, stats)
    tr = None
    if train is not None:
        tr = _cached_or_run(store, info.sha256, train, runner(train, "train"), settings, stats)[train.eval_index:]
    return ModelLogits(role, info.sha256, "flag-trader", str(path), rec, full[test.eval_index:], tr)


def _cgdt_id(path) -> str:
    from flagcore.models.checkpoint import file_sha256

    return file_sha256(Path(path) / "model.safetensors" if Path(path).is_dir() else path)


def cgdt_logits(store: Store, path, test, train, stats: dict, progress: Progress = _noop) -> ModelLogits:
    from flagcore.models.cgdt import describe_cgdt, load_cgdt, predict_cgdt

    model = load_cgdt(path)
    mid = _cgdt_id(path)
    d = describe_cgdt(model)
    n_params = int(d["policy_params"] + d["critic_params"])
    rec = _model_record(mid, "cgdt", str(path), d["config"], n_params, n_params,
                        {k: v for k, v in d.items() if k != "config"})

    def runner(ds, label):
        def run():
            p = predict_cgdt(model, ds, progress=lambda a, n: progress(f"cgdt: inference on {label}", a / n))
            return p.logits, p.short_history
        return run

    full = _cached_or_run(store, mid, test, runner(test, "test"), INFERENCE_SETTINGS, stats)
    tr = None if train is None else _cached_or_run(store, mid, train, runner(train, "train"), INFERENCE_SETTINGS,
                                                   stats)[train.eval_index:]
    return ModelLogits("cgdt", mid, "cgdt", str(path), rec, full[test.eval_index:], tr)


def file_logits(path, role: str, test, train) -> ModelLogits:
    """Another model's predictions file (``flagcore predict`` / ``walk-forward`` output, or any
    file with timestamp and logits or actions), aligned to the evaluated bars."""
    from flagcore.models.checkpoint import file_sha256
    from flagcore.data.dataset import load_predictions

    pf = load_predictions(path)
    e = test.eval_index
    aligned = pf.align(test.timestamps[e:])
    probs_given = aligned.logits is not None
    te = aligned.logits.astype(np.float64) if probs_given else _one_hot_logits(aligned.action)
    tr = None
    if train is not None and train.timestamps[train.eval_index:].isin(pf.timestamps).all():
        a = pf.align(train.timestamps[train.eval_index:])
        tr = a.logits.astype(np.float64) if a.logits is not None else _one_hot_logits(a.action)
    mid = file_sha256(path)
    rec = _model_record(mid, "predictions", str(path), {}, 0, 0, {"bars": len(pf.timestamps),
                                                                 "has_logits": probs_given})
    return ModelLogits(role, mid, "predictions", str(path), rec, te, tr, probs_given)


def _inference_task(_shared, job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One checkpoint on one dataset, wherever ``tasks.run_tasks`` puts it (a worker, a Ray node)."""
    kind, path, ds, device, model_id = job
    if kind == "cgdt":
        from flagcore.models.cgdt import load_cgdt, predict_cgdt

        found = _cgdt_id(path)
        p = predict_cgdt(load_cgdt(path), ds)
    else:
        from flagcore.models.checkpoint import load_checkpoint
        from flagcore.models.inference import predict

        model = load_checkpoint(path)
        found = model.checkpoint_info.sha256
        p = predict(model, ds.features, device=device)
    if found != model_id:
        raise FlagcoreError(f"{path}: changed while it was being evaluated (content hash differs)")
    return p.logits, p.short_history


def prefetch_inference(store: Store, checkpoints: list[tuple[str, str, str, str]], datasets: list, stats: dict,
                       placement, device=None, progress: Progress = _noop) -> None:
    """The inference of many checkpoints as tasks (``tasks.run_tasks``): every (checkpoint,
    dataset) pair not in the store's cache is computed where ``placement`` says and cached, so the
    ``*_logits`` calls that follow read it. ``checkpoints``: ``(kind, path, model_id, settings)``."""
    from flagcore.training.tasks import run_tasks

    todo = []
    for kind, path, model_id, settings in checkpoints:
        for ds in datasets:
            key = _cache_settings(settings, ds)
            cached = store.cached_logits(model_id, ds.content_hash, key)
            if cached is None or len(cached) != ds.n_bars:
                todo.append((kind, path, ds, device, model_id, key))
    if not todo:
        return
    label = f"inference: {len(todo)} tasks, {placement.describe()}"
    results = run_tasks(_inference_task, [t[:5] for t in todo], placement=placement,
                        progress=lambda d, n: progress(label, d / n))
    fresh = stats.setdefault("fresh", set())
    for (_, _, ds, _, model_id, key), (logits, short) in zip(todo, results):
        store.put_inference(model_id, ds.content_hash, key, np.asarray(logits, np.float64), short)
        fresh.add((model_id, ds.content_hash, key))


def _one_hot_logits(actions: np.ndarray) -> np.ndarray:
    # an action-only file: logits whose softmax puts all but 1e-6 on the action, so argmax and
    # confidence read back the file's action
    out = np.full((len(actions), 3), np.log(1e-6 / 2))
    out[np.arange(len(actions)), actions] = 0.0
    return out


def parse_retrained(spec: str) -> tuple[str | None, str]:
    """``ROLE=PATH`` or ``PATH`` (role read from the checkpoint's training loss)."""
    if "=" in spec:
        role, path = spec.split("=", 1)
        if role not in MODEL_ROLES or role == "baseline":
            raise FlagcoreError(f"--retrained {spec!r}: unknown role {role!r}; choose one of "
                                f"{', '.join(r for r in MODEL_ROLES if r != 'baseline')}")
        return role, path
    return None, spec


def _role_of_checkpoint(model, path) -> str:
    loss = (model.checkpoint_info.meta.provenance or {}).get("loss")
    role = ROLE_BY_LOSS.get(loss)
    if role is None or role == "baseline":
        raise FlagcoreError(f"--retrained {path}: cannot tell which option it is (training loss {loss!r}); "
                            f"name it as ROLE=PATH")
    return role


def _is_checkpoint(path) -> bool:
    from flagcore.models.checkpoint import file_kind

    p = Path(path)
    if p.is_dir():
        return True
    try:
        return file_kind(p) in ("safetensors", "torch")
    except FlagcoreError:
        return False


# ----------------------------------------------------------------------------- evaluation


def _period_inputs(models: dict[str, ModelLogits], ds, period: str,
                   partner: ModelLogits | None) -> PeriodInputs | None:
    from flagcore.data.dataset import periods_per_year

    if period == "test":
        logits = {r: m.test for r, m in models.items()}
    else:
        if any(m.train is None for r, m in models.items() if r == "baseline"):
            return None
        logits = {r: m.train for r, m in models.items() if m.train is not None}
    sl = slice(ds.eval_index, None)  # the training stretch starts after its lead-in of history too
    if ds.close is None:
        raise FlagcoreError(f"{ds.source}: needs a 'close' column to backtest")
    out = PeriodInputs(logits, None if ds.labels is None else ds.labels[sl], ds.close[sl],
                       periods_per_year(ds.timestamps[sl]) or 8760.0)
    if partner is not None:
        x = partner.test if period == "test" else partner.train
        if x is not None:
            out.partner_actions = x.argmax(1).astype(np.int8)
            if partner.probs_given:
                from flagcore.analysis.diagnostics import softmax
                out.partner_probs = softmax(x)
    return out


def label_prior(labels) -> np.ndarray | None:
    """Class shares of the resolved labels (floored at 1e-6): the prior that logit adjustment divides out."""
    y = np.asarray(labels)
    known = y[y >= 0]
    if known.size == 0:
        return None
    return np.maximum(np.bincount(known, minlength=3) / known.size, 1e-6)


@dataclass
class RunResult:
    """Everything one run computed, ready for the store."""

    name: str
    settings: dict
    summary: dict
    models: dict[str, ModelLogits]
    test_bars: pd.DataFrame
    train_bars: pd.DataFrame | None
    options: dict  # option -> compare_options result with "hifa", "cpcv", "permutation"
    diagnostics: dict  # option -> section -> value
    sweeps: pd.DataFrame
    dataset_records: list[dict]
    request_key: str
    baseline_train_logits: np.ndarray | None


def _sweep(test: PeriodInputs, train: PeriodInputs | None, cfg: BacktestConfig, option: str, param: str, grid, base_kw) -> tuple:
    from flagcore.analysis.remedies import compare_options

    rows, returns = [], []
    for v in grid:
        kw = dict(base_kw)
        kw[param] = v
        r = compare_options(test, train, cfg=cfg, options=[option], **kw)[option]
        bt = r["backtest"]
        rows.append({"parameter": param, "value": float(v), "trades": int(bt["trades"]), "sharpe": float(bt["sharpe"]),
                     "total_return": float(bt["total_return"]), "share_hold": float(r["action_shares"]["HOLD"])})
        returns.append(bt["returns"])
    return rows, np.vstack(returns)


def compute_run(models: dict[str, ModelLogits], test, train=None, *, partner: ModelLogits | None = None,
                settings: EvaluateSettings | None = None, name: str | None = None,
                progress: Progress = _noop, full_train=None) -> RunResult:
    """All the numbers of one run, from logits already computed: pure computation, no store.

    ``train`` is the stretch of the training period the models were run on (payoff ratios,
    training-period signals); ``full_train`` (default ``train``) gives the label prior and the
    feature-shift reference.
    """
    full_train = full_train if full_train is not None else train
    from flagcore.analysis.diagnostics import diagnose, feature_shift
    from flagcore.analysis.hifa import (
        hifa_verdict,
        permutation_test,
        posthoc_cpcv,
        probability_of_backtest_overfitting,
    )
    from flagcore.analysis.remedies import agreement, compare_options, label_analysis

    s = settings or EvaluateSettings()
    crit = s.resolved_criteria()
    cfg = s.backtest
    if "baseline" not in models:
        raise FlagcoreError("a run needs the baseline model's logits")
    te = _period_inputs(models, test, "test", partner)
    tr = _period_inputs(models, train, "train", partner) if train is not None else None
    prior = None if full_train is None or full_train.labels is None else label_prior(full_train.labels)
    if tr is not None and prior is not None:
        tr.prior = prior
    progress("options", 0.0)
    base_kw = {"hold_threshold": s.hold_threshold, "tau": s.tau}
    options = compare_options(te, tr, cfg=cfg, **base_kw)
    progress("sweeps", 0.2)
    thr_rows, thr_R = _sweep(te, tr, cfg, "opt3_threshold", "hold_threshold", s.thresholds, base_kw)
    sweep_rows = list(thr_rows)
    tau_R = None
    if "logit_adjust" in options:
        tau_rows, tau_R = _sweep(te, tr, cfg, "logit_adjust", "tau", s.taus, base_kw)
        sweep_rows += tau_rows

    # the trials the deflated Sharpe counts: every candidate option, plus every other swept value
    r = simple_returns(te.close)
    trial_returns = [o["backtest"]["returns"] for k, o in options.items() if k not in NOT_A_TRIAL]
    trial_returns += [row for row, v in zip(thr_R, s.thresholds, strict=True) if v != s.hold_threshold]
    if tau_R is not None:
        trial_returns += [row for row, v in zip(tau_R, s.taus, strict=True) if v != s.tau]
    tried = len(trial_returns)
    # a swept value that changes nothing repeats a strategy already counted: one trial, not two
    trial_matrix = np.unique(np.vstack(trial_returns), axis=0)  # (n_trials, T)
    sd = trial_matrix.std(axis=1, ddof=1)
    trial_sharpes = np.where(sd > 1e-15, trial_matrix.mean(1) / np.where(sd > 1e-15, sd, 1.0), 0.0)
    n_trials = int(trial_matrix.shape[0])
    pbo = probability_of_backtest_overfitting(trial_matrix.T, s.pbo_blocks)

    h = int(test.label_horizon or 0)
    progress("validation", 0.4)
    for i, (k, o) in enumerate(options.items()):
        bt = o["backtest"]
        held = bt["positions"][:-1]
        costs = held * r - bt["returns"]
        perm = permutation_test(held, r, crit["n_permutations"], block=int(crit["permutation_block"]),
                                seed=s.permutation_seed, costs=costs)
        if k == "opt3_threshold":
            cp = posthoc_cpcv(thr_R, s.thresholds, n_groups=int(crit["cpcv_groups"]),
                              n_test_groups=int(crit["cpcv_test_groups"]), purge=h, embargo=h,
                              parameter="hold_threshold")
        elif k == "logit_adjust" and tau_R is not None:
            cp = posthoc_cpcv(tau_R, s.taus, n_groups=int(crit["cpcv_groups"]),
                              n_test_groups=int(crit["cpcv_test_groups"]), purge=h, embargo=h, parameter="tau")
        else:
            cp = posthoc_cpcv(bt["returns"][None], [None], n_groups=int(crit["cpcv_groups"]),
                              n_test_groups=int(crit["cpcv_test_groups"]), purge=h, embargo=h, parameter="none")
        verdict = hifa_verdict(cpcv_path_sharpes=cp.path_sharpes, returns=bt["returns"], n_trials=n_trials,
                               trial_sharpes=trial_sharpes, permutation_p=perm.p_value,
                               periods_per_year=te.periods_per_year, criteria=crit)
        verdict["cpcv_mean_sharpe"].inputs.update({"mode": cp.mode, "parameter": cp.parameter,
                                                      "fitted": cp.fitted, "purge": h, "embargo": h,
                                                      "groups": cp.n_groups, "test_groups": cp.n_test_groups})
        verdict["permutation_p"].inputs.update({"n_permutations": perm.n_permutations, "block": perm.block,
                                                   "observed_sharpe_annual": perm.observed_sharpe
                                                   * np.sqrt(te.periods_per_year)})
        o["hifa"], o["cpcv"], o["permutation"] = verdict, cp, perm
        o["is_trial"] = k not in NOT_A_TRIAL
        progress("validation", 0.4 + 0.5 * (i + 1) / len(options))

    diags: dict[str, dict] = {}
    for role, m in models.items():
        if role in options:
            diags[role] = diagnose(m.test, te.labels)
    if full_train is not None:
        e = test.eval_index
        diags.setdefault("baseline", {})["feature_shift"] = feature_shift(
            full_train.features, test.features[e:], names=_input_names(test), padded_inputs=test.padded_inputs)
    if "opt5_labels" in options and test.labels is not None:
        diags["opt5_labels"] = label_analysis(full_train.labels if full_train is not None and full_train.labels is not None
                                              else np.array([], np.int8), te.labels)
    if "opt4_ensemble" in options:
        diags["opt4_ensemble"] = {"agreement": agreement(models["baseline"].test.argmax(1), te.partner_actions)}

    e = test.eval_index
    test_bars = pd.DataFrame({"period": "test", "bar": np.arange(test.n_bars - e, dtype=np.int32),
                              "timestamp": test.timestamps[e:], "close": test.close[e:],
                              "label": (test.labels[e:] if test.labels is not None
                                        else np.full(test.n_bars - e, -1)).astype(np.int8)})
    train_bars = None
    if tr is not None:
        f = train.eval_index
        m = train.n_bars - f
        train_bars = pd.DataFrame({"period": "train", "bar": np.arange(m, dtype=np.int32),
                                   "timestamp": train.timestamps[f:], "close": train.close[f:],
                                   "label": (train.labels[f:] if train.labels is not None
                                             else np.full(m, -1)).astype(np.int8)})
    base = options.get("baseline")
    summary = {
        "n_trials": n_trials, "trials_tried": tried, "label_prior": None if prior is None else prior.tolist(),
        "trial_sharpe_variance": float(trial_sharpes.var(ddof=1)) if n_trials > 1 else 0.0,
        "trials": {"options": [k for k in options if k not in NOT_A_TRIAL], "hold_thresholds": len(s.thresholds) - (
            s.hold_threshold in s.thresholds), "taus": (len(s.taus) - (s.tau in s.taus)) if tau_R is not None else 0},
        "pbo": pbo.pbo, "pbo_combinations": pbo.n_combinations, "pbo_blocks": pbo.n_blocks,
        "collapse": diags.get("baseline", {}).get("collapse"),
        "baseline_hold_share": None if base is None else base["action_shares"]["HOLD"],
        "periods_per_year": te.periods_per_year, "evaluated_bars": int(test.n_bars - e),
        "label_horizon": h, "options_passing_hifa": [k for k, o in options.items() if o["hifa"].passed_all and k not in NOT_A_TRIAL],
        "payoff_sources": {k: o["payoff_source"] for k, o in options.items()},
        "payoff_period": None if train is None else {  # after the lead-in that only gives windows history
            "bars": int(train.n_bars - train.eval_index), "start": train.timestamps[train.eval_index].isoformat(),
            "end": train.timestamps[-1].isoformat()},
    }
    key = request_key(models, test, full_train, partner, s)
    return RunResult(name or Path(test.source).stem, s.to_dict(), summary, models, test_bars, train_bars, options,
                     diags, pd.DataFrame(sweep_rows), [_dataset_record(test)] + (
                         [_dataset_record(full_train)] if full_train is not None else []), key,
                     models["baseline"].train)


def recent(ds, bars: int, history: int):
    """The last ``bars`` bars of a training dataset, preceded by ``history`` bars that only give the
    first windows their full history (``evaluation_start`` marks where the stretch begins)."""
    if bars < 1:
        raise FlagcoreError(f"the payoff stretch needs at least one bar, got {bars}")
    first = max(0, ds.n_bars - bars)
    start = max(0, first - history)
    out = ds.slice(start, ds.n_bars)
    out.evaluation_start = ds.timestamps[first]
    out.attrs = {**ds.attrs, "slice": f"{start}:{ds.n_bars}"}
    return out


def _input_names(ds) -> list[str]:
    return list(ds.feature_names) + [f"padding_{j}" for j in ds.padded_inputs]


def _dataset_record(ds) -> dict:
    e = ds.eval_index
    return {"dataset_id": ds.content_hash, "source": ds.source, "bars": ds.n_bars, "evaluated_bars": ds.n_bars - e,
            "features": ds.n_features, "state_dim": ds.state_dim, "feature_names": to_json(ds.feature_names),
            "padded_inputs": to_json(ds.padded_inputs), "label_horizon": ds.label_horizon,
            "label_shares": to_json(ds.label_shares()), "first_timestamp": ds.timestamps[0],
            "last_timestamp": ds.timestamps[-1], "evaluation_start": ds.timestamps[e] if e < ds.n_bars else None}


def request_key(models: dict[str, ModelLogits], test, train, partner, settings: EvaluateSettings) -> str:
    from flagcore import __version__

    parts = {"models": {r: m.model_id for r, m in sorted(models.items())}, "test": test.content_hash,
             "train": None if train is None else train.content_hash,
             "partner": None if partner is None else partner.model_id, "settings": settings.to_dict(),
             "version": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- the write


def _option_rows(run: RunResult) -> tuple[pd.DataFrame, ...]:
    from flagcore.analysis.remedies import OPTIONS

    order = {k: i for i, k in enumerate(OPTIONS)}
    res_rows, pred_frames, hifa_rows, cpcv_rows, perm_rows = [], [], [], [], []
    n = len(run.test_bars)
    for k, o in run.options.items():
        bt, sh = o["backtest"], o["action_shares"]
        passed = o["hifa"].n_passed
        metrics = {m: v for m, v in bt.items() if m not in ("equity", "returns", "positions")}
        metrics.update({m: o.get(m) for m in ("accuracy", "majority_baseline", "balanced_accuracy", "macro_f1",
                                              "mcc", "cohen_kappa")})
        metrics.update({"payoff_source": o["payoff_source"], "is_trial": o["is_trial"], "action_counts":
                        o["action_counts"], "hifa_passed_all": o["hifa"].passed_all})
        res_rows.append({"option": k, "ordinal": order.get(k, len(order)), "title": o["title"],
                         "description": o["description"], "share_sell": sh["SELL"], "share_hold": sh["HOLD"],
                         "share_buy": sh["BUY"], "accuracy": o.get("accuracy"),
                         "balanced_accuracy": o.get("balanced_accuracy"), "macro_f1": o.get("macro_f1"),
                         "trades": int(bt["trades"]), "total_return": bt["total_return"], "sharpe": bt["sharpe"],
                         "sharpe_defined": bool(bt["sharpe_defined"]), "max_drawdown": bt["max_drawdown"],
                         "hifa_passed": passed, "metrics": to_json(metrics)})
        src = run.models.get(k) or (run.models["baseline"] if k != "opt5_labels" else None)
        lg = src.test if src is not None else np.full((n, 3), np.nan)
        equity = np.concatenate([[1.0], bt["equity"]])  # equity at each bar's close, 1 at the first
        net = np.concatenate([bt["returns"], [np.nan]])  # return earned from bar t to t+1
        pred_frames.append(pd.DataFrame({
            "option": k, "period": "test", "bar": np.arange(n, dtype=np.int32),
            "logit_sell": lg[:, 0], "logit_hold": lg[:, 1], "logit_buy": lg[:, 2],
            "action": np.asarray(o["actions"], np.int8), "confidence": np.asarray(o["confidence"], np.float64),
            "position": bt["positions"], "net_return": net, "equity": equity}))
        for c, v in o["hifa"].criteria.items():
            hifa_rows.append({"option": k, "criterion": c, "value": v.value, "threshold": v.threshold,
                              "rule": v.rule, "passed": bool(v.passed), "inputs": to_json(v.inputs)})
        cp = o["cpcv"]
        for p, sr in enumerate(cp.path_sharpes):
            cpcv_rows.append({"option": k, "mode": cp.mode, "path": p,
                              "sharpe": float(sr * np.sqrt(run.summary["periods_per_year"]))})
        perm = o["permutation"]
        perm_rows.append({"option": k, "observed_sharpe": perm.observed_sharpe, "p_value": perm.p_value,
                          "block": perm.block, "null_sharpes": perm.null_sharpes.astype(np.float64).tolist()})
    if run.baseline_train_logits is not None and run.train_bars is not None:
        lg = run.baseline_train_logits
        m = len(run.train_bars)
        pred_frames.append(pd.DataFrame({
            "option": "baseline", "period": "train", "bar": np.arange(m, dtype=np.int32),
            "logit_sell": lg[:, 0], "logit_hold": lg[:, 1], "logit_buy": lg[:, 2],
            "action": lg.argmax(1).astype(np.int8), "confidence": np.nan, "position": np.nan,
            "net_return": np.nan, "equity": np.nan}))
    return (pd.DataFrame(res_rows), pd.concat(pred_frames, ignore_index=True), pd.DataFrame(hifa_rows),
            pd.DataFrame(cpcv_rows), pd.DataFrame(perm_rows))


def write_run(store: Store, run: RunResult, *, fail_after: str | None = None) -> int:
    """Write one run in one transaction; returns its id. ``fail_after`` (tests only) raises after
    the named table is written, to check that nothing of the run survives."""
    from flagcore import __version__
    from flagcore.store.store import utc_now

    res, preds, hifa_rows, cpcv_rows, perm_rows = _option_rows(run)
    bars = pd.concat([b for b in (run.test_bars, run.train_bars) if b is not None], ignore_index=True)
    diag_rows = [{"option": o, "section": sec, "value": to_json(v)}
                 for o, d in run.diagnostics.items() for sec, v in d.items()]
    with store.write() as con:
        for rec in run.dataset_records:
            con.execute("""INSERT INTO datasets SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
                           WHERE NOT EXISTS (SELECT 1 FROM datasets WHERE dataset_id = ?)""",
                        [rec["dataset_id"], rec["source"], rec["bars"], rec["evaluated_bars"], rec["features"],
                         rec["state_dim"], rec["feature_names"], rec["padded_inputs"], rec["label_horizon"],
                         rec["label_shares"], rec["first_timestamp"], rec["last_timestamp"],
                         rec["evaluation_start"], utc_now(), rec["dataset_id"]])
        for m in run.models.values():
            r = m.record
            con.execute("""INSERT INTO models SELECT ?, ?, ?, ?, ?, ?, ?, ?
                           WHERE NOT EXISTS (SELECT 1 FROM models WHERE model_id = ?)""",
                        [r["model_id"], r["kind"], r["source"], to_json(r["config"]), r["total_parameters"],
                         r["trainable_parameters"], to_json(r["provenance"]), utc_now(), r["model_id"]])
        train_id = run.dataset_records[1]["dataset_id"] if len(run.dataset_records) > 1 else None
        run_id = con.execute("""INSERT INTO runs (name, created_at, model_id, dataset_id, train_dataset_id, settings,
                                                  summary, flagcore_version, request_key)
                                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id""",
                             [run.name, utc_now(), run.models["baseline"].model_id, run.dataset_records[0]["dataset_id"],
                              train_id, to_json(run.settings), to_json(run.summary), __version__,
                              run.request_key]).fetchall()[0][0]
        tables = [("run_models", pd.DataFrame([{"role": r, "model_id": m.model_id} for r, m in run.models.items()])),
                  ("run_bars", bars), ("option_results", res), ("predictions", preds),
                  ("diagnostics", pd.DataFrame(diag_rows)), ("cpcv_paths", cpcv_rows),
                  ("hifa_criteria", hifa_rows), ("permutation_nulls", perm_rows), ("sweeps", run.sweeps)]
        for table, df in tables:
            df = df.copy()
            df.insert(0, "run_id", run_id)
            insert_frame(con, table, df)
            if fail_after == table:
                raise RuntimeError(f"injected failure after writing {table}")
    return int(run_id)


# ----------------------------------------------------------------------------- the command


def evaluate(checkpoint, data, *, store: Store, train_data=None, partner=None, retrained=(), name: str | None = None,
             settings: EvaluateSettings | None = None, progress: Progress = _noop, reuse: bool = False,
             placement=None) -> dict:
    """``flagcore evaluate``: every option of one checkpoint on one dataset, written as one run.

    Returns ``{"run_id", "reused", "inference": {"computed", "cached"}, "seconds"}``. With
    ``reuse`` an identical earlier request (same models, data and settings) returns its run. With a
    parallel ``placement`` (``tasks.Placement``: local workers or a Ray cluster) the checkpoints'
    inference runs as tasks there; the run is the same as in one process.
    """
    import time

    from flagcore.models.checkpoint import is_cgdt, load_checkpoint
    from flagcore.data.dataset import check_disjoint, load_dataset, periods_per_year

    t0 = time.perf_counter()
    s = settings or EvaluateSettings()
    base_model = load_checkpoint(checkpoint)
    cfg = base_model.checkpoint_info.config
    test = load_dataset(data, state_dim=cfg.state_dim)
    if test.close is None:
        raise FlagcoreError(f"{data}: needs a 'close' column to backtest")
    if test.n_bars < cfg.window:
        raise FlagcoreError(f"{data}: {test.n_bars} bars, fewer than the model's window of {cfg.window}")
    crit, h = s.resolved_criteria(), int(test.label_horizon or 0)
    # every CPCV group must outlast its purge and embargo, and the permutation test needs two blocks
    need = 1 + max(2 * int(crit["permutation_block"]), 2 * s.pbo_blocks, int(crit["cpcv_groups"]) * (2 * h + 2))
    if test.n_bars - test.eval_index < need:
        raise FlagcoreError(f"{data}: {test.n_bars - test.eval_index} evaluated bars; the backtest and its "
                            f"validation need at least {need} (label horizon {h})")
    train = full_train = None
    if train_data is not None:
        full_train = load_dataset(train_data, state_dim=cfg.state_dim)
        check_disjoint(full_train, test)
        if full_train.close is None:
            raise FlagcoreError(f"{train_data}: needs a 'close' column to estimate payoff ratios")
        # the bar count of payoff_years follows from the data's own spacing (hourly, daily, ...)
        ppy = periods_per_year(full_train.timestamps)
        bars = full_train.n_bars if ppy is None else max(1, round(ppy * s.payoff_years))
        train = recent(full_train, bars, history=cfg.window - 1)
    stats = {"computed": 0, "cached": 0}
    # every checkpoint first, so that their inference can run as tasks side by side
    specs = []  # (role, path, kind, loaded FLAG-TRADER or None)
    for spec in retrained:
        role, path = parse_retrained(str(spec))
        if not _is_checkpoint(path):
            if role is None:
                raise FlagcoreError(f"--retrained {path}: a predictions file needs its role, as ROLE={path}")
            specs.append((role, path, "file", None))
        elif is_cgdt(path):
            specs.append((role or "cgdt", path, "cgdt", None))
        else:
            rm = load_checkpoint(path)
            specs.append((role or _role_of_checkpoint(rm, path), path, "flag-trader", rm))
        if specs[-1][0] in ["baseline"] + [r for r, *_ in specs[:-1]]:
            raise FlagcoreError(f"--retrained {path}: a second model for {specs[-1][0]!r}")
    partner_is_cgdt = partner is not None and _is_checkpoint(partner) and is_cgdt(partner)
    if partner is not None and not partner_is_cgdt and _is_checkpoint(partner):
        raise FlagcoreError(f"--partner {partner}: a FLAG-TRADER checkpoint; the partner is a CGDT checkpoint "
                            f"or a predictions file")
    if placement is not None and placement.parallel:
        flag_traders = [base_model] + [m for _, _, kind, m in specs if kind == "flag-trader"]
        cgdts = [p for _, p, kind, _ in specs if kind == "cgdt"] + ([partner] if partner_is_cgdt else [])
        jobs = [("flag-trader", str(m.checkpoint_info.path), m.checkpoint_info.sha256,
                 flag_trader_settings(m.checkpoint_info)) for m in flag_traders]
        jobs += [("cgdt", str(p), _cgdt_id(p), INFERENCE_SETTINGS) for p in cgdts]
        prefetch_inference(store, list(dict.fromkeys(jobs)), [test] + ([train] if train is not None else []),
                           stats, placement, s.device, progress)
    models: dict[str, ModelLogits] = {}
    models["baseline"] = flag_trader_logits(store, base_model, "baseline", test, train, stats, s.device, progress)
    for role, path, kind, rm in specs:
        if kind == "cgdt":
            m = cgdt_logits(store, path, test, train, stats, progress)
        elif kind == "flag-trader":
            m = flag_trader_logits(store, rm, role, test, train, stats, s.device, progress)
        else:
            m = file_logits(path, role, test, train)
        m.role = role
        models[role] = m
    partner_m = None
    if partner is not None:
        if partner_is_cgdt:
            partner_m = cgdt_logits(store, partner, test, train, stats, progress)
            models.setdefault("cgdt", partner_m)
        else:
            partner_m = file_logits(partner, "partner", test, train)
            models["partner"] = partner_m  # recorded with the run; no option reads it by this name
    if reuse:
        key = request_key(models, test, full_train, partner_m, s)
        found = store.find_run(key)
        if found is not None:
            return {"run_id": found, "reused": True, "inference": _counts(stats),
                    "seconds": round(time.perf_counter() - t0, 2)}
    run = compute_run(models, test, train, partner=partner_m, settings=s, name=name, progress=progress,
                      full_train=full_train)
    progress("writing", 0.95)
    run_id = write_run(store, run)
    progress("done", 1.0)
    return {"run_id": run_id, "reused": False, "inference": _counts(stats),
            "seconds": round(time.perf_counter() - t0, 2)}


def _counts(stats: dict) -> dict:
    return {"computed": stats["computed"], "cached": stats["cached"]}
