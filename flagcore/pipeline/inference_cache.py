"""Every model's logits for a run, computed once: inference cached in the store.

A model's logits on a dataset are stored under (model id, dataset hash, inference settings): the
model id is the checkpoint's content hash, so the same checkpoint on the same data is never run
twice. Each cache entry enters the store in its own transaction (complete or absent), so an
interrupted evaluation's logits are reused by the next. :func:`prefetch_inference` runs many
checkpoints as tasks (``tasks.run_tasks``: local workers or a Ray cluster) before the ``*_logits``
functions read them back. :class:`InferenceStats` counts what was computed and what was found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flagcore.errors import FlagcoreError
from flagcore.pipeline.settings import Progress, no_progress
from flagcore.store.store import Store
from flagcore.vocab import LOGIT_COLUMNS, N_CLASSES, PRECISIONS

INFERENCE_SETTINGS = "last-position;float32;v1"
# int8 logits are cached apart from float32 ones (``flag_trader_settings``)
# v2: per-channel int8 weights, fused q/k/v and weight-derived smoothing (models/int8.py), batch 16;
# int8 logits depend on the batch (one activation scale per batch), so a batch change bumps it too;
# v3: the same products packed for oneDNN, each batch on one torch thread (inference.in_order)
INT8_SETTINGS = "last-position;int8-dynamic;v3"
# the bars an int8 evaluation also runs in float32 to measure their agreement (``agreement_bars``)
AGREEMENT_SHORT, AGREEMENT_FULL = 16, 240
AGREEMENT_SAMPLE = (
    f"{AGREEMENT_SHORT} short-history bars evenly over bars 0..W-2 and {AGREEMENT_FULL} bars evenly "
    "over bars W-1..n-1 of the test file (W the window, n its bars); every bar of a file of <= 256"
)

# a cache entry's key: (model id, dataset content hash, cache settings)
CacheKey = tuple[str, str, str]


@dataclass
class InferenceStats:
    """What one evaluation's inference did: logits computed now, and logits found in the cache.

    ``fresh`` holds the cache entries this evaluation's own tasks computed (``prefetch_inference``):
    reading them back counts as computed, not as cached.
    """

    computed: int = 0
    cached: int = 0
    fresh: set[CacheKey] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        """``{"computed", "cached"}``: what ``evaluate`` reports."""
        return {"computed": self.computed, "cached": self.cached}


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
    precision: str = "fp32"  # the FLAG-TRADER inference precision (vocab.PRECISIONS)
    # int8 only: its agreement with float32 on a sample of bars (``measure_agreement``)
    agreement: dict | None = None


def model_record(
    model_id: str, kind: str, source: str, config: dict, total: int, trainable: int, provenance: dict
) -> dict:
    """A row of the store's ``models`` table (``created_at`` is added when it is written)."""
    return {
        "model_id": model_id,
        "kind": kind,
        "source": source,
        "config": config,
        "total_parameters": total,
        "trainable_parameters": trainable,
        "provenance": provenance,
    }


# a dataset's attrs key: the bars whose logits are read, where not all are (a payoff sample's
# blocks, whose history bars only give their windows history); the other bars' logits are NaN
READ_BARS = "read_bars"


