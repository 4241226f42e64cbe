"""``flagcore validate``: the HIFA table of a stored run, its gate decision, and retraining CPCV.

``rejudge`` reads the stored criteria and, given other thresholds, judges the same values
against them (the values do not depend on the thresholds; settings that change a value, such as
the number of permutations, need a new ``flagcore evaluate``). Each option also carries how far
it is from passing: its trades against the minimum, both readings of the deflated Sharpe, the
minimum track record length and the minimum backtest length (:func:`distance_to_pass`).

``gate_decision`` turns that table into the pipeline gate: passed when at least one candidate
option (not in ``vocab.NOT_A_TRIAL``) passes every criterion; ``flagcore validate --gate`` exits
with its ``exit_code``.

``retrain_validation`` is the second CPCV mode: each trainable option's model is retrained on
every split's purged, embargoed training groups of the training timeline and predicts its test
groups (``train.retrain_cpcv``); each path is backtested with the option's stored sizing, every
group sized with the payoff ratio its split estimated on its own training observations. Its path
Sharpes are appended to the run with mode ``retraining``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flagcore.analysis.dsr import min_backtest_length, min_track_record_length
from flagcore.analysis.gate import (
    DEFAULT_CRITERIA,
    CriterionResult,
    HifaVerdict,
    judge,
    rule_text,
    trades_verdict,
    why_not,
)
from flagcore.errors import FlagcoreError
from flagcore.store.codec import from_json, to_json
from flagcore.store.schema import RETRAIN_MODE
from flagcore.store.store import Store
from flagcore.vocab import CRITERIA, NOT_A_TRIAL, TRAINABLE_ROLES

VALUE_SETTINGS = ("n_permutations", "permutation_block", "cpcv_groups", "cpcv_test_groups")

# ``flagcore validate --gate`` exit codes: 0 a candidate passes; 1 and 2 stay the CLI's (bad input,
# usage) and 3 its internal error (cli.command); 4 the gate failed
GATE_PASSED = 0
GATE_FAILED = 4


def _finite_or_none(x: Any) -> float | None:
    """A float, or None for a missing or infinite value (JSON has no infinity; None reads "never")."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def rejudge_deflated(value: float, criteria: dict, inputs: dict) -> CriterionResult:
    """The stored deflated-Sharpe criterion judged against ``criteria``, both readings.

    Passes when the annualised haircut SR - SR0 (``value``) >= ``deflated_sharpe_min`` and the
    stored DSR probability PSR(SR0) >= ``dsr_probability_min`` (Bailey & Lopez de Prado 2014; a
    run stored without a DSR probability fails that reading). The minimum track record length
    depends on the probability threshold (Bailey & Lopez de Prado 2012, eq. 11: its z_p), so it
    is recomputed from the stored Sharpe, SR0, skew and kurtosis; the minimum backtest length
    (Bailey, Borwein, Lopez de Prado & Zhu 2014) from the stored Sharpe and trial count. Infinite
    lengths (no track record reaches the bar) are kept as ``inf``.

    Examples
    --------
    >>> inputs = {"dsr_probability": 0.97, "sharpe_annual": 3.0, "sr0_annual": 1.0,
    ...           "periods_per_year": 252.0, "skew": 0.0, "kurtosis": 3.0, "n_obs": 1000, "n_trials": 10}
    >>> c = {**DEFAULT_CRITERIA, "dsr_probability_min": 0.99}
    >>> r = rejudge_deflated(2.0, c, inputs)
    >>> r.passed, r.inputs["haircut_passed"], r.inputs["probability_passed"]
    (False, True, False)
    """
    res = judge("deflated_sharpe", value, criteria, inputs)
    i = res.inputs
    p_min = float(criteria["dsr_probability_min"])
    dsr = i.get("dsr_probability")
    i["dsr_probability_threshold"] = p_min
    i["haircut_passed"] = res.passed
    i["probability_passed"] = dsr is not None and bool(dsr >= p_min)
    res.passed = bool(res.passed and i["probability_passed"])
    need = ("sharpe_annual", "sr0_annual", "periods_per_year", "skew", "kurtosis", "n_obs")
    if all(i.get(k) is not None for k in need):
        ppy = float(i["periods_per_year"])
        sr, sr0 = i["sharpe_annual"] / np.sqrt(ppy), i["sr0_annual"] / np.sqrt(ppy)
        if i.get("sharpe_defined", True) is False or p_min >= 1:
            bars = float("inf")  # no Sharpe, or a bar no finite track record reaches
        elif p_min <= 0:
            bars = 0.0  # every PSR clears a bar of 0: no track record is needed
        else:
            try:
                bars = min_track_record_length(sr, i["skew"], i["kurtosis"], sr0, p_min)
            except FlagcoreError:
                bars = float("inf")  # the Sharpe's variance term is not positive: no length is known
        i["min_track_record_bars"] = bars
        i["min_track_record_years"] = bars / ppy
        i["backtest_years"] = float(i["n_obs"]) / ppy
        if i.get("n_trials") is not None:
            i["min_backtest_years"] = min_backtest_length(
                max(int(i["n_trials"]), 1), float(i["sharpe_annual"])
            )
    return res


