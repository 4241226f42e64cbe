"""``flagcore validate``: the HIFA table of a stored run, and retraining CPCV added to it.

``rejudge`` reads the stored criteria and, given other thresholds, judges the same values
against them (the values do not depend on the thresholds; settings that change a value, such as
the number of permutations, need a new ``flagcore evaluate``).

``retrain_validation`` is the second CPCV mode: each trainable option's model is retrained on
every split's purged, embargoed training groups of the training timeline and predicts its test
groups (``train.retrain_cpcv``); each path is backtested with the option's stored sizing and
payoff ratio. Its path Sharpes are appended to the run with mode ``retraining``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from flagcore.analysis.gate import HifaVerdict, judge
from flagcore.errors import FlagcoreError
from flagcore.store.codec import from_json
from flagcore.store.schema import RETRAIN_MODE
from flagcore.store.store import Store
from flagcore.vocab import TRAINABLE_ROLES

VALUE_SETTINGS = ("n_permutations", "permutation_block", "cpcv_groups", "cpcv_test_groups")


def rejudge(store: Store, run_id: int, criteria: dict | None = None) -> dict:
    """Per option: each criterion's stored value judged against ``criteria`` (default: the run's)."""
    run = store.run(run_id)
    stored = run["settings"]["criteria"]
    crit = dict(stored)
    if criteria is not None:
        changed = [k for k in VALUE_SETTINGS if criteria.get(k, stored.get(k)) != stored.get(k)]
        if changed:
            raise FlagcoreError(
                f"{changed[0]} differs from run {run_id}'s ({stored.get(changed[0])}); "
                f"it changes the values themselves, so evaluate again with these criteria"
            )
        crit.update(criteria)
    opts = store.option_results(run_id)
    hifa = store.hifa(run_id)
    paths = store.cpcv_paths(run_id)
    out = []
    for _, o in opts.iterrows():
        rows = hifa[hifa["option"] == o["option"]]
        verdict = HifaVerdict(
            {r["criterion"]: judge(r["criterion"], r["value"], crit, r["inputs"]) for _, r in rows.iterrows()}
        )
        table = {k: asdict(v) for k, v in verdict.criteria.items()}
        dsr = table.get("deflated_sharpe")
        dsr_p = dsr["inputs"].get("dsr_probability") if dsr is not None else None
        rp = paths[(paths["option"] == o["option"]) & (paths["mode"] == RETRAIN_MODE)]
        out.append(
            {
                "option": o["option"],
                "title": o["title"],
                "criteria": table,
                "dsr_probability": dsr_p,
                "passed_all": verdict.passed_all,
                "retrain_cpcv_mean_sharpe": float(rp["sharpe"].mean()) if len(rp) else None,
                "retrain_paths": int(len(rp)),
            }
        )
    modes = sorted(set(paths["mode"])) if len(paths) else []
    return {
        "run_id": run_id,
        "criteria": crit,
        "n_trials": run["summary"]["n_trials"],
        "cpcv_mode": " and ".join(modes) or "none",
        "options": out,
    }


def _train_config(provenance: dict, quick: bool):
    from flagcore.training.loop import TrainConfig

    raw = dict(provenance.get("train_config") or {})
    if not raw:
        raise FlagcoreError("the checkpoint records no training configuration to retrain with")
    for k in ("class_weights", "focal_alpha"):
        if isinstance(raw.get(k), list):
            raw[k] = tuple(raw[k])
    if quick:
        raw["windows_per_epoch"] = min(raw.get("windows_per_epoch") or 2000, 2000)
        raw["epochs"] = min(int(raw.get("epochs", 2)), 2)
    return TrainConfig(**raw)


def _training_data(store: Store, run: dict):
    """The run's training dataset, loaded again and checked to be the one the run was evaluated with."""
    from flagcore.data.dataset import load_dataset

    run_id = run["run_id"]
    if not run.get("train_dataset_id"):
        raise FlagcoreError(
            f"run {run_id} was evaluated without --train; retraining CPCV needs the training data"
        )
    rec = store.dataset(run["train_dataset_id"])
    if rec is None:
        raise FlagcoreError(f"{store.path}: run {run_id}'s training dataset is not in the store")
    ds = load_dataset(rec["source"], state_dim=int(rec["state_dim"]))
    if ds.content_hash != rec["dataset_id"]:
        raise FlagcoreError(
            f"{rec['source']}: changed since run {run_id} was evaluated (content hash differs)"
        )
    return ds


