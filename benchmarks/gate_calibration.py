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
(appended when absent, replaced when present). Each market's run is computed and judged in
``gate_calibration_judge.py``; the figures (exact intervals, the summary, the BENCHMARKS.md section)
are made in ``gate_calibration_report.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# its sibling modules, also when this file is loaded from elsewhere (as the tests load it)
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from gate_calibration_judge import evaluate_market, judge_run  # noqa: E402
from gate_calibration_report import (  # noqa: E402
    MARKDOWN,
    calibration_markdown,
    pct,
    summarise,
    write_section,
)

from flagcore.errors import FlagcoreError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "gate-calibration.json"
# planted-edge strengths (data.market's ``strength``): chosen so that power runs from low to high on
# the quick demo's 1,500 test bars, where the test period has no order-flow feed
DEFAULT_STRENGTHS = (2.0, 4.0, 8.0)
NOISE, EDGE = 0, 1  # seed groups: the noise markets, the planted-edge markets
TRAINING_MARKET = 2  # seed group of the market each model set is trained on
TARGET_UPPER = 0.05  # the false-pass rate's upper 95% bound must not exceed this


# ----------------------------------------------------------------------------- seeds


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


# ----------------------------------------------------------------------------- one market in a worker


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


# ----------------------------------------------------------------------------- the whole calibration


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


# ----------------------------------------------------------------------------- the command


def _parser() -> argparse.ArgumentParser:
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
    return ap


def _print_figures(res: Mapping, workers: int) -> None:
    """The run's headline figures, on stdout."""
    s = res["noise"]["summary"]
    print(
        f"noise: {s['passed']}/{s['markets']} markets passed ({pct(s['rate'])}, exact 95% interval "
        f"{pct(s['ci95'][0])} to {pct(s['ci95'][1])}; target upper <= {pct(TARGET_UPPER)}: "
        f"{'met' if res['target_met'] else 'NOT met'})"
    )
    for k, p in res["power"].items():
        ps = p["summary"]
        print(f"strength {k}: {ps['passed']}/{ps['markets']} passed ({pct(ps['rate'])})")
    sec = s["seconds_per_market"]
    print(
        f"time per market: {sec['median']:.1f} s median in one worker, "
        f"{res['noise']['wall_seconds'] / s['markets']:.2f} s wall with {workers} workers"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    ap = _parser()
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
    _print_figures(res, args.workers)
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