def distance_to_pass(criteria: dict[str, CriterionResult]) -> dict[str, Any]:
    """How far one option is from passing: trades vs the minimum, the DSR probability vs its bar,
    the haircut vs its bar, the minimum track record length (bars and years, None when no length
    reaches the bar: "never") beside the bars observed, and the minimum backtest length in years
    beside the backtest's years."""
    out: dict[str, Any] = {}
    t = criteria.get("min_trades")
    if t is not None:
        out.update(trades=int(t.value), min_trades=t.threshold)
    d = criteria.get("deflated_sharpe")
    if d is not None:
        i = d.inputs
        out.update(
            dsr_probability=_finite_or_none(i.get("dsr_probability")),
            dsr_probability_min=_finite_or_none(i.get("dsr_probability_threshold")),
            haircut=d.value,
            haircut_min=d.threshold,
            n_obs=i.get("n_obs"),
            min_track_record_bars=_finite_or_none(i.get("min_track_record_bars")),
            min_track_record_years=_finite_or_none(i.get("min_track_record_years")),
            backtest_years=_finite_or_none(i.get("backtest_years")),
            min_backtest_years=_finite_or_none(i.get("min_backtest_years")),
            n_trials=i.get("n_trials"),
        )
    return out


def _judged(option: dict, rows, crit: dict) -> HifaVerdict:
    """One option's criteria, in ``vocab.CRITERIA`` order, judged against ``crit``; a run stored
    before the minimum-trades criterion is judged on the option's stored trades."""
    stored = {r["criterion"]: r for _, r in rows.iterrows()}
    out = {}
    for c in CRITERIA:
        r = stored.get(c.key)
        if c.key == "min_trades":
            if r is None:
                out[c.key] = trades_verdict(int(option["trades"]), crit)
            else:
                out[c.key] = judge(c.key, r["value"], crit, r["inputs"] or {})
        elif r is None:
            continue
        elif c.key == "deflated_sharpe":
            out[c.key] = rejudge_deflated(r["value"], crit, r["inputs"] or {})
        else:
            out[c.key] = judge(c.key, r["value"], crit, r["inputs"] or {})
    return HifaVerdict(out)


def rejudge(store: Store, run_id: int, criteria: dict | None = None) -> dict:
    """Per option: each criterion's stored value judged against ``criteria`` (default: the run's).

    A threshold the run's settings lack (a run stored before it existed, such as ``min_trades``
    or ``dsr_probability_min``) takes its default (``gate.DEFAULT_CRITERIA``); those keys are
    listed under ``"defaults_added"``. Values and inputs that JSON cannot hold (infinite lengths)
    come back as None.
    """
    run = store.run(run_id)
    stored = run["settings"].get("criteria") or {}
    crit = {**DEFAULT_CRITERIA, **stored}
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
        verdict = _judged(o, hifa[hifa["option"] == o["option"]], crit)
        table = {
            k: {**asdict(v), "rule_text": rule_text(v), "why_not": why_not(v)}
            for k, v in verdict.criteria.items()
        }
        dsr = verdict.criteria.get("deflated_sharpe")
        rp = paths[(paths["option"] == o["option"]) & (paths["mode"] == RETRAIN_MODE)]
        out.append(
            {
                "option": o["option"],
                "title": o["title"],
                "candidate": o["option"] not in NOT_A_TRIAL,
                "criteria": table,
                "dsr_probability": None if dsr is None else dsr.inputs.get("dsr_probability"),
                "distance": distance_to_pass(verdict.criteria),
                "passed_all": verdict.passed_all,
                "retrain_cpcv_mean_sharpe": float(rp["sharpe"].mean()) if len(rp) else None,
                "retrain_paths": int(len(rp)),
            }
        )
    modes = sorted(set(paths["mode"])) if len(paths) else []
    report = {
        "run_id": run_id,
        "criteria": crit,
        "defaults_added": [k for k in DEFAULT_CRITERIA if k not in stored and k not in (criteria or {})],
        "n_trials": run["summary"].get("n_trials"),
        "cpcv_mode": " and ".join(modes) or "none",
        "options": out,
    }
    return from_json(to_json(report))  # infinities to None: the report is JSON as it is printed


