"""``flagcore explain``: why a run's baseline collapsed, each suspected cause tested on the model.

Prints the verdict table first (each cause, its verdict, the rule applied and the numbers it
read), then the measures. The result is appended to the run; ``--stored`` prints the newest
stored result without computing. When the run's checkpoint is gone or changed, the newest stored
result is printed (if any) and the command fails with one line naming the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flagcore.cli.options import Parents, add_command, open_store
from flagcore.cli.output import Stages, emit
from flagcore.errors import FlagcoreError
from flagcore.vocab import CLASS_NAMES, ROOT_CAUSES

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers

DEFAULT_BARS = 500  # pipeline.explain.DEFAULT_BARS, written out so that the parser imports no torch

OUTCOME_ROWS = (
    ("test", "test period"),
    ("padding_median", "padding filled: medians"),
    ("padding_resample", "padding filled: training rows"),
    ("shift", "shift mapped by quantiles"),
    ("in_sample", "training period's last year"),
)


def _num(v: Any, fmt: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return format(v, fmt)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} {_num(x, fmt)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_num(x, fmt) for x in v) + "]"
    return str(v)


def verdict_lines(verdicts: list[dict]) -> list[str]:
    """The verdict table: one row per cause (title, verdict), then its rule, numbers and what is missing."""
    width = max([len(t) for t in ROOT_CAUSES.values()] + [5])
    lines = [f"  {'cause':<{width}}  verdict"]
    for v in verdicts:
        title = v.get("title") or ROOT_CAUSES.get(v.get("cause", ""), v.get("cause", "?"))
        lines.append(f"  {title:<{width}}  {v.get('verdict', '?')}")
        if v.get("rule"):
            lines.append(f"      rule: {v['rule']}")
        numbers = v.get("numbers") or {}
        if numbers:
            lines.append("      numbers: " + ", ".join(f"{k} {_num(x)}" for k, x in numbers.items()))
        if v.get("missing"):
            lines.append(f"      missing: {', '.join(v['missing'])}")
    return lines


def _outcome_line(label: str, o: Mapping[str, Any]) -> str:
    shares = o.get("action_shares") or {}
    cells = " ".join(f"{shares.get(c, float('nan')):>6.1%}" for c in CLASS_NAMES)
    sharpe = o.get("sharpe")
    sharpe_text = "-" if sharpe is None or o.get("sharpe_defined") is False else f"{sharpe:.2f}"
    conf = o.get("mean_confidence")
    return (
        f"  {label:<30} {cells} {'-' if conf is None else f'{conf:.1%}':>7} {o.get('trades', '-'):>7} "
        f"{sharpe_text:>7}  {'yes' if o.get('collapsed') else 'no'}"
    )


def measure_lines(payload: Mapping[str, Any]) -> list[str]:
    """The measures: outcomes side by side, the prior checks, sensitivity, attribution, what is missing."""
    m = payload.get("measures") or {}
    s = payload.get("settings") or {}
    sample = s.get("test_sample") or {}
    head = f"Measures on {sample.get('bars', '?')} sampled test bars"
    if sample.get("stride", 1) > 1:
        head += f" (one bar in {sample['stride']})"
    lines = [
        head,
        f"  {'':<30} {'SELL':>6} {'HOLD':>6} {'BUY':>6} {'conf.':>7} {'trades':>7} {'Sharpe':>7}  collapsed",
    ]
    for key, label in OUTCOME_ROWS:
        if m.get(key):
            lines.append(_outcome_line(label, m[key]))
    if m.get("shifted_inputs"):
        lines.append(f"  shifted inputs mapped: {', '.join(m['shifted_inputs'])}")
    elif m.get("shift"):
        lines.append("  no input shifted: no real input has PSI > 0.25; the shift row is the test period")
    for key, label in (("prior", "test period"), ("in_sample_prior", "training period's last year")):
        p = m.get(key)
        if p:
            lines.append(
                f"  prior check, {label}: prior {_num(p.get('prior'), '.2f')}, predicted "
                f"{_num(p.get('predicted_shares'), '.2f')}; "
                f"mean gaps HOLD-c {_num(p.get('mean_gaps'), '.2f')} "
                f"vs log prior ratios {_num(p.get('log_prior_ratios'), '.2f')}; the prior explains "
                f"{_num(p.get('margin_explained'), '.0%')} of the HOLD margin"
            )
    sens = m.get("sensitivity")
    if sens:
        lines.append(
            f"  sensitivity: gap mean {_num(sens.get('gap_mean'))}, std {_num(sens.get('gap_std'))} "
            f"(variation ratio {_num(sens.get('variation_ratio'))}); shuffled-time change "
            f"{_num(sens.get('shuffled_change'))}, "
            f"constant-input change {_num(sens.get('constant_change'))}; "
            f"input-blind {_num(sens.get('input_blind'))}"
        )
    att = m.get("attribution")
    if att:
        top = ", ".join(f"{name} {share:.1%}" for name, share in (att.get("top") or [])[:5])
        lines.append(
            f"  attribution (integrated gradients of the logit gap): top {top}; padded inputs' share "
            f"{_num(att.get('padded_share'), '.1%')}; "
            f"completeness error {_num(att.get('completeness_error'))}"
        )
    for k, why in (payload.get("missing") or {}).items():
        lines.append(f"  missing {k}: {why}")
    return lines


def explain_lines(payload: Mapping[str, Any]) -> list[str]:
    """``flagcore explain``'s text: a heading, the verdict table, then the measures."""
    s = payload.get("settings") or {}
    test = (payload.get("measures") or {}).get("test") or {}
    state = "collapses" if test.get("collapsed") else "does not collapse"
    lines = [
        f"Root cause of the collapse, run {payload.get('run_id')}: the baseline {state} on the test period "
        f"(computed {payload.get('computed_at')}; {s.get('bars')} bars, seed {s.get('seed')})"
    ]
    lines += verdict_lines(list(payload.get("verdicts") or []))
    lines += measure_lines(payload)
    return lines


