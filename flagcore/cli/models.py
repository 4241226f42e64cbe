"""The model commands: ``info``, ``import``, ``init``, ``predict`` and ``diagnose``.

Each command loads what it needs when it runs (torch is heavy), so ``flagcore --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from flagcore.cli.options import PRESET_NAMES, Parents, add_command
from flagcore.cli.output import emit, progress
from flagcore.vocab import CLASS_NAMES, collapse_label

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers


def cmd_info(args: argparse.Namespace) -> int:
    if args.preset:
        import torch

        from flagcore.models.flag_trader import build_model, describe, preset

        with torch.device("meta"):  # shapes only: the counts without allocating or initialising weights
            info = {"preset": args.preset, **describe(build_model(preset(args.preset)))}
    else:
        from flagcore.models.checkpoint import checkpoint_summary

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
    emit(info, args.json, lines)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import checkpoint_summary, import_checkpoint

    out = import_checkpoint(args.source, args.out, num_heads=args.num_heads, window=args.window)
    info = checkpoint_summary(out)
    emit(
        info,
        args.json,
        [f"wrote {out} ({info['total_params']:,} parameters, {info['trainable_params']:,} trainable)"],
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import checkpoint_summary, save_checkpoint
    from flagcore.models.flag_trader import build_model, preset

    model = build_model(preset(args.preset), seed=args.seed)
    out = save_checkpoint(
        model, args.out, provenance={"initialised": "random", "preset": args.preset, "seed": args.seed}
    )
    info = checkpoint_summary(out)
    emit(info, args.json, [f"wrote {out}: untrained {args.preset} model, seed {args.seed}"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.models.checkpoint import is_cgdt, load_checkpoint
    from flagcore.models.inference import action_summary, predict, predictions_frame

    update, close = progress("predict", args.quiet)
    try:
        if is_cgdt(args.checkpoint):
            from flagcore.models.cgdt_file import load_cgdt
            from flagcore.models.cgdt_predict import predict_cgdt

            cgdt = load_cgdt(args.checkpoint)
            ds = load_dataset(args.data, state_dim=cgdt.config.state_dim, require_close=False)
            pred = predict_cgdt(cgdt, ds, progress=update)
        else:
            model = load_checkpoint(args.checkpoint, window=args.window)
            ds = load_dataset(
                args.data, state_dim=model.checkpoint_info.config.state_dim, require_close=False
            )
            pred = predict(
                model, ds.features, batch_size=args.batch_size, device=args.device, progress=update
            )
    finally:
        close()
    write_dataset(predictions_frame(ds.timestamps, pred), args.out)
    summary = {
        "out": str(args.out),
        "window": pred.window,
        "short_history_bars": int(pred.short_history.sum()),
        "padded_inputs": ds.padded_inputs,
        **action_summary(pred, ds.labels),
    }
    lines = [f"wrote {args.out}: {len(pred):,} bars, window {pred.window}"] + [
        f"  {c:<4} {k:>8,} ({summary['action_shares'][c]:.2%})" for c, k in summary["action_counts"].items()
    ]
    emit(summary, args.json, lines)
    return 0


def _verdict_word(collapse: dict) -> str:
    """The diagnose verdict: collapsed, else healthy or unhealthy."""
    if collapse["collapsed"]:
        return collapse_label(collapse)
    return "healthy" if collapse["healthy"] else "unhealthy"


def diagnose_lines(report: dict, data: str, state_dim: int, n_padded: int) -> list[str]:
    """The text ``flagcore diagnose`` prints for a diagnostics ``report``."""
    d, v = report["action_distribution"], report["collapse"]
    lines = [f"{report['bars']:,} bars of {data}", "Action distribution:"]
    lines += [f"  {c:<4} {d['counts'][c]:>7,} ({d['shares'][c]:.2%})" for c in CLASS_NAMES]
    c = report["confidence"]
    lines.append(f"Confidence: mean {c['mean']:.2%}, min {c['min']:.2%}, max {c['max']:.2%}")
    lines.append(
        "Logits: "
        + "; ".join(f"{k} mean {s['mean']:+.2f}, std {s['std']:.2f}" for k, s in report["logits"].items())
    )
    lines.append(f"Verdict: {_verdict_word(v)}: {v['reason']}; {v['post_hoc_outlook']}")
    if "metrics" in report:
        m = report["metrics"]
        lines.append(
            f"Accuracy {m['accuracy']:.2%} vs majority-class baseline {m['majority_baseline']:.2%} "
            f"({m['majority_class']}); balanced {m['balanced_accuracy']:.2%}, "
            f"macro-F1 {m['macro_f1']:.3f}, MCC {m['mcc']:.3f}, kappa {m['cohen_kappa']:.3f}, "
            f"ECE {report['calibration']['ece']:.3f}"
        )
    if "feature_shift" in report:
        shifted = [r for r in report["feature_shift"] if r["shift"] == "major"]
        lines.append(
            f"Feature shift: {len(shifted)} of {state_dim} inputs shifted majorly (PSI > 0.25), "
            f"{n_padded} are zero padding in this data"
        )
    return lines


def cmd_diagnose(args: argparse.Namespace) -> int:
    from flagcore.analysis.diagnostics import diagnose, feature_shift
    from flagcore.data.dataset import load_dataset
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.models.inference import predict

    model = load_checkpoint(args.checkpoint)
    cfg = model.checkpoint_info.config
    ds = load_dataset(args.data, state_dim=cfg.state_dim, require_close=False)
    e = ds.eval_index
    pred = predict(model, ds.features)
    report = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "bars": ds.n_bars - e,
        **diagnose(pred.logits[e:], None if ds.labels is None else ds.labels[e:]),
    }
    if args.train:
        train = load_dataset(args.train, state_dim=cfg.state_dim, require_close=False)
        names = train.feature_names + [f"padding_{j}" for j in range(train.n_features, cfg.state_dim)]
        report["feature_shift"] = feature_shift(train.features, ds.features[e:], names, ds.padded_inputs)
    emit(report, args.json, diagnose_lines(report, args.data, cfg.state_dim, len(ds.padded_inputs)))
    return 0


# ----------------------------------------------------------------------------- parsers


def _info_arguments(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", choices=PRESET_NAMES, help="a built-in configuration")
    g.add_argument("--checkpoint", metavar="PATH", help="a flagcore or reviewed-format checkpoint")
    s.add_argument("--num-heads", type=int, help="heads of a reviewed checkpoint (default 8)")


def _import_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("source", metavar="SRC", help="torch checkpoint in the reviewed layout")
    s.add_argument("--out", required=True, metavar="PATH", help="file (.safetensors) or folder to write")
    s.add_argument("--num-heads", type=int, help="attention heads (not stored in the file; default 8)")
    s.add_argument("--window", type=int, help="bars per inference window (default min(64, max_length))")


def _init_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--preset", choices=PRESET_NAMES, required=True)
    s.add_argument("--out", required=True, metavar="PATH")
    s.add_argument("--seed", type=int, default=0)


def _predict_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument("--data", required=True, metavar="FILE", help="CSV or Parquet")
    s.add_argument("--out", required=True, metavar="FILE", help="predictions, .parquet or .csv")
    s.add_argument("--window", type=int, help="bars per window (default: the checkpoint's)")
    s.add_argument("--batch-size", type=int, default=256)


def _diagnose_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument(
        "--data", required=True, metavar="FILE", help="evaluation dataset (its evaluation period is used)"
    )
    s.add_argument("--train", metavar="FILE", help="training dataset, for the train-vs-test feature shift")


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``info``, ``import``, ``init``, ``predict`` and ``diagnose``."""
    add_command(
        sub,
        "info",
        cmd_info,
        "Architecture and parameter counts of a preset or a checkpoint.",
        _info_arguments,
        parents.json,
    )
    add_command(
        sub,
        "import",
        cmd_import,
        "Convert a reviewed-format torch checkpoint to flagcore's format.",
        _import_arguments,
        parents.json,
    )
    add_command(
        sub,
        "init",
        cmd_init,
        "Write an untrained, randomly initialised checkpoint of a preset.",
        _init_arguments,
        parents.json,
    )
    add_command(
        sub,
        "predict",
        cmd_predict,
        "Run a checkpoint (FLAG-TRADER or CGDT) over a dataset: logits, action, confidence per bar.",
        _predict_arguments,
        parents.device,
        parents.quiet_bar,
        parents.json_summary,
    )
    add_command(
        sub,
        "diagnose",
        cmd_diagnose,
        "Collapse diagnostics of a checkpoint on a dataset: the seed's tables and more.",
        _diagnose_arguments,
        parents.json,
    )