def _path_sharpes(path_logits: np.ndarray, close: np.ndarray, ppy: float, cfg, payoff: float) -> list[float]:
    """Each retraining path backtested with the option's sizing and payoff ratio: its annual Sharpe."""
    from flagcore.analysis.backtest import backtest
    from flagcore.analysis.diagnostics import softmax

    sharpes = []
    for p in range(path_logits.shape[0]):
        probs = softmax(path_logits[p].astype(np.float64))
        bt = backtest(probs.argmax(1), close, ppy, confidence=probs.max(1), cfg=cfg, payoff=payoff)
        sharpes.append(bt["sharpe"])
    return sharpes


def retrain_validation(
    store: Store,
    run_id: int,
    *,
    options: str | None = None,
    workers: int = 2,
    quick: bool = False,
    progress: Callable[[str, float], None] | None = None,
    placement=None,
) -> dict:
    """Retraining CPCV for the run's trainable options; appends their path Sharpes to the store.

    The splits run where ``placement`` (``tasks.Placement``) says, or in ``workers`` local processes.
    """
    from flagcore.analysis.backtest import BacktestConfig
    from flagcore.models.flag_trader import FlagTraderConfig
    from flagcore.training.cpcv import retrain_cpcv

    run = store.run(run_id)
    ds = _training_data(store, run)
    models = store.run_models(run_id)
    models = models[(models["kind"] == "flag-trader") & models["role"].isin(TRAINABLE_ROLES)]
    wanted = [o.strip() for o in options.split(",")] if options else list(models["role"])
    unknown = [o for o in wanted if o not in set(models["role"])]
    if unknown:
        raise FlagcoreError(
            f"option {unknown[0]!r} has no retrainable checkpoint in run {run_id}; "
            f"choose from {', '.join(models['role'])}"
        )
    done = store.options_with_cpcv_mode(run_id, RETRAIN_MODE)
    crit = run["settings"]["criteria"]
    bt_cfg = BacktestConfig(**run["settings"]["backtest"])
    results = store.option_results(run_id).set_index("option")
    ppy = float(run["summary"]["periods_per_year"])  # annualised like the run's post-hoc paths
    summary = {}
    for i, role in enumerate(wanted):
        if role in done:
            summary[role] = {"skipped": "already in the store"}
            continue
        m = models[models["role"] == role].iloc[0]
        mcfg = FlagTraderConfig.from_dict(from_json(m["config"]))
        prov = from_json(m["provenance"]) or {}
        prov = prov.get("provenance", prov)  # a flagcore checkpoint's training record sits one level down
        tcfg = _train_config(prov, quick)

        def prog(done_splits, total, role=role, i=i):
            if progress:
                progress(f"retraining CPCV {role}", (i + done_splits / total) / len(wanted))

        res = retrain_cpcv(
            ds,
            mcfg,
            tcfg,
            n_groups=int(crit["cpcv_groups"]),
            n_test_groups=int(crit["cpcv_test_groups"]),
            embargo=int(ds.label_horizon or 0),
            workers=workers,
            placement=placement,
            progress=prog,
        )
        payoff = results.loc[role, "metrics"].get("payoff_ratio") or 1.0
        sharpes = _path_sharpes(res.path_logits, ds.close, ppy, bt_cfg, payoff)
        info = {
            "seconds": round(res.seconds, 1),
            "workers": res.workers,
            "splits": len(res.test_groups),
            "paths": len(sharpes),
            "mean_sharpe": float(np.mean(sharpes)),
            "payoff_ratio": payoff,
            "bars": ds.n_bars,
            "train_config": prov.get("train_config"),
            "quick": quick,
        }
        # another process may have stored this option's paths meanwhile: keep theirs, add nothing
        stored = store.append_retraining(run_id, role, sharpes, info)
        summary[role] = info if stored else {"skipped": "stored meanwhile by another process"}
    return summary
