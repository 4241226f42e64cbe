"""The ``flagcore`` command.

Exit codes: 0 success; 1 a problem with the input (one line on stderr naming the file, column or
value); 2 a usage error; 3 an unexpected internal error (set FLAGCORE_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flagcore import __version__
from flagcore.errors import FlagcoreError


def _emit(data: dict, as_json: bool, text_lines: list[str]) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(text_lines) + "\n")


def _progress(label: str, quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=label, unit="bar", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


# ----------------------------------------------------------------------------- commands


def cmd_info(args: argparse.Namespace) -> int:
    if args.preset:
        from flagcore.model import build_model, describe, preset

        info = {"preset": args.preset, **describe(build_model(preset(args.preset)))}
    else:
        from flagcore.checkpoint import checkpoint_summary

        info = checkpoint_summary(args.checkpoint, num_heads=args.num_heads)
    cfg = info["config"]
    lines = [
        f"{'preset ' + args.preset if args.preset else info['path']}",
        "  " + ", ".join(f"{k} {v}" for k, v in cfg.items()),
        f"  total parameters      {info['total_params']:>14,}",
        f"  trainable parameters  {info['trainable_params']:>14,}",
    ]
    if not args.preset:
        lines.append(f"  format {info['source_format']}, sha256 {info['sha256'][:16]}")
        if info["padded_inputs"]:
            lines.append(f"  zero-padded inputs {info['padded_inputs'][0]}..{info['padded_inputs'][-1]}")
    _emit(info, args.json, lines)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from flagcore.checkpoint import checkpoint_summary, import_checkpoint

    out = import_checkpoint(args.source, args.out, num_heads=args.num_heads, window=args.window)
    info = checkpoint_summary(out)
    _emit(info, args.json, [f"wrote {out} ({info['total_params']:,} parameters, "
                            f"{info['trainable_params']:,} trainable)"])
    return 0


def _state_dim(args: argparse.Namespace) -> int:
    if getattr(args, "checkpoint", None):
        from flagcore.checkpoint import read_checkpoint

        return read_checkpoint(args.checkpoint)[1].config.state_dim
    return args.state_dim


def cmd_check_data(args: argparse.Namespace) -> int:
    from flagcore.data import load_dataset

    ds = load_dataset(args.data, state_dim=_state_dim(args), require_close=not args.no_close,
                      label_horizon=args.label_horizon)
    s = ds.summary()
    lines = [
        f"{s['source']}: {s['bars']:,} bars from {s['start']} to {s['end']}",
        f"  {s['features']} features, {len(s['padded_inputs'])} zero-padded inputs to {s['state_dim']}",
    ]
    if s["label_shares"]:
        lines.append("  labels " + ", ".join(f"{k} {v:.2%}" for k, v in s["label_shares"].items()))
    _emit(s, args.json, lines)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from flagcore.checkpoint import load_checkpoint
    from flagcore.data import CLASS_NAMES, load_dataset, write_dataset
    from flagcore.inference import predict

    model = load_checkpoint(args.checkpoint, window=args.window)
    cfg = model.checkpoint_info.config
    ds = load_dataset(args.data, state_dim=cfg.state_dim, require_close=False)
    update, close = _progress("predict", args.quiet)
    try:
        pred = predict(model, ds.features, batch_size=args.batch_size, device=args.device,
                       progress=update)
    finally:
        close()
    out = pd.DataFrame({"timestamp": ds.timestamps})
    for j, c in enumerate(CLASS_NAMES):
        out[f"logit_{c.lower()}"] = pred.logits[:, j]
    for j, c in enumerate(CLASS_NAMES):
        out[f"prob_{c.lower()}"] = pred.probs[:, j]
    out["action"] = np.asarray(CLASS_NAMES)[pred.action]
    out["confidence"] = pred.confidence
    out["short_history"] = pred.short_history
    write_dataset(out, args.out)
    counts = np.bincount(pred.action, minlength=3)
    summary = {
        "out": str(args.out), "bars": len(pred), "window": pred.window,
        "short_history_bars": int(pred.short_history.sum()),
        "action_counts": {c: int(counts[j]) for j, c in enumerate(CLASS_NAMES)},
        "action_shares": {c: float(counts[j] / len(pred)) for j, c in enumerate(CLASS_NAMES)},
        "confidence": {"mean": float(pred.confidence.mean()), "min": float(pred.confidence.min()),
                       "max": float(pred.confidence.max())},
        "padded_inputs": ds.padded_inputs,
    }
    lines = [f"wrote {args.out}: {len(pred):,} bars, window {pred.window}"] + [
        f"  {c:<4} {counts[j]:>8,} ({counts[j] / len(pred):.2%})" for j, c in enumerate(CLASS_NAMES)
    ]
    _emit(summary, args.json, lines)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from flagcore.checkpoint import checkpoint_summary, save_checkpoint
    from flagcore.model import build_model, preset

    model = build_model(preset(args.preset), seed=args.seed)
    out = save_checkpoint(model, args.out, provenance={"initialised": "random", "preset": args.preset,
                                                         "seed": args.seed})
    info = checkpoint_summary(out)
    _emit(info, args.json, [f"wrote {out}: untrained {args.preset} model, seed {args.seed}"])
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flagcore",
        description="Validation review for trading models: load, diagnose, backtest, validate.",
    )
    p.add_argument("--version", action="version", version=f"flagcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        return sp

    s = add("info", cmd_info, "Architecture and parameter counts of a preset or a checkpoint.")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", choices=["full", "demo"], help="a built-in configuration")
    g.add_argument("--checkpoint", metavar="PATH", help="a flagcore or reviewed-format checkpoint")
    s.add_argument("--num-heads", type=int, help="heads of a reviewed checkpoint (default 8)")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("import", cmd_import, "Convert a reviewed-format torch checkpoint to flagcore's format.")
    s.add_argument("source", metavar="SRC", help="torch checkpoint in the reviewed layout")
    s.add_argument("--out", required=True, metavar="PATH", help="file (.safetensors) or folder to write")
    s.add_argument("--num-heads", type=int, help="attention heads (not stored in the file; default 8)")
    s.add_argument("--window", type=int, help="bars per inference window (default min(64, max_length))")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("check-data", cmd_check_data, "Validate a dataset file against the dataset contract.")
    s.add_argument("--data", required=True, metavar="FILE", help="CSV or Parquet")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--state-dim", type=int, default=60, help="model input width (default 60)")
    g.add_argument("--checkpoint", metavar="PATH", help="take the input width from this checkpoint")
    s.add_argument("--no-close", action="store_true", help="allow a file without 'close'")
    s.add_argument("--label-horizon", type=int, help="bars each label looks ahead")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("predict", cmd_predict, "Run a checkpoint over a dataset: logits, action, confidence per bar.")
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument("--data", required=True, metavar="FILE", help="CSV or Parquet")
    s.add_argument("--out", required=True, metavar="FILE", help="predictions, .parquet or .csv")
    s.add_argument("--window", type=int, help="bars per window (default: the checkpoint's)")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print a JSON summary")

    s = add("init", cmd_init, "Write an untrained, randomly initialised checkpoint of a preset.")
    s.add_argument("--preset", choices=["full", "demo"], required=True)
    s.add_argument("--out", required=True, metavar="PATH")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FlagcoreError as e:
        print(f"flagcore: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("flagcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the one place that turns surprises into one line
        if os.environ.get("FLAGCORE_DEBUG"):
            raise
        where = Path(e.__traceback__.tb_frame.f_code.co_filename).name if e.__traceback__ else "?"
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"flagcore: internal error: {type(e).__name__}: {msg} (in {where}; "
              "FLAGCORE_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
