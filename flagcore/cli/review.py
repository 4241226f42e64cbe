"""The review commands: ``report`` (a run's findings), ``review`` (a sign-off) and ``validate``.

``validate`` prints a stored run's HIFA criteria table per option, judged against the run's own
thresholds or a TOML file's, with how far each option is from passing; ``--retrain`` first runs
retraining CPCV and appends it to the run; ``--gate`` makes the exit code the gate's decision
(``VALIDATE_EPILOG``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flagcore.cli.options import Parents, add_command, config_argument, open_store, placement
from flagcore.cli.output import Stages, emit, mark
from flagcore.errors import FlagcoreError
from flagcore.vocab import BADGE, CRITERION, IDENTITY_SOURCES, NOT_A_TRIAL, VERDICTS

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers
    from flagcore.store.store import Store


def cmd_report(args: argparse.Namespace) -> int:
    from flagcore.analysis.review_policy import load_review_policy
    from flagcore.dashboard.report import render_report

    store = open_store(args)
    text = render_report(store, args.run, args.format, policy=load_review_policy(args.config))
    if args.out:
        out = Path(args.out)
        if out.parent and not out.parent.exists():
            raise FlagcoreError(f"{out}: the folder {out.parent} does not exist")
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    store = open_store(args)
    comment = args.comment
    if args.comment_file:
        comment = Path(args.comment_file).read_text(encoding="utf-8")
    # a name typed on the command line: stored "typed", shown unverified
    rid = store.add_review(args.run, args.reviewer, args.verdict, comment or "", identity_source="typed")
    emit(
        {"review_id": rid, "run_id": args.run, "identity_source": "typed"},
        args.json,
        [
            f"review {rid} recorded on run {args.run}: {args.verdict} by {args.reviewer.strip()}, "
            f"a {IDENTITY_SOURCES['typed']}"
        ],
    )
    return 0


def criteria_in_file(path: str) -> dict[str, Any]:
    """The HIFA settings a TOML file sets (validated), without the defaults it leaves out."""
    import tomllib

    from flagcore.analysis.gate import load_criteria

    full = load_criteria(path)
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {k: full[k] for k in data.get("hifa", data)}


def _criteria(args: argparse.Namespace) -> dict[str, Any] | None:
    """The thresholds ``validate`` judges with: --criteria, else the team config's [hifa] (--config or
    $FLAGCORE_CONFIG), else None (the run's own), as ``gate`` does."""
    from flagcore.analysis.review_policy import hifa_section

    if args.criteria:
        return criteria_in_file(args.criteria)
    return hifa_section(args.config)


def _cell(criteria: dict[str, Any], key: str, fmt: str) -> str:
    c = criteria.get(key)
    if c is None:  # a criterion the run did not store
        return f"{'-':>{len(fmt.format(0.0)) + 5}}"
    return f"{fmt.format(c['value'])} {mark(c['passed'])}"


def _option_line(o: dict[str, Any]) -> str:
    c = o["criteria"]
    p = o.get("dsr_probability")
    line = (
        f"  {o['title']:<32} {_cell(c, 'min_trades', '{:>7.0f}')} "
        f"{_cell(c, 'cpcv_mean_sharpe', '{:>13.2f}')} "
        f"{_cell(c, 'deflated_sharpe', '{:>9.2f}')} {'-' if p is None else f'{p:.3f}':>9} "
        f"{_cell(c, 'permutation_p', '{:>8.4f}')}  {BADGE[bool(o['passed_all'])]}"
    )
    if o.get("candidate") is False:
        line += "  (an upper bound, not a candidate)"
    if o.get("retrain_cpcv_mean_sharpe") is not None:
        line += f"  retraining CPCV mean Sharpe {o['retrain_cpcv_mean_sharpe']:.2f}"
    return line


def _years(y: float | None) -> str:
    return "never" if y is None else f"{y:,.2f} years"


def distance_lines(o: dict[str, Any]) -> list[str]:
    """How far one option is from passing: trades vs the minimum, both DSR readings with the rule,
    the minimum track record length and the minimum backtest length against the backtest's."""
    d, c = o.get("distance") or {}, o["criteria"]
    out = []
    if "trades" in d:
        out.append(f"trades {d['trades']} vs {d['min_trades']:g} ({c['min_trades']['rule_text']})")
    if "haircut" in d:
        p, pmin = d.get("dsr_probability"), d.get("dsr_probability_min")
        prob = "DSR probability -" if p is None else f"DSR probability {p:.3f} vs {pmin:g}"
        out.append(
            f"{prob}, SR - SR0 {d['haircut']:.2f} vs {d['haircut_min']:g} "
            f"({c['deflated_sharpe']['rule_text']})"
        )
        bars = d.get("min_track_record_bars")
        if bars is None:
            trl = "never (the Sharpe does not exceed SR0)"
        else:
            trl = f"{bars:,.0f} bars ({_years(d.get('min_track_record_years'))})"
        if d.get("n_obs") is not None:
            trl += f", has {d['n_obs']:,} bars"
        out.append(f"min track record {trl}")
        if "min_backtest_years" in d or d.get("backtest_years") is not None:
            out.append(
                f"min backtest length {_years(d.get('min_backtest_years'))} for {d.get('n_trials')} trials "
                f"vs {_years(d.get('backtest_years'))} backtested"
            )
    return [f"      {x}" for x in out]


def _thresholds_line(settings: dict[str, Any]) -> str:
    """The thresholds the table was judged against, each with its criterion's rule."""

    def rule(key: str) -> str:
        c = CRITERION[key]
        return f"{c.label} {c.rule} {settings[c.threshold_key]}"

    return (
        f"  thresholds: {rule('min_trades')}, {rule('cpcv_mean_sharpe')}, {rule('deflated_sharpe')} "
        f"and DSR probability >= {settings['dsr_probability_min']}, {rule('permutation_p')}"
    )


def validate_lines(table: dict[str, Any]) -> list[str]:
    """``flagcore validate``'s text: one line per option with each criterion's value and verdict,
    then how far the option is from passing."""
    lines = [
        f"HIFA criteria, run {table['run_id']} (CPCV mode: {table['cpcv_mode']}; {table['n_trials']} trials)",
        f"  {'option':<32} {'trades':>12} {'CPCV mean Sharpe':>18} {'SR - SR0':>14} {'DSR prob.':>9} "
        f"{'perm. p':>13}  verdict",
    ]
    for o in table["options"]:
        lines.append(_option_line(o))
        lines += distance_lines(o)
    lines.append(_thresholds_line(table["criteria"]))
    if table.get("defaults_added"):
        lines.append(
            f"  the run stored no {', '.join(table['defaults_added'])}: its stored values are judged "
            "with the defaults"
        )
    return lines


def gate_lines(gate: dict[str, Any]) -> list[str]:
    return [f"gate: {gate['message']} (exit code {gate['exit_code']})"]


def _newest_run(store: Store) -> int:
    runs = store.list_runs()
    if runs.empty:
        raise FlagcoreError(f"{store.path}: no runs to validate; run `flagcore demo` or `flagcore evaluate`")
    return int(runs["run_id"].iloc[0])


def cmd_validate(args: argparse.Namespace) -> int:
    from flagcore.pipeline.validate import gate_decision, rejudge, retrain_validation

    where = placement(args) if args.retrain else None  # bad values fail before any work
    store = open_store(args)
    run_id = _newest_run(store) if args.run is None else args.run
    result: dict[str, Any] = {"run_id": run_id}
    if args.retrain:
        stages = Stages(args.quiet)
        try:
            result["retrain"] = retrain_validation(
                store,
                run_id,
                options=args.options,
                quick=args.quick_retrain,
                progress=stages,
                placement=where,
            )
        finally:
            stages.close()
    table = rejudge(store, run_id, _criteria(args))
    result["criteria"] = table
    lines = validate_lines(table)
    code = 0
    if args.gate:
        gate = gate_decision(table)
        result["gate"] = gate.to_dict()
        lines += gate_lines(result["gate"])
        code = gate.exit_code
    emit(result, args.json, lines)
    return code


# ----------------------------------------------------------------------------- parsers


def _report_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=int, required=True, metavar="ID")
    s.add_argument("--format", choices=["md", "html"], default="md")
    s.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    config_argument(s, "the [review] policy the run's status is judged by")