def flag_trader_inference(
    model, ds, device=None, precision: str = "fp32", progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A FLAG-TRADER's logits (n_bars, 3) and short-history flags (n_bars,) on dataset ``ds``:
    every bar (``inference.predict``), or only the bars ``ds.attrs[READ_BARS]`` names
    (``inference.predict_bars``), the others NaN."""
    from flagcore.models.inference import predict, predict_bars

    bars = ds.attrs.get(READ_BARS)
    if bars is None:
        p = predict(model, ds.features, device=device, precision=precision, progress=progress)
        return p.logits, p.short_history
    logits = np.full((ds.n_bars, N_CLASSES), np.nan)
    logits[bars] = predict_bars(
        model, ds.features, bars, device=device, precision=precision, progress=progress
    )
    return logits, np.arange(ds.n_bars) < model.checkpoint_info.config.window - 1


def cache_settings(settings: str, ds) -> str:
    """The cache's settings key of a model's inference ``settings`` on dataset ``ds`` (its slice too)."""
    return f"{settings};bars={ds.attrs.get('slice', 'all')}"


def _cached_or_run(
    store: Store,
    model_id: str,
    ds,
    run: Callable[[], tuple[np.ndarray, np.ndarray]],
    settings: str,
    stats: InferenceStats,
) -> np.ndarray:
    settings = cache_settings(settings, ds)
    cached = store.cached_logits(model_id, ds.content_hash, settings)
    if cached is not None and len(cached) == ds.n_bars:
        # prefetched by this evaluate's tasks: computed now, not found from an earlier run
        if (model_id, ds.content_hash, settings) in stats.fresh:
            stats.computed += 1
        else:
            stats.cached += 1
        return cached[list(LOGIT_COLUMNS)].to_numpy(np.float64)
    logits, short = run()
    store.put_inference(model_id, ds.content_hash, settings, np.asarray(logits, np.float64), short)
    stats.computed += 1
    return np.asarray(logits, np.float64)


def flag_trader_settings(info, precision: str = "fp32") -> str:
    """The inference-cache settings of a FLAG-TRADER checkpoint (its ``checkpoint_info``) run in
    ``precision``; float32's string is the one caches have always used."""
    if precision not in PRECISIONS:
        raise FlagcoreError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    base = INT8_SETTINGS if precision == "int8" else INFERENCE_SETTINGS
    return f"{base};window={info.config.window}"


def settings_precision(settings: str) -> str:
    """The precision an inference-cache settings string names (``flag_trader_settings``)."""
    return "int8" if settings.startswith("last-position;int8-dynamic;") else "fp32"


def agreement_bars(n: int, window: int) -> np.ndarray:
    """The sorted bars of a file of ``n`` bars that ``measure_agreement`` runs in both precisions:
    ``AGREEMENT_SAMPLE``, or every bar of a file of 256 bars or fewer."""
    if n <= AGREEMENT_SHORT + AGREEMENT_FULL:
        return np.arange(n, dtype=np.int64)
    short = min(window - 1, n)
    a = np.linspace(0, short - 1, min(AGREEMENT_SHORT, short)).round() if short else np.empty(0)
    b = np.linspace(short, n - 1, min(AGREEMENT_FULL, n - short)).round() if n > short else np.empty(0)
    return np.unique(np.concatenate([a, b]).astype(np.int64))


def measure_agreement(
    store: Store, model, ds, int8_logits: np.ndarray, stats: InferenceStats, device=None, progress=None
) -> dict:
    """How far int8 logits of dataset ``ds`` lie from float32 on ``agreement_bars``.

    The float32 logits of the sample come from the cache: the whole file's when float32 ran on it
    before, else the sample's own entry, computed (``predict_bars``) and cached here once.
    Returns ``{"bars_sampled", "actions_equal_share", "max_abs_logit_diff", "sample"}``.
    """
    from flagcore.models.inference import predict_bars

    info = model.checkpoint_info
    bars = agreement_bars(ds.n_bars, info.config.window)
    fp32 = flag_trader_settings(info)
    whole = store.cached_logits(info.sha256, ds.content_hash, cache_settings(fp32, ds))
    if whole is not None and len(whole) == ds.n_bars:
        ref = whole[list(LOGIT_COLUMNS)].to_numpy(np.float64)[bars]
    else:
        key = cache_settings(f"{fp32};agreement-sample={len(bars)}", ds)
        cached = store.cached_logits(info.sha256, ds.content_hash, key)
        if cached is not None and len(cached) == len(bars):
            ref = cached[list(LOGIT_COLUMNS)].to_numpy(np.float64)
            stats.cached += 1
        else:
            if progress:
                progress(0.0)
            step = None if progress is None else (lambda d, n: progress(d / n))
            ref = predict_bars(model, ds.features, bars, device=device, progress=step).astype(np.float64)
            store.put_inference(info.sha256, ds.content_hash, key, ref, bars < info.config.window - 1)
            stats.computed += 1
    got = np.asarray(int8_logits, np.float64)[bars]
    return {
        "bars_sampled": int(len(bars)),
        "actions_equal_share": float((got.argmax(1) == ref.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(got - ref).max()),
        "sample": AGREEMENT_SAMPLE,
    }


def flag_trader_logits(
    store: Store,
    model,
    role: str,
    test,
    train,
    stats: InferenceStats,
    device=None,
    progress: Progress = no_progress,
    precision: str = "fp32",
) -> ModelLogits:
    """Logits of a FLAG-TRADER (from ``checkpoint.load_checkpoint``) on both periods, cached.

    ``precision`` "int8" runs the int8 CPU path (``inference.predict``), cached under its own
    settings, and measures its agreement with float32 on a sample of the test file's bars
    (``measure_agreement``), stored in ``agreement``.
    """
    from flagcore.models.flag_trader import count_parameters
    from flagcore.models.inference import check_precision

    check_precision(precision, device)
    info = model.checkpoint_info
    path = info.path
    total, trainable = count_parameters(model)
    rec = model_record(
        info.sha256,
        "flag-trader",
        str(path),
        info.config.to_dict(),
        total,
        trainable,
        {"source_format": info.source_format, **info.meta.to_dict()},
    )
    settings = flag_trader_settings(info, precision)

    def runner(ds, label):
        def run():
            def step(d: int, n: int) -> None:
                progress(f"{role}: {precision} inference on {label}", d / n)

            return flag_trader_inference(model, ds, device, precision, step)

        return run

    full = _cached_or_run(store, info.sha256, test, runner(test, "test"), settings, stats)
    agreement = None
    if precision == "int8":
        agreement = measure_agreement(
            store, model, test, full, stats, device, lambda f: progress(f"{role}: fp32 agreement sample", f)
        )
    tr = None
    if train is not None:
        tr = _cached_or_run(store, info.sha256, train, runner(train, "train"), settings, stats)[
            train.eval_index :
        ]
    return ModelLogits(
        role,
        info.sha256,
        "flag-trader",
        str(path),
        rec,
        full[test.eval_index :],
        tr,
        precision=precision,
        agreement=agreement,
    )


def cgdt_id(path) -> str:
    """A CGDT checkpoint's model id: the content hash of its weights file."""
    from flagcore.models.checkpoint import file_sha256

    return file_sha256(Path(path) / "model.safetensors" if Path(path).is_dir() else path)


def cgdt_logits(
    store: Store, path, test, train, stats: InferenceStats, progress: Progress = no_progress
) -> ModelLogits:
    """Logits of a CGDT checkpoint on both periods, cached."""
    from flagcore.models.cgdt_file import describe_cgdt, load_cgdt
    from flagcore.models.cgdt_predict import predict_cgdt

    model = load_cgdt(path)
    mid = cgdt_id(path)
    d = describe_cgdt(model)
    n_params = int(d["policy_params"] + d["critic_params"])
    rec = model_record(
        mid, "cgdt", str(path), d["config"], n_params, n_params, {k: v for k, v in d.items() if k != "config"}
    )

    def runner(ds, label):
        def run():
            p = predict_cgdt(model, ds, progress=lambda a, n: progress(f"cgdt: inference on {label}", a / n))
            return p.logits, p.short_history

        return run

    full = _cached_or_run(store, mid, test, runner(test, "test"), INFERENCE_SETTINGS, stats)
    tr = None
    if train is not None:
        tr = _cached_or_run(store, mid, train, runner(train, "train"), INFERENCE_SETTINGS, stats)[
            train.eval_index :
        ]
    return ModelLogits("cgdt", mid, "cgdt", str(path), rec, full[test.eval_index :], tr)


def file_logits(path, role: str, test, train) -> ModelLogits:
    """Another model's predictions file (``flagcore predict`` / ``walk-forward`` output, or any
    file with timestamp and logits or actions), aligned to the evaluated bars."""
    from flagcore.data.predictions import load_predictions
    from flagcore.models.checkpoint import file_sha256

    pf = load_predictions(path)
    e = test.eval_index
    aligned = pf.align(test.timestamps[e:])
    probs_given = aligned.logits is not None
    te = aligned.logits.astype(np.float64) if aligned.logits is not None else one_hot_logits(aligned.action)
    tr = None
    if train is not None and train.timestamps[train.eval_index :].isin(pf.timestamps).all():
        a = pf.align(train.timestamps[train.eval_index :])
        tr = a.logits.astype(np.float64) if a.logits is not None else one_hot_logits(a.action)
    mid = file_sha256(path)
    rec = model_record(
        mid, "predictions", str(path), {}, 0, 0, {"bars": len(pf.timestamps), "has_logits": probs_given}
    )
    return ModelLogits(role, mid, "predictions", str(path), rec, te, tr, probs_given)


def one_hot_logits(actions: np.ndarray) -> np.ndarray:
    """Logits of an action-only file: softmax puts all but 1e-6 on the action, so argmax and
    confidence read back the file's action."""
    out = np.full((len(actions), N_CLASSES), np.log(1e-6 / 2))
    out[np.arange(len(actions)), actions] = 0.0
    return out


@dataclass
class CacheEntry:
    """One model's logits on one dataset, computed elsewhere (a worker process) for the cache."""

    model_id: str
    dataset_id: str  # the dataset's content hash
    settings: str  # the cache's settings key (``cache_settings``)
    logits: np.ndarray  # (n_bars, 3)
    short_history: np.ndarray  # (n_bars,) bool


def infer_entries(kind: str, path, datasets: list, device=None, precision: str = "fp32") -> list[CacheEntry]:
    """A checkpoint's logits on each dataset, as the ``*_logits`` functions compute them, keyed for
    the cache: ``kind`` "flag-trader" (in ``precision``) or "cgdt". Runs in a worker as well as
    here (the demo infers each model where it was trained, beside the other trainings);
    ``put_entries`` stores them."""
    if kind == "cgdt":
        from flagcore.models.cgdt_file import load_cgdt
        from flagcore.models.cgdt_predict import predict_cgdt

        net, mid, settings = load_cgdt(path), cgdt_id(path), INFERENCE_SETTINGS
        out = [(p.logits, p.short_history) for p in (predict_cgdt(net, ds) for ds in datasets)]
    elif kind == "flag-trader":
        from flagcore.models.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        mid, settings = model.checkpoint_info.sha256, flag_trader_settings(model.checkpoint_info, precision)
        out = [flag_trader_inference(model, ds, device, precision) for ds in datasets]
    else:
        raise FlagcoreError(f"{path}: unknown kind of checkpoint {kind!r}")
    return [
        CacheEntry(mid, ds.content_hash, cache_settings(settings, ds), logits, short)
        for ds, (logits, short) in zip(datasets, out, strict=True)
    ]


def put_entries(store: Store, entries: list[CacheEntry], stats: InferenceStats) -> None:
    """Store logits computed elsewhere in the cache; the evaluation that reads them back with
    ``stats`` counts them as computed now, not as found from an earlier run."""
    for e in entries:
        store.put_inference(
            e.model_id, e.dataset_id, e.settings, np.asarray(e.logits, np.float64), e.short_history
        )
        stats.fresh.add((e.model_id, e.dataset_id, e.settings))


def inference_task(_shared, job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One checkpoint on one dataset, wherever ``tasks.run_tasks`` puts it (a worker, a Ray node).

    ``job`` is ``(kind, path, dataset, device, model_id)`` or that and a FLAG-TRADER precision
    (default "fp32"); returns the logits and the short-history flags. Raises when the
    checkpoint's content no longer hashes to ``model_id``.
    """
    kind, path, ds, device, model_id = job[:5]
    precision = job[5] if len(job) > 5 else "fp32"
    if kind == "cgdt":
        from flagcore.models.cgdt_file import load_cgdt
        from flagcore.models.cgdt_predict import predict_cgdt

        found = cgdt_id(path)
        p = predict_cgdt(load_cgdt(path), ds)
        logits, short = p.logits, p.short_history
    else:
        from flagcore.models.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        found = model.checkpoint_info.sha256
        logits, short = flag_trader_inference(model, ds, device, precision)
    if found != model_id:
        raise FlagcoreError(f"{path}: changed while it was being evaluated (content hash differs)")
    return logits, short


def prefetch_inference(
    store: Store,
    checkpoints: list[tuple[str, str, str, str]],
    datasets: list,
    stats: InferenceStats,
    placement,
    device=None,
    progress: Progress = no_progress,
) -> None:
    """The inference of many checkpoints as tasks (``tasks.run_tasks``): every (checkpoint,
    dataset) pair not in the store's cache is computed where ``placement`` says and cached, so the
    ``*_logits`` calls that follow read it. ``checkpoints``: ``(kind, path, model_id, settings)``;
    a FLAG-TRADER runs in the precision its settings name (``flag_trader_settings``)."""
    from flagcore.models.inference import check_precision
    from flagcore.training.tasks import run_tasks

    for kind, _path, _, settings in checkpoints:
        if kind == "flag-trader":
            check_precision(settings_precision(settings), device)  # refused before any task starts
    todo = []
    for kind, path, model_id, settings in checkpoints:
        for ds in datasets:
            key = cache_settings(settings, ds)
            cached = store.cached_logits(model_id, ds.content_hash, key)
            if cached is None or len(cached) != ds.n_bars:
                todo.append((kind, path, ds, device, model_id, settings_precision(settings), key))
    if not todo:
        return
    label = f"inference: {len(todo)} tasks, {placement.describe()}"
    results = run_tasks(
        inference_task,
        [t[:6] for t in todo],
        placement=placement,
        progress=lambda d, n: progress(label, d / n),
    )
    for (_, _, ds, _, model_id, _, key), (logits, short) in zip(todo, results, strict=True):
        store.put_inference(model_id, ds.content_hash, key, np.asarray(logits, np.float64), short)
        stats.fresh.add((model_id, ds.content_hash, key))
