"""What the dashboard's sliders recompute: option 3 at any HOLD threshold, logit adjustment at any tau.

Everything comes from a stored run's logits, closes and settings (``load_live_inputs``, one
query per table), and the recompute is vectorised numpy: the threshold rule, Kelly sizing with the
payoff ratio re-estimated on the training period at that threshold (on the run's calibrated
probabilities where the run calibrated them), the backtest under the configured sizing and under
unit sizing, a block permutation p-value (1,000 permutations, against the run's 10,000: close, not
identical) and the four HIFA criteria with the deflated Sharpe's minimum track record and backtest
lengths. At the run's own threshold it gives the stored option 3 trades, returns and
Sharpe, but not the CPCV criterion: stored option 3 refits the threshold per split, while
a threshold chosen by hand is fixed, so every CPCV path is the plain backtest and the CPCV mean
Sharpe equals the Sharpe. Choosing a threshold is one more trial, which the deflated Sharpe counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flagcore.analysis.backtest import BacktestConfig, simple_returns
from flagcore.analysis.remedies import PeriodInputs
from flagcore.analysis.sharpe import sharpe_ratio
from flagcore.errors import FlagcoreError
from flagcore.vocab import LOGIT_COLUMNS, TAU_OPTION, THRESHOLD_OPTION


@dataclass
class LiveInputs:
    run_id: int
    test: PeriodInputs  # the evaluation period
    train: PeriodInputs | None  # and for the training period (payoff ratios, prior)
    cfg: BacktestConfig
    criteria: dict
    n_trials: int
    trial_sharpe_variance: float
    thresholds: list[float]  # the swept grid: values on it are trials already counted
    taus: list[float]
    permutation_seed: int = 0
    calibration: str = "none"  # the probabilities Kelly sizing reads (vocab.CALIBRATIONS), as the run


def load_live_inputs(store, run_id: int) -> LiveInputs:
    """The arrays a slider needs, read once from the store."""
    run = store.run(run_id)
    st, summary = run["settings"], run["summary"]
    p = store.predictions(run_id, "baseline", "test")
    if p.empty:
        raise FlagcoreError(f"run {run_id} has no stored baseline logits")
    logits = p[list(LOGIT_COLUMNS)].to_numpy(np.float64)
    test = PeriodInputs(
        {"baseline": logits},
        p["label"].to_numpy(np.int64),
        p["close"].to_numpy(),
        float(summary["periods_per_year"]),
    )
    train = None
    q = store.predictions(run_id, "baseline", "train")
    if not q.empty:
        train = PeriodInputs(
            {"baseline": q[list(LOGIT_COLUMNS)].to_numpy(np.float64)},
            q["label"].to_numpy(np.int64),
            q["close"].to_numpy(),
            test.periods_per_year,
        )
        if summary.get("label_prior") is not None:  # the whole training period's, as the run used
            train.prior = np.asarray(summary["label_prior"], dtype=np.float64)
        # a sampled payoff stretch: each block is held on its own, as the run estimated it
        sample = (summary.get("payoff_period") or {}).get("sample")
        if sample:
            train.block_starts = np.asarray(sample["block_starts"], dtype=np.int64)
            train.sample = sample["source"]
    return LiveInputs(
        int(run_id),
        test,
        train,
        BacktestConfig(**st["backtest"]),
        st["criteria"],
        int(summary["n_trials"]),
        float(summary["trial_sharpe_variance"]),
        list(st["thresholds"]),
        list(st["taus"]),
        int(st.get("permutation_seed", 0)),
        str(st.get("calibration", "none")),  # runs stored before calibration read the model's own
    )


def _view(
    inp: LiveInputs, option: str, value: float, grid: list[float], n_permutations: int, seed: int
) -> dict:
    from flagcore.analysis.gate import hifa_verdict
    from flagcore.analysis.permutation import permutation_test
    from flagcore.analysis.remedies import compare_options

    kw = {"hold_threshold": value} if option == THRESHOLD_OPTION else {"tau": value}
    if option == TAU_OPTION and (inp.train is None or inp.train.prior is None):
        raise FlagcoreError("logit adjustment needs the training period's label prior; the run has none")
    res = compare_options(
        inp.test, inp.train, cfg=inp.cfg, options=[option], calibration=inp.calibration, **kw
    )[option]
    bt = res["backtest"]
    r = simple_returns(inp.test.close)
    held = bt["positions"][:-1]
    perm = permutation_test(
        held,
        r,
        n_permutations,
        block=int(inp.criteria["permutation_block"]),
        seed=seed,
        costs=held * r - bt["returns"],
    )
    on_grid = any(abs(value - g) < 1e-12 for g in grid)
    n_trials = inp.n_trials + (0 if on_grid else 1)
    # a hand-picked value is fixed, not fitted: every CPCV path is the plain backtest
    sr = sharpe_ratio(bt["returns"])
    verdict = hifa_verdict(
        cpcv_path_sharpes=[sr],
        returns=bt["returns"],
        trades=int(bt["trades"]),
        n_trials=n_trials,
        trial_sharpes=_trial_sharpes(inp.trial_sharpe_variance, n_trials),
        permutation_p=perm.p_value,
        periods_per_year=inp.test.periods_per_year,
        criteria=inp.criteria,
    )
    verdict["cpcv_mean_sharpe"].inputs["mode"] = "fixed value: every path is the plain backtest"
    return {
        "option": option,
        "value": value,
        "action_shares": res["action_shares"],
        "action_counts": res["action_counts"],
        "accuracy": res.get("accuracy"),
        "balanced_accuracy": res.get("balanced_accuracy"),
        "trades": int(bt["trades"]),
        "total_return": float(bt["total_return"]),
        "sharpe": float(bt["sharpe"]),
        "sharpe_defined": bool(bt["sharpe_defined"]),
        "max_drawdown": float(bt["max_drawdown"]),
        "equity": bt["equity"],
        "permutation_p": perm.p_value,
        "n_permutations": n_permutations,
        "n_trials": n_trials,
        "on_grid": on_grid,
        "hifa": verdict,
        # the signal apart from its sizing: the same actions at unit size, and what sizing set to 0
        "unit": res["unit"],
        "sizing": res["sizing"],
        "sizing_method": inp.cfg.sizing,
    }


def _trial_sharpes(variance: float, n: int) -> np.ndarray:
    # hifa_verdict reads only the variance of the trial Sharpes: two values with that variance
    s = np.sqrt(max(variance, 0.0) / 2.0)
    return np.array([-s, s]) if n > 1 and variance > 0 else np.zeros(1)


def threshold_view(
    inp: LiveInputs, hold_threshold: float, *, n_permutations: int = 1000, seed: int | None = None
) -> dict:
    """Option 3 at ``hold_threshold``: shares, trades, return, Sharpe, p-value, HIFA criteria (with the
    deflated Sharpe's readings in ``hifa["deflated_sharpe"].inputs``), unit-sizing metrics and the
    signals sizing set to 0."""
    if not 0.0 <= hold_threshold <= 1.0:
        raise FlagcoreError(f"hold_threshold must lie in [0, 1], got {hold_threshold!r}")
    return _view(
        inp,
        THRESHOLD_OPTION,
        float(hold_threshold),
        inp.thresholds,
        n_permutations,
        inp.permutation_seed if seed is None else seed,
    )


def tau_view(inp: LiveInputs, tau: float, *, n_permutations: int = 1000, seed: int | None = None) -> dict:
    """Post-hoc logit adjustment at ``tau``, the same figures as ``threshold_view``."""
    if tau < 0:
        raise FlagcoreError(f"tau must be >= 0, got {tau!r}")
    return _view(
        inp, TAU_OPTION, float(tau), inp.taus, n_permutations, inp.permutation_seed if seed is None else seed
    )
