"""A computed run turned into the store's rows: :func:`run_rows`, and :func:`write_run` that stores it.

The pipeline builds every row and frame here; the store (``Store.write_run``) writes them in one
transaction, so an interrupted run leaves no part of a run behind.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flagcore.pipeline.run import RunResult
from flagcore.store.codec import to_json
from flagcore.store.runs import RunRows
from flagcore.store.store import Store
from flagcore.vocab import CLASS_NAMES, LABELS_OPTION, LOGIT_COLUMNS, N_CLASSES, OPTIONS

# the backtest's per-bar arrays: stored in the predictions table, not among an option's metrics
_PER_BAR = ("equity", "returns", "positions")
_CLASSIFICATION = ("accuracy", "majority_baseline", "balanced_accuracy", "macro_f1", "mcc", "cohen_kappa")


def option_result_row(option: str, o: dict) -> dict:
    """One option's row of the ``option_results`` table."""
    order = {k: i for i, k in enumerate(OPTIONS)}
    bt, sh = o["backtest"], o["action_shares"]
    metrics = {m: v for m, v in bt.items() if m not in _PER_BAR}
    metrics.update({m: o.get(m) for m in _CLASSIFICATION})
    metrics.update(
        {
            "payoff_source": o["payoff_source"],
            "payoff_se": o.get("payoff_se"),  # the payoff ratio's standard error on a sampled stretch
            "is_trial": o["is_trial"],
            "action_counts": o["action_counts"],
            "hifa_passed_all": o["hifa"].passed_all,
            # the signal apart from its sizing: the same actions at unit size, and what Kelly set to 0
            "unit": o.get("unit"),
            "sizing": o.get("sizing"),
        }
    )
    shares = {f"share_{c.lower()}": sh[c] for c in CLASS_NAMES}
    return {
        "option": option,
        "ordinal": order.get(option, len(order)),
        "title": o["title"],
        "description": o["description"],
        **shares,
        "accuracy": o.get("accuracy"),
        "balanced_accuracy": o.get("balanced_accuracy"),
        "macro_f1": o.get("macro_f1"),
        "trades": int(bt["trades"]),
        "total_return": bt["total_return"],
        "sharpe": bt["sharpe"],
        "sharpe_defined": bool(bt["sharpe_defined"]),
        "max_drawdown": bt["max_drawdown"],
        "hifa_passed": o["hifa"].n_passed,
        "metrics": to_json(metrics),
    }


def _logit_columns(logits: np.ndarray) -> dict[str, np.ndarray]:
    return {c: logits[:, j] for j, c in enumerate(LOGIT_COLUMNS)}


def option_predictions(run: RunResult, option: str, o: dict) -> pd.DataFrame:
    """One option's ``predictions`` rows over the test period: logits, actions, positions, equity."""
    n = len(run.test_bars)
    bt = o["backtest"]
    src = run.models.get(option) or (run.models["baseline"] if option != LABELS_OPTION else None)
    lg = src.test if src is not None else np.full((n, N_CLASSES), np.nan)
    equity = np.concatenate([[1.0], bt["equity"]])  # equity at each bar's close, 1 at the first
    net = np.concatenate([bt["returns"], [np.nan]])  # return earned from bar t to t+1
    return pd.DataFrame(
        {
            "option": option,
            "period": "test",
            "bar": np.arange(n, dtype=np.int32),
            **_logit_columns(lg),
            "action": np.asarray(o["actions"], np.int8),
            "confidence": np.asarray(o["confidence"], np.float64),
            "position": bt["positions"],
            "net_return": net,
            "equity": equity,
        }
    )


def baseline_train_predictions(run: RunResult) -> pd.DataFrame | None:
    """The baseline's ``predictions`` rows over the training stretch (logits and argmax only)."""
    if run.baseline_train_logits is None or run.train_bars is None:
        return None
    lg = run.baseline_train_logits
    m = len(run.train_bars)
    return pd.DataFrame(
        {
            "option": "baseline",
            "period": "train",
            "bar": np.arange(m, dtype=np.int32),
            **_logit_columns(lg),
            "action": lg.argmax(1).astype(np.int8),
            "confidence": np.nan,
            "position": np.nan,
            "net_return": np.nan,
            "equity": np.nan,
        }
    )


