"""The run commands: ``evaluate`` and ``demo`` write a run to the result store; ``runs`` lists them.

:func:`runs_json` is every stored run with its author, its review status under the team's review
policy, its options and HIFA criteria (what ``runs --json`` prints): each criterion with its rule
in words and why it fails, the deflated Sharpe's readings (DSR probability, minimum track record
and backtest lengths) and the signal apart from its sizing;
:func:`runs_lines` is the same as a table for people.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from flagcore.cli.options import Parents, add_command, config_argument, open_store, placement
from flagcore.cli.output import Stages, emit, mark
from flagcore.vocab import CALIBRATIONS, CLASS_NAMES, PRECISIONS, collapse_label

if TYPE_CHECKING:
    import pandas as pd

    from flagcore.analysis.review_policy import ReviewPolicy
    from flagcore.cli.options import Subparsers
    from flagcore.pipeline.settings import EvaluateSettings
    from flagcore.store.store import Store

# option_results columns holding each class's share of the actions, in class order
SHARE_COLUMNS = tuple(f"share_{c.lower()}" for c in CLASS_NAMES)


def _criterion_json(result) -> dict[str, Any]:
    """One criterion (a ``CriterionResult`` read back from the store, or None where the run was stored
    before it) as ``runs --json`` prints it: value, threshold, rule and its text, passed, why not."""
    from flagcore.analysis.gate import rule_text
    from flagcore.dashboard.gate_views import NOT_JUDGED, finite, why_text

    if result is None:
        return {
            "judged": False,
            "value": None,
            "threshold": None,
            "rule": None,
            "rule_text": None,
            "passed": None,
            "why": NOT_JUDGED,
        }
    return {
        "judged": True,
        "value": finite(result.value),
        "threshold": result.threshold,
        "rule": result.rule,
        "rule_text": rule_text(result),
        "passed": bool(result.passed),
        "why": why_text(result),
    }


def _option_json(o: pd.Series, crit: pd.DataFrame) -> dict[str, Any]:
    """One option of a run as ``runs --json`` prints it; ``crit`` are its HIFA criteria rows. Every
    number is finite or null: a minimum track record or backtest length that no length reaches is
    null with ``..._reachable`` false."""
    import pandas as pd

    from flagcore.dashboard.gate_views import deflated_json, finite, signals_of, stored_criteria

    results = stored_criteria(crit, o["option"])
    metrics = o["metrics"] or {}
    return {
        "title": o["title"],
        "action_shares": {c: o[col] for c, col in zip(CLASS_NAMES, SHARE_COLUMNS, strict=True)},
        "signals": signals_of(metrics),
        "trades": int(o["trades"]),
        "sharpe": finite(o["sharpe"]),
        "sharpe_defined": bool(o["sharpe_defined"]),
        "total_return": finite(o["total_return"]),
        "accuracy": None if pd.isna(o["accuracy"]) else o["accuracy"],
        "hifa": {k: _criterion_json(r) for k, r in results.items()},
        "hifa_passed_all": bool(len(crit) and crit["passed"].all()),
        **deflated_json(results["deflated_sharpe"]),
        # the signal apart from its sizing (null for runs stored before it)
        "unit": metrics.get("unit"),
        "sizing": metrics.get("sizing"),
    }


def _run_json(r: pd.Series) -> dict[str, Any]:
    """A run's own fields (no options yet) from a ``Store.list_runs`` row."""
    import pandas as pd

    from flagcore.store.codec import from_json

    summary = from_json(r["summary"])
    inference = summary.get("inference") or {}  # runs stored before it inferred in fp32
    sample = (summary.get("payoff_period") or {}).get("sample") or {}
    return {
        "run_id": int(r["run_id"]),
        "name": r["name"],
        "created_at": r["created_at"].isoformat(),
        "model_id": r["model_id"],
        "dataset_id": r["dataset_id"],
        "author": None if pd.isna(r["author"]) else r["author"],
        "collapse": (summary.get("collapse") or {}),
        "n_trials": summary.get("n_trials"),
        "pbo": summary.get("pbo"),
        "precision": (inference.get("baseline") or {}).get("precision", "fp32"),
        "inference": inference,
        "payoff_sample": sample.get("source"),
        "latest_review": None
        if pd.isna(r["latest_verdict"])
        else {"verdict": r["latest_verdict"], "reviewer": r["latest_reviewer"]},
        "options": {},
    }


