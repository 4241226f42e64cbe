"""The data commands: ``check-data``, ``market`` and ``features``.

``market`` writes the embedded demo market, ``features`` turns an OHLCV file into datasets (features
and labels), and ``check-data`` checks a dataset file against the dataset contract.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flagcore.cli.options import Parents, add_command
from flagcore.cli.output import emit, shares_text
from flagcore.data.labels import METHODS
from flagcore.errors import FlagcoreError

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers


def _state_dim(args: argparse.Namespace) -> int:
    if getattr(args, "checkpoint", None):
        from flagcore.models.checkpoint import read_checkpoint

        return read_checkpoint(args.checkpoint)[1].config.state_dim
    return int(args.state_dim)


def cmd_check_data(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import load_dataset

    ds = load_dataset(
        args.data,
        state_dim=_state_dim(args),
        require_close=not args.no_close,
        label_horizon=args.label_horizon,
    )
    s = ds.summary()
    lines = [
        f"{s['source']}: {s['bars']:,} bars from {s['start']} to {s['end']}",
        f"  {s['features']} features, {len(s['padded_inputs'])} zero-padded inputs to {s['state_dim']}",
    ]
    if s["periods_per_year"] is not None:
        lines.append(
            f"  calendar {s['calendar']}: {s['periods_per_year']:,.1f} bars a year ({s['calendar_source']})"
        )
    if s["label_shares"]:
        lines.append("  labels " + shares_text(s["label_shares"], ".2%"))
    emit(s, args.json, lines)
    return 0


def cmd_market(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import write_dataset
    from flagcore.data.market import demo_market, stylised_facts

    bars = demo_market(seed=args.seed, strength=args.strength, test_bars=args.test_bars)
    write_dataset(
        bars, args.out, generator="flagcore.data.market.demo_market", seed=args.seed, strength=args.strength
    )
    facts = {"out": str(args.out), "seed": args.seed, "strength": args.strength, **stylised_facts(bars)}
    emit(
        facts,
        args.json,
        [
            f"wrote {args.out}: {facts['bars']:,} hourly bars ({facts['train_bars']:,} training, "
            f"{facts['test_bars']:,} test from 2025-01-01)",
            f"  annualised vol {facts['annualised_volatility']:.1%}, "
            f"excess kurtosis {facts['excess_kurtosis']:.1f}, ACF |r| lag 1/24/168: "
            + "/".join(f"{v:.2f}" for v in facts["acf_abs_returns"].values()),
        ],
    )
    return 0


def _dataset_path(out: Path, name: str) -> Path:
    """Where ``features`` writes the dataset ``name``: the file ``out``, or ``out/NAME.parquet`` if split."""
    if name == "all":
        return out if out.suffix else out.with_suffix(".parquet")
    if out.suffix:
        raise FlagcoreError(f"--out {out}: with --test-start give a folder (train and test files go in it)")
    return out / f"{name}.parquet"


def cmd_features(args: argparse.Namespace) -> int:
    from flagcore.data.calendar import check_periods_per_year
    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets, read_ohlcv

    ppy = args.periods_per_year
    if ppy is not None:
        ppy = check_periods_per_year(ppy, "--periods-per-year")
    bars = read_ohlcv(args.ohlcv)
    sets = build_datasets(
        bars,
        horizon=args.horizon,
        width=args.barrier_width,
        target_hold=args.target_hold,
        method=args.label_method,
        test_start=args.test_start,
        context=args.context,
        source=str(args.ohlcv),
        periods_per_year=ppy,
    )
    out = Path(args.out)
    written = {}
    for name, (df, meta) in sets.items():
        path = _dataset_path(out, name)
        write_dataset(df, path, **meta)
        written[name] = {
            "path": str(path),
            "bars": len(df),
            "features": len(df.columns) - 3,
            "label_shares": meta["label_shares"],
            "evaluation_start": meta.get("evaluation_start"),
        }
    some = next(iter(sets.values()))[1]
    summary = {
        "barrier_width": some["barrier_width"],
        "label_horizon": some["label_horizon"],
        "label_method": some["label_method"],
        "periods_per_year": some["periods_per_year"],
        "calendar": some["calendar"],
        "datasets": written,
    }
    lines = [
        f"barrier width {summary['barrier_width']:.4f} x sigma x sqrt({args.horizon}), {args.label_method}",
        f"  calendar {summary['calendar']}: {summary['periods_per_year']:,.1f} bars a year",
    ]
    for name, w in written.items():
        lines.append(
            f"  {name}: {w['path']} {w['bars']:,} bars, {w['features']} features, labels "
            + shares_text(w["label_shares"])
        )
    emit(summary, args.json, lines)
    return 0


# ----------------------------------------------------------------------------- parsers


def _check_data_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", required=True, metavar="FILE", help="CSV or Parquet")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--state-dim", type=int, default=60, help="model input width (default 60)")
    g.add_argument("--checkpoint", metavar="PATH", help="take the input width from this checkpoint")
    s.add_argument("--no-close", action="store_true", help="allow a file without 'close'")
    s.add_argument("--label-horizon", type=int, help="bars each label looks ahead")


def _market_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, metavar="FILE", help=".parquet or .csv")
    s.add_argument("--seed", type=int, default=2025)
    s.add_argument("--strength", type=float, default=1.0, help="predictable component; 0 = pure noise")
    s.add_argument("--test-bars", type=int, default=9073)


def _features_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--ohlcv",
        required=True,
        metavar="FILE",
        help="CSV or Parquet with timestamp, open, high, low, close, volume",
    )
    s.add_argument("--out", required=True, metavar="PATH", help="a file, or a folder with --test-start")
    s.add_argument("--test-start", metavar="DATE", help="write train.parquet and test.parquet split at DATE")
    s.add_argument("--horizon", type=int, default=24, help="label horizon in bars (default 24)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--barrier-width", type=float, help="barrier width in sigma * sqrt(horizon)")
    g.add_argument(
        "--target-hold",
        type=float,
        default=0.6142,
        help="calibrate the width to this HOLD share of the evaluated bars (default 0.6142)",
    )
    s.add_argument("--label-method", choices=METHODS, default=METHODS[0])
    s.add_argument(
        "--context", type=int, default=255, help="history bars before the test period (default 255)"
    )
    s.add_argument(
        "--periods-per-year",
        type=float,
        metavar="N",
        help="bars per year for annualising volatilities (default: the market's calendar, inferred "
        "from the bars: 24/7, 24/5, exchange sessions, daily 365 or 252, weekly, monthly)",
    )


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``check-data``, ``market`` and ``features``."""
    add_command(
        sub,
        "check-data",
        cmd_check_data,
        "Validate a dataset file against the dataset contract.",
        _check_data_arguments,
        parents.json,
    )
    add_command(
        sub,
        "market",
        cmd_market,
        "Write the embedded demo market: deterministic synthetic hourly OHLCV.",
        _market_arguments,
        parents.json,
    )
    add_command(
        sub,
        "features",
        cmd_features,
        "L1 features and triple-barrier labels from an OHLCV file.",
        _features_arguments,
        parents.json,
    )