def validation_rows(run: RunResult, option: str, o: dict) -> tuple[list[dict], list[dict], dict]:
    """One option's ``hifa_criteria`` rows, post-hoc ``cpcv_paths`` rows (annualised Sharpes) and
    ``permutation_nulls`` row."""
    hifa = [
        {
            "option": option,
            "criterion": c,
            "value": v.value,
            "threshold": v.threshold,
            "rule": v.rule,
            "passed": bool(v.passed),
            "inputs": to_json(v.inputs),
        }
        for c, v in o["hifa"].criteria.items()
    ]
    cp = o["cpcv"]
    cpcv = [
        {
            "option": option,
            "mode": cp.mode,
            "path": p,
            "sharpe": float(sr * np.sqrt(run.summary["periods_per_year"])),
        }
        for p, sr in enumerate(cp.path_sharpes)
    ]
    perm = o["permutation"]
    null = {
        "option": option,
        "observed_sharpe": perm.observed_sharpe,
        "p_value": perm.p_value,
        "block": perm.block,
        "null_sharpes": perm.null_sharpes.astype(np.float64).tolist(),
    }
    return hifa, cpcv, null


def run_tables(run: RunResult) -> dict[str, pd.DataFrame]:
    """Every run table's rows (without ``run_id``), in the order they are written."""
    res_rows, pred_frames, hifa_rows, cpcv_rows, perm_rows = [], [], [], [], []
    for k, o in run.options.items():
        res_rows.append(option_result_row(k, o))
        pred_frames.append(option_predictions(run, k, o))
        hifa, cpcv, null = validation_rows(run, k, o)
        hifa_rows += hifa
        cpcv_rows += cpcv
        perm_rows.append(null)
    train = baseline_train_predictions(run)
    if train is not None:
        pred_frames.append(train)
    bars = pd.concat([b for b in (run.test_bars, run.train_bars) if b is not None], ignore_index=True)
    diag_rows = [
        {"option": o, "section": sec, "value": to_json(v)}
        for o, d in run.diagnostics.items()
        for sec, v in d.items()
    ]
    return {
        "run_models": pd.DataFrame([{"role": r, "model_id": m.model_id} for r, m in run.models.items()]),
        "run_bars": bars,
        "option_results": pd.DataFrame(res_rows),
        "predictions": pd.concat(pred_frames, ignore_index=True),
        "diagnostics": pd.DataFrame(diag_rows),
        "cpcv_paths": pd.DataFrame(cpcv_rows),
        "hifa_criteria": pd.DataFrame(hifa_rows),
        "permutation_nulls": pd.DataFrame(perm_rows),
        "sweeps": run.sweeps,
    }


def run_rows(run: RunResult) -> RunRows:
    """A computed run as the store's rows: its datasets, models, the ``runs`` row and every run table."""
    from flagcore import __version__

    train_id = run.dataset_records[1]["dataset_id"] if len(run.dataset_records) > 1 else None
    return RunRows(
        name=run.name,
        request_key=run.request_key,
        flagcore_version=__version__,
        model_id=run.models["baseline"].model_id,
        dataset_id=run.dataset_records[0]["dataset_id"],
        train_dataset_id=train_id,
        settings=run.settings,
        summary=run.summary,
        datasets=list(run.dataset_records),
        models=[m.record for m in run.models.values()],
        tables=run_tables(run),
        author=run.author,
    )


def write_run(store: Store, run: RunResult, *, fail_after: str | None = None) -> int:
    """Write one run in one transaction; returns its id. ``fail_after`` (tests only) raises after
    the named table is written, to check that nothing of the run survives."""
    return store.write_run(run_rows(run), fail_after=fail_after)