def runs_json(store: Store, policy: ReviewPolicy | None = None) -> list[dict[str, Any]]:
    """Every run with its author, its review status and its options: action shares, trades, Sharpe
    and the HIFA criteria.

    Parameters
    ----------
    store
        The result store.
    policy
        The team's review policy the status is judged by (default ``ReviewPolicy()``).

    Returns
    -------
    list of dict
        One dict per run, newest first, with its options in table order.
    """
    runs = store.list_runs()
    if runs.empty:
        return []
    opts = store.option_results()
    hifa = store.hifa()
    statuses = store.run_statuses(policy)
    out = []
    for _, r in runs.iterrows():
        run = _run_json(r)
        run["status"] = statuses[int(r["run_id"])].to_dict()
        for _, o in opts[opts["run_id"] == r["run_id"]].iterrows():
            crit = hifa[(hifa["run_id"] == r["run_id"]) & (hifa["option"] == o["option"])]
            run["options"][o["option"]] = _option_json(o, crit)
        out.append(run)
    return out


def _trl_text(o: dict[str, Any]) -> str:
    """The minimum track record in a text table: bars, "never" or "n/a"."""
    if o["min_track_record_reachable"] is None:
        return "n/a"
    return f"{o['min_track_record_bars']:,.0f}" if o["min_track_record_reachable"] else "never"


def runs_lines(store: Store, only: list[int] | None = None, policy: ReviewPolicy | None = None) -> list[str]:
    """The runs (or the ones in ``only``) as text: a heading line per run, its author and review status
    under ``policy``, then its options table with
    signals and trades, Sharpe, the DSR probability, the minimum track record (bars) against the
    backtest's bars, and one mark per HIFA criterion (``vocab.CRITERIA`` order; ``-`` not judged)."""
    from flagcore.vocab import CRITERIA

    lines = []
    for run in runs_json(store, policy):
        if only is not None and run["run_id"] not in only:
            continue
        review = run["latest_review"]
        status = run["status"]
        lines.append(
            f"run {run['run_id']}: {run['name']} ({run['created_at'][:16]}) by {run['author'] or 'unknown'}, "
            f"baseline {collapse_label(run['collapse'])}; {run['n_trials']} trials; "
            f"{run['precision']} inference; "
            f"review: {review['verdict'] + ' by ' + review['reviewer'] if review else 'none'}"
        )
        lines.append(f"  status: {status['status']} ({'; '.join(status['reasons'])})")
        crit = " ".join(c.key for c in CRITERIA)
        lines.append(
            f"  {'option':<32} "
            + " ".join(f"{c:>6}" for c in CLASS_NAMES)
            + f" {'signals':>7} {'trades':>6} {'Sharpe':>7} {'DSR p':>6} {'MinTRL':>8} {'bars':>6}"
            + f"  HIFA ({crit})"
        )
        for o in run["options"].values():
            sh = o["action_shares"]
            marks = " ".join(mark(c["passed"]) if c["judged"] else "-" for c in o["hifa"].values())
            signals = "n/a" if o["signals"] is None else f"{o['signals']:,}"
            dsr = "n/a" if o["dsr_probability"] is None else f"{o['dsr_probability']:.3f}"
            bars = "n/a" if o["n_obs"] is None else f"{o['n_obs']:,}"
            sharpe = "n/a" if o["sharpe"] is None else f"{o['sharpe']:.2f}"
            lines.append(
                f"  {o['title']:<32} "
                + " ".join(f"{sh[c]:>6.1%}" for c in CLASS_NAMES)
                + f" {signals:>7} {o['trades']:>6} {sharpe:>7} {dsr:>6} {_trl_text(o):>8} {bars:>6}  {marks}"
            )
    return lines


