"""Calibration of the HIFA gate as a whole: how often it passes noise, and how often a real edge.

    .venv/bin/python benchmarks/gate_calibration.py --markets 200 --seed 0 --workers 2

Each criterion can be right while the gate, applied to a dozen options and a few dozen swept values,
passes noise too often (validation-math.md, "Calibrating the gate as a whole"). This runs the
evaluate pipeline's own computation (``pipeline.run.compute_run``: every option, the HOLD-threshold
and tau sweeps, the trial count, permutation tests, post-hoc CPCV, the HIFA verdict, with
``EvaluateSettings()``'s defaults) on many markets of the quick demo's shape (``data.market``: a year
of hourly training bars, then 1,500 test bars) and counts the markets where ANY candidate option (not
in ``vocab.NOT_A_TRIAL``) passes every criterion:

- on K pure-noise markets (strength 0, each its own seed): the family-wise false-pass rate, with its
  exact (Clopper-Pearson) 95% interval; the target is an upper bound <= 5%;
- on planted-edge markets at several strengths: the pass rate (power).

Models are trained once per strength (the quick demo's plan: the demo preset, every training loss
of ``vocab.LOSSES`` and the CGDT partner; not walk-forward, which fine-tunes on each market's own
test period) on the training period of one market of that strength, whose last year is also the
training stretch that Kelly's payoff ratios and the logit-adjustment prior come from, as
``flagcore demo`` evaluates with ``--train-data`` its models' own training set. For each market:
its features and labels (``data.features.build_datasets``), the test period loaded as ``evaluate``
loads it (``pipeline.evaluate.load_evaluation_data``), each model's inference on it
(``models.inference.predict``, ``models.cgdt_predict.predict_cgdt``), then ``compute_run``. Markets
run as tasks in a local process pool (``training.tasks.run_tasks``). Seeds are fixed: the same
command on the same machine gives the same figures.

The results go to ``benchmarks/results/gate-calibration.json`` and, between the markers
``<!-- gate-calibration:start -->`` and ``<!-- gate-calibration:end -->``, into BENCHMARKS.md
(appended when absent, replaced when present).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flagcore.errors import FlagcoreError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gate-calibration.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
START_MARK = "<!-- gate-calibration:start -->"
END_MARK = "<!-- gate-calibration:end -->"
# planted-edge strengths (data.market's ``strength``): chosen so that power runs from low to high on
# the quick demo's 1,500 test bars, where the test period has no order-flow feed
DEFAULT_STRENGTHS = (2.0, 4.0, 8.0)
NOISE, EDGE = 0, 1  # seed groups: the noise markets, the planted-edge markets
TRAINING_MARKET = 2  # seed group of the market each model set is trained on
CONFIDENCE = 0.95
TARGET_UPPER = 0.05  # the false-pass rate's upper 95% bound must not exceed this


# ----------------------------------------------------------------------------- statistics


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact two-sided interval of a binomial proportion (Clopper and Pearson 1934).

    lower = Beta^-1(a/2; k, n-k+1) (0 when k = 0), upper = Beta^-1(1-a/2; k+1, n-k) (1 when k = n),
    with a = 1 - confidence: every proportion the data do not reject at level a/2 on either side.

    Examples
    --------
    >>> lo, hi = clopper_pearson(0, 200)  # no false pass in 200 markets
    >>> lo, round(hi, 4)  # 1 - 0.025 ** (1 / 200)
    (0.0, 0.0183)
    """
    from scipy.stats import beta

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FlagcoreError(f"n must be a whole number >= 1, got {n!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise FlagcoreError(f"k must be a whole number in [0, {n}], got {k!r}")
    if not 0.0 < confidence < 1.0:
        raise FlagcoreError(f"confidence must lie in (0, 1), got {confidence!r}")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def market_seed(seed: int, group: int, index: int) -> int:
    """The seed of market ``index`` in ``group`` (noise, planted edge, training) for run seed ``seed``:
    distinct markets from one integer, the same every time (numpy's SeedSequence hashing)."""
    for name, v in (("seed", seed), ("group", group), ("index", index)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise FlagcoreError(f"{name} must be a whole number >= 0, got {v!r}")
    return int(np.random.SeedSequence([int(seed), int(group), int(index)]).generate_state(1, np.uint32)[0])


# ----------------------------------------------------------------------------- markets and models


def build_market(seed: int, strength: float, folder: Path) -> tuple[Path, Path]:
    """One market of the quick demo's shape, as ``flagcore demo --quick`` builds it: its training and
    test datasets written under ``folder`` (``train.parquet``, ``test.parquet``)."""
    import pandas as pd

    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets
    from flagcore.data.market import ORDER_FLOW_COLUMNS, TEST_START, demo_market
    from flagcore.pipeline.demo import QUICK

    folder.mkdir(parents=True, exist_ok=True)
    bars = demo_market(
        seed=seed,
        strength=strength,
        train_start=pd.Timestamp(QUICK.train_start, tz="UTC"),
        test_bars=QUICK.test_bars,
    )
    # no order-flow feed in either period: the demo leaves it out of the test period only, to
    # reproduce the seed's feature shift; here the models must learn from what the test period shows,
    # or the power measured would be the models' blindness, not the gate's
    bars = bars.drop(columns=list(ORDER_FLOW_COLUMNS))
    source = f"market seed={seed} strength={strength:g}"
    sets = build_datasets(bars, test_start=TEST_START, source=source)
    for k, (df, meta) in sets.items():
        write_dataset(df, folder / f"{k}.parquet", **meta)
    return folder / "train.parquet", folder / "test.parquet"


@dataclass(frozen=True)
class ModelSet:
    """Models trained once on one market's training period, and their logits on its training stretch."""

    folder: str
    strength: float
    train_seed: int
    train_data: str  # the training dataset (also the evaluation's ``--train-data``)
    checkpoints: dict[str, str]  # role -> FLAG-TRADER checkpoint folder
    partner: str  # the CGDT partner's safetensors file
    train_logits: str  # .npz: role -> logits on the training stretch (after its lead-in)
    seconds: float  # training wall time


def _train_task(shared: None, task: tuple) -> str:
    """One model of a set, in a worker: a FLAG-TRADER with one loss, or the CGDT partner."""
    kind, train_p, out = task
    from flagcore.data.dataset import load_dataset
    from flagcore.pipeline.demo import QUICK

    if kind == "cgdt":
        from flagcore.models.cgdt import CGDTConfig
        from flagcore.models.cgdt_file import save_cgdt
        from flagcore.training.cgdt import train_cgdt

        cfg = CGDTConfig(
            epochs=QUICK.cgdt_epochs,
            windows_per_epoch=QUICK.cgdt_windows,
            critic_epochs=QUICK.cgdt_critic_epochs,
        )
        save_cgdt(train_cgdt(load_dataset(train_p, state_dim=cfg.state_dim), cfg), out)
        return out
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.models.flag_trader import preset
    from flagcore.training.loop import TrainConfig, train_model

    mcfg = preset("demo")
    ds = load_dataset(train_p, state_dim=mcfg.state_dim)
    tcfg = TrainConfig(loss=kind, epochs=QUICK.epochs, windows_per_epoch=QUICK.windows_per_epoch, patience=2)
    res = train_model(ds, mcfg, tcfg)
    save_checkpoint(
        res.model,
        out,
        feature_names=ds.feature_names,
        padded_inputs=ds.padded_inputs,
        provenance={**res.provenance, "gate_calibration": True},
    )
    return out


def train_models(folder: Path, strength: float, train_seed: int, workers: int = 1) -> ModelSet:
    """Train every model of the quick demo's plan (each loss of ``vocab.LOSSES`` and the CGDT) on the
    training period of the market ``train_seed`` of ``strength``, and compute their logits on the
    training stretch an evaluation reads (``load_evaluation_data``): once, for every market."""
    from flagcore.models.cgdt_file import load_cgdt
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.models.flag_trader import preset
    from flagcore.pipeline.evaluate import load_evaluation_data
    from flagcore.pipeline.settings import EvaluateSettings
    from flagcore.training.tasks import Placement, run_tasks
    from flagcore.vocab import LOSSES, ROLE_BY_LOSS

    t0 = time.perf_counter()
    train_p, test_p = build_market(train_seed, strength, folder / "market")
    tasks = [(loss, str(train_p), str(folder / "models" / loss)) for loss in LOSSES]
    tasks.append(("cgdt", str(train_p), str(folder / "models" / "cgdt.safetensors")))
    run_tasks(_train_task, tasks, placement=Placement(workers=workers))
    checkpoints = {ROLE_BY_LOSS[loss]: str(folder / "models" / loss) for loss in LOSSES}
    partner = str(folder / "models" / "cgdt.safetensors")
    _, train, _ = load_evaluation_data(test_p, train_p, preset("demo"), EvaluateSettings())
    assert train is not None
    from flagcore.models.cgdt_predict import predict_cgdt
    from flagcore.models.inference import predict

    logits = {r: predict(load_checkpoint(p), train.features).logits for r, p in checkpoints.items()}
    logits["cgdt"] = predict_cgdt(load_cgdt(partner), train).logits
    out = folder / "train_logits.npz"
    np.savez(out, **{r: np.asarray(x[train.eval_index :], np.float64) for r, x in logits.items()})
    return ModelSet(
        str(folder),
        float(strength),
        int(train_seed),
        str(train_p),
        checkpoints,
        partner,
        str(out),
        round(time.perf_counter() - t0, 1),
    )


# ----------------------------------------------------------------------------- one market judged


@dataclass
class MarketOutcome:
    """What the gate said on one market."""

    seed: int
    strength: float
    passed: bool  # some candidate option passed every criterion
    passing: list[str]  # the candidate options that did
    n_trials: int
    n_candidates: int
    criterion_any: dict[str, bool]  # criterion -> some candidate passed it
    criterion_options: dict[str, int]  # criterion -> how many candidates passed it
    blocked_only_by: dict[str, bool]  # criterion -> some candidate passed every other criterion but not it
    seconds: dict[str, float] = field(default_factory=dict)  # market, inference, compute, total

    def to_dict(self) -> dict:
        return asdict(self)


def criteria_keys() -> list[str]:
    """The gate's criteria in ``vocab.CRITERIA`` order, with the deflated Sharpe's two readings."""
    from flagcore.vocab import CRITERIA

    return [c.key for c in CRITERIA] + ["dsr_haircut", "dsr_probability"]


def _criterion_passes(verdict) -> dict[str, bool]:
    out = {k: bool(c.passed) for k, c in verdict.criteria.items()}
    inputs = verdict["deflated_sharpe"].inputs
    out["dsr_haircut"] = bool(inputs["haircut_passed"])
    out["dsr_probability"] = bool(inputs["probability_passed"])
    return out


def judge_run(run, seed: int, strength: float) -> MarketOutcome:
    """A computed run (``compute_run``'s ``RunResult``) read as the gate's answer on one market."""
    from flagcore.vocab import NOT_A_TRIAL

    gate = [c for c in criteria_keys() if not c.startswith("dsr_")]
    candidates = {k: o for k, o in run.options.items() if k not in NOT_A_TRIAL}
    passes = {k: _criterion_passes(o["hifa"]) for k, o in candidates.items()}
    passing = [k for k, o in candidates.items() if o["hifa"].passed_all]
    if sorted(passing) != sorted(run.summary["options_passing_hifa"]):  # one reading of the gate, not two
        raise AssertionError(
            f"passing options {passing} differ from the run's {run.summary['options_passing_hifa']}"
        )
    keys = criteria_keys()
    return MarketOutcome(
        seed=int(seed),
        strength=float(strength),
        passed=bool(passing),
        passing=passing,
        n_trials=int(run.summary["n_trials"]),
        n_candidates=len(candidates),
        criterion_any={c: any(p[c] for p in passes.values()) for c in keys},
        criterion_options={c: sum(p[c] for p in passes.values()) for c in keys},
        blocked_only_by={
            c: any(not p[c] and all(p[o] for o in gate if o != c) for p in passes.values()) for c in gate
        },
    )


def evaluate_market(
    test_p: Path,
    train_p: Path,
    logits_for: Callable[[Any, Any], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    *,
    model_ids: Mapping[str, str] | None = None,
    settings=None,
):
    """The run an evaluation computes on one market's test period: ``compute_run`` over each model's
    logits. ``logits_for(test, train)`` gives ``({role: test-period logits}, {role: training-stretch
    logits})`` (after each dataset's lead-in); the role "cgdt" is the ensemble partner too."""
    from flagcore.models.flag_trader import preset
    from flagcore.pipeline.evaluate import load_evaluation_data
    from flagcore.pipeline.inference_cache import ModelLogits
    from flagcore.pipeline.run import compute_run
    from flagcore.pipeline.settings import EvaluateSettings

    s = settings or EvaluateSettings()
    test, train, full_train = load_evaluation_data(test_p, train_p, preset("demo"), s)
    test_logits, train_logits = logits_for(test, train)
    ids = dict(model_ids or {})
    models = {
        r: ModelLogits(
            r, ids.get(r, r), "cgdt" if r == "cgdt" else "flag-trader", r, {}, x, train_logits.get(r)
        )
        for r, x in test_logits.items()
    }
    return compute_run(
        models,
        test,
        train,
        partner=models.get("cgdt"),
        settings=s,
        name="gate-calibration",
        full_train=full_train,
    )


_LOADED: dict[str, tuple] = {}  # per worker process: a model set's loaded models and training logits


def _load_set(ms: ModelSet) -> tuple:
    if ms.folder not in _LOADED:
        from flagcore.models.cgdt_file import load_cgdt
        from flagcore.models.checkpoint import load_checkpoint

        nets = {r: load_checkpoint(p) for r, p in ms.checkpoints.items()}
        with np.load(ms.train_logits) as z:
            train_logits = {r: z[r] for r in z.files}
        ids = {r: m.checkpoint_info.sha256 for r, m in nets.items()}
        _LOADED[ms.folder] = (nets, load_cgdt(ms.partner), train_logits, ids)
    return _LOADED[ms.folder]


def market_task(shared: Mapping[float, ModelSet], item: tuple[int, float]) -> dict:
    """One market in a worker: built, its test period inferred by the set of models trained for its
    strength, and judged by the gate; a ``MarketOutcome`` as a dict."""
    from flagcore.models.cgdt_predict import predict_cgdt
    from flagcore.models.inference import predict

    seed, strength = item
    ms = shared[strength]
    nets, cgdt, train_logits, ids = _load_set(ms)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="gate-calibration-"))
    try:
        _, test_p = build_market(seed, strength, tmp)
        t1 = time.perf_counter()
        times = {}

        def logits_for(test, train):
            e = test.eval_index
            out = {r: np.asarray(predict(m, test.features).logits[e:], np.float64) for r, m in nets.items()}
            out["cgdt"] = np.asarray(predict_cgdt(cgdt, test).logits[e:], np.float64)
            times["inference"] = time.perf_counter() - t1
            return out, train_logits

        run = evaluate_market(test_p, Path(ms.train_data), logits_for, model_ids={**ids, "cgdt": "cgdt"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t2 = time.perf_counter()
    res = judge_run(run, seed, strength)
    res.seconds = {
        "market": round(t1 - t0, 3),
        "inference": round(times["inference"], 3),
        "compute": round(t2 - t1 - times["inference"], 3),
        "total": round(t2 - t0, 3),
    }
    return res.to_dict()


# ----------------------------------------------------------------------------- synthetic logits (tests)


def synthetic_logits(n: int, rng: np.random.Generator, labels=None, edge: float = 0.0) -> np.ndarray:
    """(n, 3) logits: standard normal noise, plus ``edge`` on the logit of each bar's label (a
    planted edge: the label is the triple-barrier outcome ahead, so ``edge`` > 0 leaks the future).
    With ``edge`` 0 they carry no information about the market."""
    x = rng.standard_normal((n, 3))
    if edge:
        y = np.asarray(labels)
        known = y >= 0
        x[np.flatnonzero(known), y[known]] += edge
    return x


# ----------------------------------------------------------------------------- the whole calibration


def summarise(outcomes: Sequence[Mapping]) -> dict:
    """Markets passed, the rate with its exact 95% interval, and per criterion how often it passed."""
    n = len(outcomes)
    if n == 0:
        raise FlagcoreError("no markets to summarise")
    k = sum(bool(o["passed"]) for o in outcomes)
    lo, hi = clopper_pearson(k, n)
    keys = list(outcomes[0]["criterion_any"])
    cand = sum(o["n_candidates"] for o in outcomes)
    by_option: dict[str, int] = {}
    for o in outcomes:
        for opt in o["passing"]:
            by_option[opt] = by_option.get(opt, 0) + 1
    total = np.array([o["seconds"].get("total", np.nan) for o in outcomes], float)
    return {
        "markets": n,
        "passed": k,
        "rate": k / n,
        "ci95": [lo, hi],
        "criterion_markets": {c: sum(o["criterion_any"][c] for o in outcomes) for c in keys},
        "criterion_option_share": {c: sum(o["criterion_options"][c] for o in outcomes) / cand for c in keys},
        "blocked_only_by": {
            c: sum(o["blocked_only_by"][c] for o in outcomes) for c in outcomes[0]["blocked_only_by"]
        },
        "passing_options": dict(sorted(by_option.items())),
        "candidates_per_market": cand / n,
        "n_trials_median": float(np.median([o["n_trials"] for o in outcomes])),
        "seconds_per_market": {
            "median": float(np.nanmedian(total)) if np.isfinite(total).any() else None,
            "min": float(np.nanmin(total)) if np.isfinite(total).any() else None,
            "max": float(np.nanmax(total)) if np.isfinite(total).any() else None,
        },
    }


def run_markets(
    model_sets: Mapping[float, ModelSet],
    items: Sequence[tuple[int, float]],
    workers: int,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[list[dict], float]:
    """Every market as a task (``run_tasks``, ``workers`` local processes); outcomes and wall time."""
    from flagcore.training.tasks import Placement, run_tasks

    t0 = time.perf_counter()
    step = max(1, len(items) // 20)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            el = time.perf_counter() - t0
            log(f"{done}/{total} markets, {el:.0f} s, {el / done:.2f} s a market")

    out = run_tasks(
        market_task,
        list(items),
        shared=dict(model_sets),
        placement=Placement(workers=workers),
        progress=progress,
    )
    return out, time.perf_counter() - t0


def calibrate(
    markets: int,
    seed: int,
    strengths: Sequence[float],
    power_markets: int,
    workers: int,
    models_dir: Path,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """The false-pass rate on ``markets`` noise markets, then the pass rate on ``power_markets``
    markets at each planted-edge strength; every figure and each market's outcome."""
    sets: dict[float, ModelSet] = {}
    for j, strength in enumerate([0.0, *strengths]):
        log(f"training the models for strength {strength:g}")
        ms = train_models(
            models_dir / f"strength-{strength:g}", strength, market_seed(seed, TRAINING_MARKET, j), workers
        )
        sets[strength] = ms
        log(f"  {ms.seconds:.0f} s")
    noise_items = [(market_seed(seed, NOISE, i), 0.0) for i in range(markets)]
    log(f"{markets} noise markets")
    noise, noise_wall = run_markets(sets, noise_items, workers, log)
    power = {}
    for j, strength in enumerate(strengths):
        items = [(market_seed(seed, EDGE, j * 1_000_000 + i), float(strength)) for i in range(power_markets)]
        log(f"{power_markets} markets of strength {strength:g}")
        outs, wall = run_markets(sets, items, workers, log)
        power[f"{strength:g}"] = {"summary": summarise(outs), "wall_seconds": wall, "markets": outs}
    s = summarise(noise)
    return {
        "noise": {"summary": s, "wall_seconds": noise_wall, "markets": noise},
        "power": power,
        "target_upper": TARGET_UPPER,
        "target_met": s["ci95"][1] <= TARGET_UPPER,
        "model_sets": {f"{k:g}": asdict(v) for k, v in sets.items()},
    }


# ----------------------------------------------------------------------------- BENCHMARKS.md


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _machine_line(m: Mapping) -> str:
    if not m or "cores" not in m:
        return "machine not recorded"
    return f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, torch {m['torch']}, GPU: {m['gpu']}"


def calibration_markdown(res: Mapping) -> list[str]:
    """The BENCHMARKS.md section of one calibration (``res`` as kept in gate-calibration.json),
    between its markers."""
    from flagcore.analysis.gate import DEFAULT_CRITERIA
    from flagcore.vocab import CRITERION_LABELS

    labels = {
        **CRITERION_LABELS,
        "dsr_haircut": f"Deflated Sharpe, haircut: SR - SR0 >= {DEFAULT_CRITERIA['deflated_sharpe_min']:g}",
        "dsr_probability": f"Deflated Sharpe, DSR probability >= {DEFAULT_CRITERIA['dsr_probability_min']:g}",
    }
    s = res["noise"]["summary"]
    lo, hi = s["ci95"]
    meta = res.get("meta", {})
    sec = s["seconds_per_market"]
    wall = res["noise"]["wall_seconds"]
    L = [
        START_MARK,
        "## Calibration of the HIFA gate as a whole",
        "",
        f"Generated by `{meta.get('command', 'benchmarks/gate_calibration.py')}` on {meta.get('date', '?')} "
        f"({_machine_line(meta.get('machine', {}))}; {meta.get('workers', '?')} worker processes). "
        "Each market is the quick demo's shape (a year of hourly training bars, then 1,500 test bars), "
        "without the order-flow feed (left out of both periods, so that the models learn from what the "
        "test period shows); a planted edge of strength s is `data.market`'s predictable drift scaled "
        "by s (0: pure noise). Each is evaluated as `flagcore evaluate` computes a run "
        "(`pipeline.run.compute_run` with `EvaluateSettings()`'s defaults: every option, the "
        "HOLD-threshold and tau sweeps, the trial count, permutation tests, post-hoc CPCV, the HIFA "
        "verdict). Models trained once per strength on one market's training period (demo preset, the "
        "quick plan, every training loss and the CGDT partner; walk-forward left out, it fine-tunes on "
        "each test period); a market passes when any candidate option (the perfect-foresight labels "
        "excepted) passes every criterion. Results and each market's outcome: "
        "`benchmarks/results/gate-calibration.json`." + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "| markets | strength | passed | pass rate | exact 95% interval |",
        "|---|---|---|---|---|",
        f"| {s['markets']} noise | 0 | {s['passed']} | {_pct(s['rate'])} | {_pct(lo)} to {_pct(hi)} |",
    ]
    for strength, p in res["power"].items():
        ps = p["summary"]
        L.append(
            f"| {ps['markets']} planted edge | {strength} | {ps['passed']} | {_pct(ps['rate'])} | "
            f"{_pct(ps['ci95'][0])} to {_pct(ps['ci95'][1])} |"
        )
    verdict = "met" if res["target_met"] else "NOT met"
    L += [
        "",
        f"Family-wise false-pass rate on noise: {_pct(s['rate'])}, upper 95% bound {_pct(hi)}; target "
        f"<= {_pct(res['target_upper'])}: **{verdict}**. "
        f"{s['candidates_per_market']:.0f} candidate options and a median of {s['n_trials_median']:.0f} "
        "trials per market.",
        "",
        "Which criterion does the work: markets where at least one candidate option passed the criterion, "
        "and (last column) markets where some option passed every other criterion but not this one.",
        "",
        "| criterion | noise: markets passing it | noise: share of options "
        "| noise: the only criterion failed |"
        + "".join(f" strength {k}: markets passing it |" for k in res["power"]),
        "|---|---|---|---|" + "---|" * len(res["power"]),
    ]
    for c, label in ((c, labels.get(c, c)) for c in s["criterion_markets"]):
        only = s["blocked_only_by"].get(c)
        L.append(
            f"| {label} | {s['criterion_markets'][c]} / {s['markets']} | "
            f"{_pct(s['criterion_option_share'][c])} | "
            f"{'' if only is None else only} |"
            + "".join(
                f" {p['summary']['criterion_markets'][c]} / {p['summary']['markets']} |"
                for p in res["power"].values()
            )
        )
    if s["passing_options"]:
        L += [
            "",
            "Options that passed on noise: "
            + ", ".join(f"{k} ({v})" for k, v in s["passing_options"].items())
            + ".",
        ]
    tr = {k: v["seconds"] for k, v in res["model_sets"].items()}
    total = wall + sum(tr.values()) + sum(p.get("wall_seconds", 0.0) for p in res["power"].values())
    parts = ""
    if res["noise"].get("markets"):  # the median of each part of a market's time
        med = {
            k: float(np.median([m["seconds"][k] for m in res["noise"]["markets"]]))
            for k in ("market", "inference", "compute")
        }
        parts = (
            f" (building the market and its datasets {med['market']:.1f} s, the models' inference "
            f"{med['inference']:.1f} s, `compute_run` {med['compute']:.1f} s)"
        )
    L += [
        "",
        f"Time per market: {sec['median']:.1f} s median{parts}, {sec['min']:.1f} to {sec['max']:.1f} s, "
        f"in one worker; {wall / s['markets']:.2f} s a market of wall-clock time over the noise markets "
        f"with {meta.get('workers', '?')} workers ({wall / 60:.1f} min for {s['markets']}). Training each "
        "model set: "
        + ", ".join(f"strength {k}: {v:.0f} s" for k, v in tr.items())
        + f". The whole run: {total / 60:.0f} min.",
        END_MARK,
    ]
    return L


def write_section(lines: Sequence[str], path: Path = MARKDOWN) -> None:
    """Put ``lines`` (a section with its markers) into ``path``: in place of the block between the
    markers when there is one, else appended."""
    text = path.read_text() if path.exists() else ""
    block = "\n".join(lines)
    i, j = text.find(START_MARK), text.find(END_MARK)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(END_MARK) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block + "\n"
    path.write_text(text)


# ----------------------------------------------------------------------------- the command


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=200, help="noise markets (K; default 200)")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed: every market's seed follows from it")
    ap.add_argument(
        "--strengths",
        type=float,
        nargs="*",
        default=list(DEFAULT_STRENGTHS),
        help="planted-edge strengths (default "
        f"{' '.join(f'{x:g}' for x in DEFAULT_STRENGTHS)}); none: no power",
    )
    ap.add_argument("--power-markets", type=int, default=50, help="markets per planted-edge strength")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes")
    ap.add_argument("--out", default=str(RESULTS), help="the results JSON")
    ap.add_argument("--markdown", default=str(MARKDOWN), help="the file the section goes into ('' for none)")
    ap.add_argument(
        "--models-dir", default=None, help="where the trained models go (default: a temporary folder)"
    )
    ap.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the BENCHMARKS.md section from the results JSON (--out), without running",
    )
    ap.add_argument("--note", default=None, help="a remark on the run kept with it (e.g. the machine's load)")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads(Path(args.out).read_text())
        if args.note is not None:
            res.setdefault("meta", {})["note"] = args.note
            Path(args.out).write_text(json.dumps(res, separators=(",", ":"), default=str) + "\n")
        write_section(calibration_markdown(res), Path(args.markdown or MARKDOWN))
        return res
    if args.markets < 1 or args.power_markets < 1 or args.workers < 1:
        ap.error("--markets, --power-markets and --workers must be >= 1")
    if any(not 0 < x <= 20 for x in args.strengths):
        ap.error("--strengths must lie in (0, 20]")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    tmp = None if args.models_dir else Path(tempfile.mkdtemp(prefix="gate-calibration-models-"))
    models_dir = Path(args.models_dir) if args.models_dir else tmp
    assert models_dir is not None
    try:
        res = calibrate(
            args.markets, args.seed, args.strengths, args.power_markets, args.workers, models_dir, log
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["benchmarks/gate_calibration.py", "--markets", str(args.markets), "--seed", str(args.seed)]
    cmd += ["--strengths", *(f"{x:g}" for x in args.strengths), "--power-markets", str(args.power_markets)]
    cmd += ["--workers", str(args.workers)]
    res["meta"] = {
        "command": "python " + " ".join(cmd),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": _machine(),
        "workers": args.workers,
        "seed": args.seed,
        "note": args.note,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # compact: a few hundred markets' outcomes
    Path(args.out).write_text(json.dumps(res, separators=(",", ":"), default=str) + "\n")
    if args.markdown:
        write_section(calibration_markdown(res), Path(args.markdown))
    s = res["noise"]["summary"]
    print(
        f"noise: {s['passed']}/{s['markets']} markets passed ({_pct(s['rate'])}, exact 95% interval "
        f"{_pct(s['ci95'][0])} to {_pct(s['ci95'][1])}; target upper <= {_pct(TARGET_UPPER)}: "
        f"{'met' if res['target_met'] else 'NOT met'})"
    )
    for k, p in res["power"].items():
        ps = p["summary"]
        print(f"strength {k}: {ps['passed']}/{ps['markets']} passed ({_pct(ps['rate'])})")
    sec = s["seconds_per_market"]
    print(
        f"time per market: {sec['median']:.1f} s median in one worker, "
        f"{res['noise']['wall_seconds'] / s['markets']:.2f} s wall with {args.workers} workers"
    )
    return res


def _machine() -> dict:
    """The machine, as ``benchmarks/run.py`` describes it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run import machine  # benchmarks/run.py

        return machine()
    except Exception as e:  # noqa: BLE001 - the figures stand without the machine's description
        return {"error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    main()