@dataclass(frozen=True)
class GateDecision:
    """The pipeline gate over a HIFA report: passed when at least one candidate option passes
    every criterion."""

    passed: bool
    passing_options: list[str]  # candidates passing every criterion, in table order
    candidates: list[str]  # options the gate considers (not in ``vocab.NOT_A_TRIAL``)
    exit_code: int  # GATE_PASSED or GATE_FAILED

    @property
    def message(self) -> str:
        if self.passed:
            verb = "passes" if len(self.passing_options) == 1 else "pass"
            return f"HIFA passed: {', '.join(self.passing_options)} {verb} every criterion"
        return "HIFA failed: no candidate option passes every criterion"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "passing_options": list(self.passing_options),
            "exit_code": self.exit_code,
            "message": self.message,
        }


def gate_decision(report: dict) -> GateDecision:
    """The gate of a :func:`rejudge` report: at least one candidate option (one not in
    ``vocab.NOT_A_TRIAL``: the perfect-foresight labels are an upper bound, not a strategy) passes
    every criterion. Exit code ``GATE_PASSED`` (0) when one does, ``GATE_FAILED`` (4) when none does.

    Examples
    --------
    >>> report = {"options": [{"option": "opt5_labels", "passed_all": True},
    ...                       {"option": "baseline", "passed_all": False}]}
    >>> gate_decision(report).passed, gate_decision(report).exit_code
    (False, 4)
    """
    options = report.get("options")
    if options is None:
        raise FlagcoreError("the HIFA report has no options to judge")
    candidates = [o["option"] for o in options if o["option"] not in NOT_A_TRIAL]
    passing = [o["option"] for o in options if o["option"] in candidates and bool(o["passed_all"])]
    ok = bool(passing)
    return GateDecision(ok, passing, candidates, GATE_PASSED if ok else GATE_FAILED)


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


def retrain_path_sharpes(res, close: np.ndarray, ppy: float, cfg) -> tuple[list[float], np.ndarray]:
    """Each retraining path backtested with the option's sizing: its annualised Sharpe, and the
    per-split payoff ratios it was sized with.

    Kelly's payoff ratio comes from each split's own training observations
    (``training.cpcv.split_payoff_ratios``, under the backtest's HOLD rule), never from the test
    groups or the whole period; each group of a path is sized with the ratio of the split that
    predicted it (``training.cpcv.path_positions``), and the path is traded in one piece, its
    costs charged on every change of position, group boundaries included.
    """
    from flagcore.analysis.backtest import metrics, simple_returns, strategy_returns
    from flagcore.training.cpcv import path_positions, split_payoff_ratios

    payoffs = split_payoff_ratios(res, close, cfg.hold)
    pos = path_positions(res.path_logits, res.paths, res.groups, payoffs, cfg)
    r = simple_returns(close)
    sharpes = []
    for p in range(pos.shape[0]):
        net, _ = strategy_returns(pos[p], r, cfg.cost_rate)
        sharpes.append(metrics(net, pos[p], ppy)["sharpe"])
    return sharpes, payoffs


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
        sharpes, payoffs = retrain_path_sharpes(res, ds.close, ppy, bt_cfg)
        info = {
            "seconds": round(res.seconds, 1),
            "workers": res.workers,
            "splits": len(res.test_groups),
            "paths": len(sharpes),
            "mean_sharpe": float(np.mean(sharpes)),
            # Kelly's b per split, each from that split's training observations only
            "payoff_ratios": [float(b) for b in payoffs],
            "payoff_source": "each split's training observations",
            "bars": ds.n_bars,
            "train_config": prov.get("train_config"),
            "quick": quick,
        }
        # another process may have stored this option's paths meanwhile: keep theirs, add nothing
        stored = store.append_retraining(run_id, role, sharpes, info)
        summary[role] = info if stored else {"skipped": "stored meanwhile by another process"}
    return summary