def settings(args: argparse.Namespace) -> EvaluateSettings:
    """The evaluation settings from ``evaluate``'s options (``--criteria`` read and checked here)."""
    from flagcore.analysis.backtest import BacktestConfig
    from flagcore.analysis.gate import load_criteria
    from flagcore.analysis.review_policy import hifa_section
    from flagcore.pipeline.settings import EvaluateSettings

    bt = BacktestConfig(
        sizing=args.sizing,
        kelly_fraction=args.kelly_fraction,
        fee_bps=args.fee_bps,
        slippage_bps=args.slippage_bps,
        hold=args.hold,
    )
    # --criteria, else the team config's [hifa] (--config or $FLAGCORE_CONFIG), else the defaults
    criteria = load_criteria(args.criteria)
    if not args.criteria:
        criteria.update(hifa_section(args.config) or {})
    return EvaluateSettings(
        hold_threshold=args.hold_threshold,
        tau=args.tau,
        backtest=bt,
        criteria=criteria,
        periods_per_year=args.periods_per_year,
        calibration=args.calibration,
        payoff_sample=args.payoff_sample,
        precision=args.precision,
        device=args.device,
        author=args.author if args.author is not None else os_user(),
    )


def os_user() -> str | None:
    """The OS user running flagcore (``evaluate``'s default ``--author``), or None when unknown."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _run_line(res: dict) -> str:
    inf = res["inference"]
    return (
        f"run {res['run_id']} {'reused' if res['reused'] else 'written'} in {res['seconds']:.1f}s "
        f"(inference: {inf['computed']} computed, {inf['cached']} from the store cache)"
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flagcore.analysis.review_policy import load_review_policy
    from flagcore.pipeline.evaluate import evaluate

    policy = load_review_policy(args.config)  # a bad config fails before any work
    store = open_store(args)
    stages = Stages(args.quiet)
    try:
        res = evaluate(
            args.checkpoint,
            args.data,
            store=store,
            train_data=args.train,
            partner=args.partner,
            retrained=args.retrained or (),
            name=args.name,
            settings=settings(args),
            progress=stages,
            placement=placement(args),
        )
    finally:
        stages.close()
    lines = [_run_line(res), *runs_lines(store, [res["run_id"]], policy)]
    if args.precision != "fp32":  # how far the lower precision moved the model, and whether to check
        from flagcore.dashboard.views import precision_line

        run = store.run(res["run_id"])
        lines.append(precision_line(run["settings"], run["summary"]))
    emit({**res, "store": str(store.path)}, args.json, lines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flagcore.training.tasks import start_workers_early

    start_workers_early()  # the workers' imports (torch, peft: seconds) overlap the CLI's own start
    from flagcore.analysis.review_policy import load_review_policy
    from flagcore.pipeline.demo import build_demo  # pandas and the pipeline: after the workers' start

    policy = load_review_policy(None)  # $FLAGCORE_CONFIG: a bad file fails before the demo is built
    store = open_store(args)
    stages = Stages(args.quiet)
    try:
        res = build_demo(store, quick=args.quick, root=args.root, progress=stages, device=args.device)
    finally:
        stages.close()
    lines = [
        f"demo {'(quick) ' if args.quick else ''}ready in {res['seconds']:.0f}s: "
        + ", ".join(f"{k} {v}" for k, v in res["steps"].items()),
        f"store {store.path}, run {res['run_id']}",
    ]
    lines += runs_lines(store, [res["run_id"]], policy)
    emit({**res, "store": str(store.path)}, args.json, lines)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from flagcore.analysis.review_policy import load_review_policy

    policy = load_review_policy(args.config)
    store = open_store(args)
    data = runs_json(store, policy)
    if args.json:
        emit({"store": str(store.path), "runs": data}, True, [])
    else:
        none = f"no runs in {store.path}; run `flagcore demo` or `flagcore evaluate`"
        emit({}, False, runs_lines(store, policy=policy) if data else [none])
    return 0


# ----------------------------------------------------------------------------- parsers


def _evaluation_arguments(s: argparse.ArgumentParser) -> None:
    """How the options are computed and judged: threshold, tau, backtest costs, HIFA thresholds."""
    s.add_argument("--hold-threshold", type=float, default=0.95, help="option 3's threshold (default 0.95)")
    s.add_argument("--tau", type=float, default=1.0, help="logit adjustment strength (default 1)")
    s.add_argument("--sizing", choices=["kelly", "unit"], default="kelly")
    s.add_argument("--kelly-fraction", type=float, default=0.5)
    s.add_argument("--fee-bps", type=float, default=4.0)
    s.add_argument("--slippage-bps", type=float, default=2.0)
    s.add_argument(
        "--hold", choices=["flat", "keep"], default="flat", help="what HOLD means for the position"
    )
    s.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        default="none",
        help="probabilities Kelly sizing reads: the model's (none), or calibrated on the training period",
    )
    s.add_argument(
        "--periods-per-year",
        type=float,
        metavar="N",
        help="bars per year for annualising (default: from the data's calendar, e.g. 8766 hourly 24/7)",
    )
    s.add_argument("--criteria", metavar="TOML", help="HIFA thresholds ([hifa] table; default the seed's)")
    s.add_argument(
        "--payoff-sample",
        type=int,
        metavar="BARS",
        help="infer only a sample of the training year for the payoff ratios: blocks of 250 bars spread "
        "over it, the ratio with its standard error (default: the whole year)",
    )
    s.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8: the transformer's Linear layers in int8 on the CPU, about 2x faster; agreement "
        "with fp32 is measured on a sample and stored with the run",
    )


def _evaluate_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="the model under review (plain CE baseline)"
    )
    s.add_argument("--data", required=True, metavar="FILE", help="evaluation dataset")
    s.add_argument(
        "--train", metavar="FILE", help="training dataset: label prior, payoff ratios, feature shift"
    )
    s.add_argument(
        "--partner", metavar="FILE_OR_CKPT", help="ensemble partner: a CGDT checkpoint or a predictions file"
    )
    s.add_argument(
        "--retrained",
        action="append",
        metavar="[ROLE=]PATH",
        help="a retrained checkpoint or predictions file (repeatable); role from its training "
        "loss unless given, e.g. walk_forward=preds.parquet",
    )
    s.add_argument("--name", help="run name (default: the dataset's file name)")
    s.add_argument(
        "--author", metavar="NAME", help="who asks for this run, recorded with it (default: the OS user)"
    )
    _evaluation_arguments(s)
    config_argument(s, "[hifa] thresholds unless --criteria; [review] policy for the status shown")


def _demo_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--quick", action="store_true", help="small market and short training (under a minute)")
    s.add_argument("--root", metavar="DIR", help="where demo artifacts go (default data/demo)")


def _runs_arguments(s: argparse.ArgumentParser) -> None:
    config_argument(s, "the [review] policy each run's status is judged by")


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``evaluate``, ``demo`` and ``runs``."""
    add_command(
        sub,
        "evaluate",
        cmd_evaluate,
        "Evaluate a checkpoint on a dataset: diagnostics, every option, backtests, HIFA; written to "
        "the store as one run.",
        _evaluate_arguments,
        parents.device,
        parents.inference_placement,
        parents.store,
        parents.quiet,
        parents.json,
    )
    add_command(
        sub,
        "demo",
        cmd_demo,
        "Build the embedded demo end to end and evaluate it into the store (idempotent).",
        _demo_arguments,
        parents.device,
        parents.store,
        parents.quiet,
        parents.json,
    )
    add_command(
        sub,
        "runs",
        cmd_runs,
        "List the stored runs with their author, review status, options and HIFA verdicts.",
        _runs_arguments,
        parents.store,
        parents.json,
    )