def cmd_explain(args: argparse.Namespace) -> int:
    from flagcore.pipeline.explain import explain_run
    from flagcore.pipeline.explain_inputs import CheckpointUnavailable

    store = open_store(args)
    store.run(args.run)  # an unknown run: one line, before any work
    if args.stored:
        payload = store.root_cause(args.run)
        if payload is None:
            raise FlagcoreError(
                f"run {args.run} has no stored explain; run `flagcore explain --run {args.run}`"
            )
        emit(payload, args.json, explain_lines(payload))
        return 0
    stages = Stages(args.quiet)
    try:
        result = explain_run(
            store,
            args.run,
            bars=args.bars,
            seed=args.seed,
            ig_windows=args.ig_windows,
            device=args.device,
            progress=stages,
        )
    except CheckpointUnavailable:
        stages.close()  # the bar off the screen before the stored table
        stored = store.root_cause(args.run)
        if stored is not None:  # the results stored earlier still show
            emit(stored, args.json, ["(stored result)", *explain_lines(stored)])
        raise
    finally:
        stages.close()
    payload = result.to_dict()
    emit(payload, args.json, explain_lines(payload))
    return 0


def _explain_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=int, required=True, metavar="ID")
    s.add_argument(
        "--bars",
        type=int,
        default=DEFAULT_BARS,
        metavar="N",
        help=f"evaluated bars sampled for the counterfactuals (default {DEFAULT_BARS})",
    )
    s.add_argument("--seed", type=int, default=0, help="fixes the sample, the resampled rows, the shuffles")
    s.add_argument(
        "--ig-windows",
        type=int,
        default=64,
        metavar="N",
        help="windows integrated gradients attributes (default 64; 0: none)",
    )
    s.add_argument("--stored", action="store_true", help="print the newest stored result, compute nothing")


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``explain``."""
    add_command(
        sub,
        "explain",
        cmd_explain,
        "Why a run's baseline collapsed: the label prior, padding, shift, input sensitivity and "
        "overconfidence tested on the model, one verdict each; the result is stored with the run.",
        _explain_arguments,
        parents.device,
        parents.store,
        parents.quiet,
        parents.json,
    )