def _review_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=int, required=True, metavar="ID")
    s.add_argument("--reviewer", required=True)
    s.add_argument("--verdict", required=True, choices=VERDICTS)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--comment", default="")
    g.add_argument("--comment-file", metavar="FILE", help="read the comment from a file")


def _validate_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=int, metavar="ID", help="default: the newest run")
    s.add_argument("--criteria", metavar="TOML", help="judge the stored values against these thresholds")
    config_argument(s, "without --criteria, judge with its [hifa] thresholds")
    s.add_argument(
        "--retrain",
        action="store_true",
        help="retraining CPCV: retrain the trainable options on every split (takes minutes)",
    )
    s.add_argument(
        "--options", metavar="LIST", help="with --retrain: comma-separated options (default: all trainable)"
    )
    s.add_argument("--quick-retrain", action="store_true", help="with --retrain: fewer windows per epoch")
    s.add_argument(
        "--gate",
        action="store_true",
        help="exit 0 when at least one candidate option passes every criterion, 4 when none does",
    )


# the codes of ``pipeline.validate.GATE_PASSED`` / ``GATE_FAILED``, written out so that building the
# parser does not import the pipeline (a test holds them equal)
VALIDATE_EPILOG = (
    "exit codes with --gate:\n"
    "  0  HIFA passed: at least one candidate option passes every criterion\n"
    "  4  HIFA failed: no candidate option passes every criterion\n"
    "  1  bad input (no such run, bad criteria file); 2 usage error; 3 internal error\n"
    f"candidates: every option but {', '.join(NOT_A_TRIAL)} (an upper bound, not a strategy).\n"
    "without --gate the exit code is 0 whatever the verdicts."
)


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``report``, ``review`` and ``validate``."""
    add_command(
        sub,
        "report",
        cmd_report,
        "Write a run's findings report (Markdown or HTML) from the store.",
        _report_arguments,
        parents.store,
    )
    add_command(
        sub,
        "review",
        cmd_review,
        "Record a review (sign-off) of a run; reviews are append-only.",
        _review_arguments,
        parents.store,
        parents.json,
    )
    sp = add_command(
        sub,
        "validate",
        cmd_validate,
        "The HIFA criteria table of a stored run, per option, and how far each is from passing; "
        "--retrain adds retraining CPCV; --gate exits non-zero when no candidate passes.",
        _validate_arguments,
        parents.retraining_placement,
        parents.store,
        parents.quiet,
        parents.json,
    )
    sp.epilog = VALIDATE_EPILOG
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
