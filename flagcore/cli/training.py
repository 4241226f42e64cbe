"""The training commands: ``train`` (FLAG-TRADER with a loss), ``walk-forward`` and ``train-cgdt``.

Per-epoch and per-block progress goes to stderr (nothing with ``--quiet``); the result to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flagcore.cli.options import PRESET_NAMES, Parents, add_command
from flagcore.cli.output import emit, progress, shares_text
from flagcore.errors import FlagcoreError
from flagcore.vocab import CLASS_NAMES, LOSSES, N_CLASSES, SEED_CLASS_WEIGHTS

if TYPE_CHECKING:
    from flagcore.cli.options import Subparsers

CLASS_LIST = ",".join(CLASS_NAMES)  # SELL,HOLD,BUY: how three per-class numbers are written
SEED_WEIGHTS_TEXT = ",".join(f"{w:g}" for w in SEED_CLASS_WEIGHTS)  # 1,0.5,1


def print_epoch(row: dict) -> None:
    """One line per training epoch on stderr: losses, accuracy and the predicted class shares."""
    s = row["val_pred_shares"]
    print(
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
        f"val acc {row['val_accuracy']:.3f}, balanced {row['val_balanced_accuracy']:.3f}, predicted "
        + " ".join(f"{c} {s[c]:.1%}" for c in CLASS_NAMES)
        + f" ({row['seconds']:.0f}s)",
        file=sys.stderr,
        flush=True,
    )


def print_block(row: dict) -> None:
    """One line per walk-forward block on stderr: where it starts and what it fine-tuned on."""
    loss = f", loss {row['fine_tune_loss']:.4f}" if "fine_tune_loss" in row else ""
    print(
        f"block from {row['block_start']}: fine-tuned on {row['fine_tune_bars']} resolved bars{loss}",
        file=sys.stderr,
        flush=True,
    )


def per_class(text: str | None) -> str | tuple[float, float, float] | None:
    """``--class-weights`` / ``--focal-alpha``: ``inverse``, ``seed`` or one number per class."""
    if text is None or text in ("inverse", "seed"):
        return text
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise FlagcoreError(
            f"expected 'inverse', 'seed' or three numbers like {SEED_WEIGHTS_TEXT}, got {text!r}"
        ) from None
    if len(vals) != N_CLASSES:
        raise FlagcoreError(f"expected three numbers ({CLASS_LIST}), got {text!r}")
    sell, hold, buy = vals
    return sell, hold, buy


def cmd_train(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import check_disjoint, load_dataset
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.models.flag_trader import preset
    from flagcore.models.inference import action_summary, predict
    from flagcore.training.loop import TrainConfig, train_model

    mcfg = preset(args.preset)
    cfg = TrainConfig(
        loss=args.loss,
        class_weights=per_class(args.class_weights),
        focal_gamma=args.focal_gamma,
        focal_alpha=per_class(args.focal_alpha),
        tau=args.tau,
        return_weight=args.return_weight,
        epochs=args.epochs,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        loss_position=args.loss_position,
        patience=args.patience,
    )
    train = load_dataset(args.data, state_dim=mcfg.state_dim)
    test = load_dataset(args.test, state_dim=mcfg.state_dim) if args.test else None
    if test is not None:
        check_disjoint(train, test)
    res = train_model(train, mcfg, cfg, on_epoch=None if args.quiet else print_epoch, device=args.device)
    out = Path(args.out)
    path = save_checkpoint(
        res.model,
        out,
        feature_names=train.feature_names,
        padded_inputs=train.padded_inputs,
        provenance=res.provenance,
    )
    result = {"checkpoint": str(path), "provenance": res.provenance, "history": res.history}
    lines = [
        f"wrote {path}: loss {args.loss}, best epoch {res.provenance['best_epoch']} of "
        f"{res.provenance['epochs_run']}, {res.provenance['seconds']:.0f}s"
    ]
    if test is not None:
        e = test.eval_index
        pred = predict(res.model, test.features)
        p = pred.since(e)
        t = {"data": str(args.test), **action_summary(p, None if test.labels is None else test.labels[e:])}
        result["test"] = t
        lines.append(
            f"  test period: {t['bars']:,} bars, predicted "
            + shares_text(t["action_shares"])
            + (f"; accuracy {t['accuracy']:.2%}" if "accuracy" in t else "")
        )
    (out if out.is_dir() else out.parent).joinpath("train_log.json").write_text(json.dumps(result, indent=2))
    emit(result, args.json, lines)
    return 0


def cmd_walk_forward(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import load_dataset
    from flagcore.models.checkpoint import load_checkpoint, save_checkpoint
    from flagcore.models.inference import action_summary, from_logits
    from flagcore.training.walk_forward import walk_forward, write_predictions

    model = load_checkpoint(args.checkpoint)
    info = model.checkpoint_info
    ds = load_dataset(args.data, state_dim=info.config.state_dim)
    logits, final, log = walk_forward(
        model,
        ds,
        every=args.every,
        recent=args.recent,
        epochs=args.epochs,
        on_block=None if args.quiet else print_block,
    )
    out = Path(args.out)
    settings = {"every": args.every, "recent": args.recent, "epochs": args.epochs}
    write_predictions(
        ds,
        logits,
        info.config.window,
        out / "predictions.parquet",
        walk_forward={**settings, "start_checkpoint_sha256": info.sha256},
    )
    prov = {
        **info.meta.provenance,
        "walk_forward": {
            **settings,
            "blocks": len(log),
            "data_hash": ds.content_hash,
            "start_checkpoint_sha256": info.sha256,
        },
    }
    save_checkpoint(
        final, out, feature_names=info.meta.feature_names, padded_inputs=ds.padded_inputs, provenance=prov
    )
    e = ds.eval_index
    pred = from_logits(logits, np.zeros(len(logits), bool), info.config.window)
    summary = {
        "out": str(out),
        "blocks": len(log),
        **action_summary(pred, None if ds.labels is None else ds.labels[e:]),
    }
    emit(
        summary,
        args.json,
        [
            f"wrote {out}/predictions.parquet ({len(pred):,} bars) and the final model; "
            "predicted " + shares_text(summary["action_shares"])
        ],
    )
    return 0


def cmd_train_cgdt(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import check_disjoint, load_dataset
    from flagcore.models.cgdt import CGDTConfig
    from flagcore.models.cgdt_file import describe_cgdt, save_cgdt
    from flagcore.models.cgdt_predict import predict_cgdt
    from flagcore.models.inference import action_summary
    from flagcore.training.cgdt import train_cgdt

    cfg = CGDTConfig(epochs=args.epochs, seed=args.seed)
    train = load_dataset(args.data, state_dim=cfg.state_dim)
    test = load_dataset(args.test, state_dim=cfg.state_dim) if args.test else None
    if test is not None:
        check_disjoint(train, test)
    update, close = progress("cgdt epochs", args.quiet)
    try:
        model = train_cgdt(train, cfg, progress=update)
    finally:
        close()
    out = Path(args.out)
    path = save_cgdt(model, out / "cgdt.safetensors" if not out.suffix else out)
    result = {"checkpoint": str(path), **describe_cgdt(model)}
    lines = [f"wrote {path}"]
    if test is not None:
        e = test.eval_index
        pred = predict_cgdt(model, test)
        result["test"] = action_summary(pred.since(e), None if test.labels is None else test.labels[e:])
        lines.append("  test period: predicted " + shares_text(result["test"]["action_shares"]))
    emit(result, args.json, lines)
    return 0


# ----------------------------------------------------------------------------- parsers


def _train_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", required=True, metavar="FILE", help="training dataset")
    s.add_argument("--preset", choices=PRESET_NAMES, default="demo")
    s.add_argument("--loss", choices=LOSSES, default="ce")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--test", metavar="FILE", help="report predictions on this dataset's evaluation period")
    s.add_argument(
        "--class-weights",
        default="inverse",
        help=f"weighted: inverse, seed ({SEED_WEIGHTS_TEXT}) or {CLASS_LIST}",
    )
    s.add_argument("--focal-gamma", type=float, default=2.0)
    s.add_argument("--focal-alpha", default="inverse", help=f"focal: inverse (default), seed or {CLASS_LIST}")
    s.add_argument("--tau", type=float, default=1.0, help="logit adjustment strength")
    s.add_argument("--return-weight", type=float, default=0.5, help="multitask: weight of the return loss")
    s.add_argument(
        "--loss-position",
        choices=["last", "all"],
        default="last",
        help="last (default, no leak) or all: the reviewed code's per-position loss, which leaks",
    )
    s.add_argument(
        "--patience", type=int, default=2, help="epochs without validation improvement before stopping"
    )
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)


def _train_cgdt_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data", required=True, metavar="FILE", help="training dataset")
    s.add_argument(
        "--out", required=True, metavar="PATH", help="folder (gets cgdt.safetensors) or .safetensors file"
    )
    s.add_argument("--test", metavar="FILE", help="report predictions on this dataset's evaluation period")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)


def _walk_forward_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="starting model (remedy 1's)")
    s.add_argument("--data", required=True, metavar="FILE", help="test dataset with labels")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument(
        "--every", type=int, default=720, help="bars between fine-tunes, 500 to 1000 (default 720)"
    )
    s.add_argument("--recent", type=int, default=2000, help="resolved bars to fine-tune on (default 2000)")
    s.add_argument("--epochs", type=int, default=2)


def register(sub: Subparsers, parents: Parents) -> None:
    """Add ``train``, ``train-cgdt`` and ``walk-forward``."""
    add_command(
        sub,
        "train",
        cmd_train,
        "Train FLAG-TRADER with a loss: the seed's CE or a remedy.",
        _train_arguments,
        parents.device,
        parents.quiet_epochs,
        parents.json,
    )
    add_command(
        sub,
        "train-cgdt",
        cmd_train_cgdt,
        "Train CGDT, the ensemble partner (critic-guided decision transformer).",
        _train_cgdt_arguments,
        parents.quiet_bar,
        parents.json,
    )
    add_command(
        sub,
        "walk-forward",
        cmd_walk_forward,
        "Online learning over a test period: fine-tune every K bars.",
        _walk_forward_arguments,
        parents.quiet_blocks,
        parents.json,
    )
