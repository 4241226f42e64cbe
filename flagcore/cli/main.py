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

import numpy as np

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
        from flagcore.models.flag_trader import build_model, describe, preset

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
    _emit(info, args.json, lines)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import checkpoint_summary, import_checkpoint

    out = import_checkpoint(args.source, args.out, num_heads=args.num_heads, window=args.window)
    info = checkpoint_summary(out)
    _emit(info, args.json, [f"wrote {out} ({info['total_params']:,} parameters, "
                            f"{info['trainable_params']:,} trainable)"])
    return 0


def _state_dim(args: argparse.Namespace) -> int:
    if getattr(args, "checkpoint", None):
        from flagcore.models.checkpoint import read_checkpoint

        return read_checkpoint(args.checkpoint)[1].config.state_dim
    return args.state_dim


def cmd_check_data(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import load_dataset

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
    from flagcore.models.checkpoint import is_cgdt, load_checkpoint
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.models.inference import action_summary, predict, predictions_frame

    update, close = _progress("predict", args.quiet)
    try:
        if is_cgdt(args.checkpoint):
            from flagcore.models.cgdt import load_cgdt, predict_cgdt

            model = load_cgdt(args.checkpoint)
            ds = load_dataset(args.data, state_dim=model.config.state_dim, require_close=False)
            pred = predict_cgdt(model, ds, progress=update)
        else:
            model = load_checkpoint(args.checkpoint, window=args.window)
            ds = load_dataset(args.data, state_dim=model.checkpoint_info.config.state_dim, require_close=False)
            pred = predict(model, ds.features, batch_size=args.batch_size, device=args.device, progress=update)
    finally:
        close()
    write_dataset(predictions_frame(ds.timestamps, pred), args.out)
    summary = {"out": str(args.out), "window": pred.window,
               "short_history_bars": int(pred.short_history.sum()), "padded_inputs": ds.padded_inputs,
               **action_summary(pred, ds.labels)}
    lines = [f"wrote {args.out}: {len(pred):,} bars, window {pred.window}"] + [
        f"  {c:<4} {k:>8,} ({summary['action_shares'][c]:.2%})" for c, k in summary["action_counts"].items()
    ]
    _emit(summary, args.json, lines)
    return 0


def cmd_train_cgdt(args: argparse.Namespace) -> int:
    from flagcore.models.cgdt import CGDTConfig, describe_cgdt, predict_cgdt, save_cgdt, train_cgdt
    from flagcore.data.dataset import check_disjoint, load_dataset
    from flagcore.models.inference import action_summary

    cfg = CGDTConfig(epochs=args.epochs, seed=args.seed)
    train = load_dataset(args.data, state_dim=cfg.state_dim)
    test = load_dataset(args.test, state_dim=cfg.state_dim) if args.test else None
    if test is not None:
        check_disjoint(train, test)
    update, close = _progress("cgdt epochs", args.quiet)
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
        lines.append("  test period: predicted " + ", ".join(
            f"{k} {v:.1%}" for k, v in result["test"]["action_shares"].items()))
    _emit(result, args.json, lines)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import checkpoint_summary, save_checkpoint
    from flagcore.models.flag_trader import build_model, preset

    model = build_model(preset(args.preset), seed=args.seed)
    out = save_checkpoint(model, args.out, provenance={"initialised": "random", "preset": args.preset,
                                                         "seed": args.seed})
    info = checkpoint_summary(out)
    _emit(info, args.json, [f"wrote {out}: untrained {args.preset} model, seed {args.seed}"])
    return 0


def cmd_market(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import write_dataset
    from flagcore.data.market import demo_market, stylised_facts

    bars = demo_market(seed=args.seed, strength=args.strength, test_bars=args.test_bars)
    write_dataset(bars, args.out, generator="flagcore.data.market.demo_market", seed=args.seed,
                  strength=args.strength)
    facts = {"out": str(args.out), "seed": args.seed, "strength": args.strength, **stylised_facts(bars)}
    _emit(facts, args.json, [
        f"wrote {args.out}: {facts['bars']:,} hourly bars ({facts['train_bars']:,} training, "
        f"{facts['test_bars']:,} test from 2025-01-01)",
        f"  annualised vol {facts['annualised_volatility']:.1%}, excess kurtosis {facts['excess_kurtosis']:.1f}, "
        f"ACF |r| lag 1/24/168: " + "/".join(f"{v:.2f}" for v in facts["acf_abs_returns"].values()),
    ])
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from flagcore.data.dataset import write_dataset
    from flagcore.data.features import build_datasets, read_ohlcv

    bars = read_ohlcv(args.ohlcv)
    sets = build_datasets(bars, horizon=args.horizon, width=args.barrier_width, target_hold=args.target_hold,
                          method=args.label_method, test_start=args.test_start, context=args.context,
                          source=str(args.ohlcv))
    out = Path(args.out)
    written = {}
    for name, (df, meta) in sets.items():
        if name == "all":
            path = out if out.suffix else out.with_suffix(".parquet")
        else:
            if out.suffix:
                raise FlagcoreError(f"--out {out}: with --test-start give a folder (train and test files go in it)")
            path = out / f"{name}.parquet"
        write_dataset(df, path, **meta)
        written[name] = {"path": str(path), "bars": len(df), "features": len(df.columns) - 3,
                         "label_shares": meta["label_shares"], "evaluation_start": meta.get("evaluation_start")}
    some = next(iter(sets.values()))[1]
    summary = {"barrier_width": some["barrier_width"], "label_horizon": some["label_horizon"],
               "label_method": some["label_method"], "datasets": written}
    lines = [f"barrier width {summary['barrier_width']:.4f} x sigma x sqrt({args.horizon}), {args.label_method}"]
    for name, w in written.items():
        lines.append(f"  {name}: {w['path']} {w['bars']:,} bars, {w['features']} features, labels "
                     + ", ".join(f"{k} {v:.1%}" for k, v in w["label_shares"].items()))
    _emit(summary, args.json, lines)
    return 0


def _print_epoch(row: dict) -> None:
    s = row["val_pred_shares"]
    print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
          f"val acc {row['val_accuracy']:.3f}, balanced {row['val_balanced_accuracy']:.3f}, predicted "
          f"SELL {s['SELL']:.1%} HOLD {s['HOLD']:.1%} BUY {s['BUY']:.1%} ({row['seconds']:.0f}s)",
          file=sys.stderr, flush=True)


def _three(text: str | None):
    if text is None or text in ("inverse", "seed"):
        return text
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise FlagcoreError(f"expected 'inverse', 'seed' or three numbers like 1,0.5,1, got {text!r}") from None
    if len(vals) != 3:
        raise FlagcoreError(f"expected three numbers (SELL,HOLD,BUY), got {text!r}")
    return vals


def cmd_train(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.data.dataset import load_dataset
    from flagcore.models.inference import action_summary, predict
    from flagcore.models.flag_trader import preset
    from flagcore.training.train import TrainConfig, train_model

    mcfg = preset(args.preset)
    cfg = TrainConfig(loss=args.loss, class_weights=_three(args.class_weights), focal_gamma=args.focal_gamma,
                      focal_alpha=_three(args.focal_alpha), tau=args.tau, return_weight=args.return_weight,
                      epochs=args.epochs, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                      loss_position=args.loss_position, patience=args.patience)
    train = load_dataset(args.data, state_dim=mcfg.state_dim)
    test = load_dataset(args.test, state_dim=mcfg.state_dim) if args.test else None
    if test is not None:
        from flagcore.data.dataset import check_disjoint
        check_disjoint(train, test)
    res = train_model(train, mcfg, cfg, on_epoch=None if args.quiet else _print_epoch, device=args.device)
    out = Path(args.out)
    path = save_checkpoint(res.model, out, feature_names=train.feature_names,
                           padded_inputs=train.padded_inputs, provenance=res.provenance)
    result = {"checkpoint": str(path), "provenance": res.provenance, "history": res.history}
    lines = [f"wrote {path}: loss {args.loss}, best epoch {res.provenance['best_epoch']} of "
             f"{res.provenance['epochs_run']}, {res.provenance['seconds']:.0f}s"]
    if test is not None:
        e = test.eval_index
        pred = predict(res.model, test.features)
        p = pred.since(e)
        result["test"] = {"data": str(args.test), **action_summary(p, None if test.labels is None else test.labels[e:])}
        t = result["test"]
        lines.append(f"  test period: {t['bars']:,} bars, predicted " + ", ".join(
            f"{k} {v:.1%}" for k, v in t["action_shares"].items())
            + (f"; accuracy {t['accuracy']:.2%}" if "accuracy" in t else ""))
    (out if out.is_dir() else out.parent).joinpath("train_log.json").write_text(json.dumps(result, indent=2))
    _emit(result, args.json, lines)
    return 0


def cmd_walk_forward(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import load_checkpoint, save_checkpoint
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.models.inference import action_summary, from_logits, predictions_frame
    from flagcore.training.train import walk_forward

    model = load_checkpoint(args.checkpoint)
    ds = load_dataset(args.data, state_dim=model.checkpoint_info.config.state_dim)
    on_block = None if args.quiet else (lambda r: print(
        f"block from {r['block_start']}: fine-tuned on {r['fine_tune_bars']} resolved bars"
        + (f", loss {r['fine_tune_loss']:.4f}" if "fine_tune_loss" in r else ""), file=sys.stderr, flush=True))
    logits, final, log = walk_forward(model, ds, every=args.every, recent=args.recent, epochs=args.epochs,
                                      on_block=on_block)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    e = ds.eval_index
    pred = from_logits(logits, np.zeros(len(logits), bool), model.checkpoint_info.config.window)
    write_dataset(predictions_frame(ds.timestamps[e:], pred), out / "predictions.parquet",
                  walk_forward={"every": args.every, "recent": args.recent, "epochs": args.epochs,
                                "start_checkpoint_sha256": model.checkpoint_info.sha256})
    prov = {**model.checkpoint_info.meta.provenance, "walk_forward": {
        "every": args.every, "recent": args.recent, "epochs": args.epochs, "blocks": len(log),
        "data_hash": ds.content_hash, "start_checkpoint_sha256": model.checkpoint_info.sha256}}
    save_checkpoint(final, out, feature_names=model.checkpoint_info.meta.feature_names,
                    padded_inputs=ds.padded_inputs, provenance=prov)
    summary = {"out": str(out), "blocks": len(log), **action_summary(pred, None if ds.labels is None else ds.labels[e:])}
    _emit(summary, args.json, [f"wrote {out}/predictions.parquet ({len(pred):,} bars) and the final model; "
                               "predicted " + ", ".join(f"{k} {v:.1%}" for k, v in summary["action_shares"].items())])
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.data.dataset import load_dataset
    from flagcore.analysis.diagnostics import diagnose, feature_shift
    from flagcore.models.inference import predict

    model = load_checkpoint(args.checkpoint)
    cfg = model.checkpoint_info.config
    ds = load_dataset(args.data, state_dim=cfg.state_dim, require_close=False)
    e = ds.eval_index
    pred = predict(model, ds.features)
    report = {"checkpoint": args.checkpoint, "data": args.data, "bars": ds.n_bars - e,
              **diagnose(pred.logits[e:], None if ds.labels is None else ds.labels[e:])}
    if args.train:
        train = load_dataset(args.train, state_dim=cfg.state_dim, require_close=False)
        names = train.feature_names + [f"padding_{j}" for j in range(train.n_features, cfg.state_dim)]
        report["feature_shift"] = feature_shift(train.features, ds.features[e:], names, ds.padded_inputs)
    d, v = report["action_distribution"], report["collapse"]
    lines = [f"{report['bars']:,} bars of {args.data}", "Action distribution:"]
    lines += [f"  {c:<4} {d['counts'][c]:>7,} ({d['shares'][c]:.2%})" for c in ("SELL", "HOLD", "BUY")]
    c = report["confidence"]
    lines.append(f"Confidence: mean {c['mean']:.2%}, min {c['min']:.2%}, max {c['max']:.2%}")
    lines.append("Logits: " + "; ".join(f"{k} mean {s['mean']:+.2f}, std {s['std']:.2f}" for k, s in report["logits"].items()))
    lines.append(f"Verdict: {'COLLAPSED' if v['collapsed'] else 'healthy' if v['healthy'] else 'unhealthy'}: {v['reason']}; {v['post_hoc_outlook']}")
    if "metrics" in report:
        m = report["metrics"]
        lines.append(f"Accuracy {m['accuracy']:.2%} vs majority-class baseline {m['majority_baseline']:.2%} "
                     f"({m['majority_class']}); balanced {m['balanced_accuracy']:.2%}, macro-F1 {m['macro_f1']:.3f}, "
                     f"MCC {m['mcc']:.3f}, kappa {m['cohen_kappa']:.3f}, ECE {report['calibration']['ece']:.3f}")
    if "feature_shift" in report:
        shifted = [r for r in report["feature_shift"] if r["shift"] == "major"]
        lines.append(f"Feature shift: {len(shifted)} of {cfg.state_dim} inputs shifted majorly (PSI > 0.25), "
                     f"{len(ds.padded_inputs)} are zero padding in this data")
    _emit(report, args.json, lines)
    return 0


# ----------------------------------------------------------------------------- store commands


def _store(args: argparse.Namespace):
    from flagcore.store.store import Store

    return Store(args.store)


class _Stages:
    """One progress bar per pipeline stage on stderr (nothing with --quiet)."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.stage = quiet, None, None

    def __call__(self, stage: str, frac: float) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=stage, file=sys.stderr, leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        self.bar.n = int(max(0.0, min(1.0, frac)) * 100)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _settings(args: argparse.Namespace):
    from flagcore.analysis.backtest import BacktestConfig
    from flagcore.analysis.hifa import load_criteria
    from flagcore.pipeline.evaluate import EvaluateSettings

    bt = BacktestConfig(sizing=args.sizing, kelly_fraction=args.kelly_fraction, fee_bps=args.fee_bps,
                        slippage_bps=args.slippage_bps, hold=args.hold)
    return EvaluateSettings(hold_threshold=args.hold_threshold, tau=args.tau, backtest=bt,
                            criteria=load_criteria(args.criteria), device=args.device)


def _run_line(res: dict) -> str:
    inf = res["inference"]
    return (f"run {res['run_id']} {'reused' if res['reused'] else 'written'} in {res['seconds']:.1f}s "
            f"(inference: {inf['computed']} computed, {inf['cached']} from the store cache)")


def _placement(args: argparse.Namespace):
    from flagcore.training.tasks import Placement

    return Placement(workers=args.workers, ray_address=args.ray_address, task_cpus=args.task_cpus)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flagcore.pipeline.evaluate import evaluate

    store = _store(args)
    stages = _Stages(args.quiet)
    try:
        res = evaluate(args.checkpoint, args.data, store=store, train_data=args.train, partner=args.partner,
                       retrained=args.retrained or (), name=args.name, settings=_settings(args), progress=stages,
                       placement=_placement(args))
    finally:
        stages.close()
    lines = [_run_line(res)] + _runs_lines(store, [res["run_id"]])
    _emit({**res, "store": str(store.path)}, args.json, lines)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flagcore.pipeline.demo import build_demo

    store = _store(args)
    stages = _Stages(args.quiet)
    try:
        res = build_demo(store, quick=args.quick, root=args.root, progress=stages, device=args.device)
    finally:
        stages.close()
    lines = [f"demo {'(quick) ' if args.quick else ''}ready in {res['seconds']:.0f}s: " + ", ".join(
        f"{k} {v}" for k, v in res["steps"].items()), f"store {store.path}, run {res['run_id']}"]
    lines += _runs_lines(store, [res["run_id"]])
    _emit({**res, "store": str(store.path)}, args.json, lines)
    return 0


def runs_json(store) -> list[dict]:
    """Every run with its options: action shares, trades, Sharpe and the HIFA criteria."""
    import pandas as pd

    from flagcore.store.store import from_json

    out = []
    runs = store.list_runs()
    if runs.empty:
        return out
    hifa = store.query("SELECT run_id, option, criterion, value, threshold, rule, passed FROM hifa_criteria")
    opts = store.query("SELECT * FROM option_results ORDER BY run_id, ordinal")
    for _, r in runs.iterrows():
        summary = from_json(r["summary"])
        run = {"run_id": int(r["run_id"]), "name": r["name"], "created_at": r["created_at"].isoformat(),
               "model_id": r["model_id"], "dataset_id": r["dataset_id"],
               "collapse": (summary.get("collapse") or {}), "n_trials": summary.get("n_trials"),
               "pbo": summary.get("pbo"),
               "latest_review": None if pd.isna(r["latest_verdict"])
               else {"verdict": r["latest_verdict"], "reviewer": r["latest_reviewer"]},
               "options": {}}
        for _, o in opts[opts["run_id"] == r["run_id"]].iterrows():
            crit = hifa[(hifa["run_id"] == r["run_id"]) & (hifa["option"] == o["option"])]
            run["options"][o["option"]] = {
                "title": o["title"],
                "action_shares": {"SELL": o["share_sell"], "HOLD": o["share_hold"], "BUY": o["share_buy"]},
                "trades": int(o["trades"]), "sharpe": o["sharpe"], "sharpe_defined": bool(o["sharpe_defined"]),
                "total_return": o["total_return"], "accuracy": None if pd.isna(o["accuracy"]) else o["accuracy"],
                "hifa": {c["criterion"]: {"value": c["value"], "threshold": c["threshold"], "rule": c["rule"],
                                          "passed": bool(c["passed"])} for _, c in crit.iterrows()},
                "hifa_passed_all": bool(len(crit) and crit["passed"].all()),
            }
        out.append(run)
    return out


def _runs_lines(store, only: list[int] | None = None) -> list[str]:
    lines = []
    for run in runs_json(store):
        if only is not None and run["run_id"] not in only:
            continue
        col = run["collapse"]
        review = run["latest_review"]
        lines.append(f"run {run['run_id']}: {run['name']} ({run['created_at'][:16]}), baseline "
                     f"{'COLLAPSED' if col.get('collapsed') else 'not collapsed'}; {run['n_trials']} trials; "
                     f"review: {review['verdict'] + ' by ' + review['reviewer'] if review else 'none'}")
        lines.append(f"  {'option':<32} {'SELL':>6} {'HOLD':>6} {'BUY':>6} {'trades':>6} {'Sharpe':>7}  HIFA")
        for o in run["options"].values():
            sh = o["action_shares"]
            marks = " ".join(("PASS" if c["passed"] else "fail") for c in o["hifa"].values())
            lines.append(f"  {o['title']:<32} {sh['SELL']:>6.1%} {sh['HOLD']:>6.1%} {sh['BUY']:>6.1%} "
                         f"{o['trades']:>6} {o['sharpe']:>7.2f}  {marks}")
    return lines


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(args)
    data = runs_json(store)
    lines = _runs_lines(store) if data else [f"no runs in {store.path}; run `flagcore demo` or `flagcore evaluate`"]
    if args.json:
        _emit({"store": str(store.path), "runs": data}, True, [])
    else:
        _emit({}, False, lines)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flagcore.dashboard.report import render_report

    store = _store(args)
    text = render_report(store, args.run, args.format)
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
    store = _store(args)
    comment = args.comment
    if args.comment_file:
        comment = Path(args.comment_file).read_text(encoding="utf-8")
    rid = store.add_review(args.run, args.reviewer, args.verdict, comment or "")
    _emit({"review_id": rid, "run_id": args.run}, args.json,
          [f"review {rid} recorded on run {args.run}: {args.verdict} by {args.reviewer.strip()}"])
    return 0


def _criteria_in_file(path) -> dict:
    """The HIFA settings a TOML file sets (validated), without the defaults it leaves out."""
    import tomllib

    from flagcore.analysis.hifa import load_criteria

    full = load_criteria(path)
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {k: full[k] for k in data.get("hifa", data)}


def cmd_validate(args: argparse.Namespace) -> int:
    from flagcore.pipeline.validate import rejudge, retrain_validation

    placement = _placement(args) if args.retrain else None  # bad values fail before any work
    store = _store(args)
    run_id = args.run
    if run_id is None:
        runs = store.list_runs()
        if runs.empty:
            raise FlagcoreError(f"{store.path}: no runs to validate; run `flagcore demo` or `flagcore evaluate`")
        run_id = int(runs["run_id"].iloc[0])
    result = {"run_id": run_id}
    if args.retrain:
        stages = _Stages(args.quiet)
        try:
            result["retrain"] = retrain_validation(store, run_id, options=args.options, quick=args.quick_retrain,
                                                   progress=stages, placement=placement)
        finally:
            stages.close()
    table = rejudge(store, run_id, _criteria_in_file(args.criteria) if args.criteria else None)
    result["criteria"] = table
    lines = [f"HIFA criteria, run {run_id} (CPCV mode: {table['cpcv_mode']}; {table['n_trials']} trials)"]
    lines.append(f"  {'option':<32} {'CPCV mean Sharpe':>18} {'deflated Sharpe':>18} {'DSR prob.':>9} "
                 f"{'perm. p':>8}  verdict")
    def cell(c, k, fmt):
        return f"{fmt.format(c[k]['value'])} {'PASS' if c[k]['passed'] else 'fail'}"

    for o in table["options"]:
        c = o["criteria"]

        lines.append(f"  {o['title']:<32} {cell(c, 'cpcv_mean_sharpe', '{:>13.2f}')} {cell(c, 'deflated_sharpe', '{:>13.2f}')} "
                     f"{o['dsr_probability']:>9.3f} {cell(c, 'permutation_p', '{:>8.4f}')}  "
                     f"{'PASS' if o['passed_all'] else 'FAIL'}"
                     + (f"  retraining CPCV mean Sharpe {o['retrain_cpcv_mean_sharpe']:.2f}"
                        if o.get("retrain_cpcv_mean_sharpe") is not None else ""))
    lines.append(f"  thresholds: CPCV mean Sharpe >= {table['criteria']['cpcv_mean_sharpe_min']}, deflated Sharpe >= "
                 f"{table['criteria']['deflated_sharpe_min']} (DSR probability bar "
                 f"{table['criteria']['dsr_probability_min']}), permutation p < {table['criteria']['permutation_p_max']}")
    _emit(result, args.json, lines)
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

    s = add("predict", cmd_predict, "Run a checkpoint (FLAG-TRADER or CGDT) over a dataset: logits, action, confidence per bar.")
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument("--data", required=True, metavar="FILE", help="CSV or Parquet")
    s.add_argument("--out", required=True, metavar="FILE", help="predictions, .parquet or .csv")
    s.add_argument("--window", type=int, help="bars per window (default: the checkpoint's)")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print a JSON summary")

    s = add("diagnose", cmd_diagnose, "Collapse diagnostics of a checkpoint on a dataset: the seed's tables and more.")
    s.add_argument("--checkpoint", required=True, metavar="PATH")
    s.add_argument("--data", required=True, metavar="FILE", help="evaluation dataset (its evaluation period is used)")
    s.add_argument("--train", metavar="FILE", help="training dataset, for the train-vs-test feature shift")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("market", cmd_market, "Write the embedded demo market: deterministic synthetic hourly OHLCV.")
    s.add_argument("--out", required=True, metavar="FILE", help=".parquet or .csv")
    s.add_argument("--seed", type=int, default=2025)
    s.add_argument("--strength", type=float, default=1.0, help="predictable component; 0 = pure noise")
    s.add_argument("--test-bars", type=int, default=9073)
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("features", cmd_features, "L1 features and triple-barrier labels from an OHLCV file.")
    s.add_argument("--ohlcv", required=True, metavar="FILE", help="CSV or Parquet with timestamp, open, high, low, close, volume")
    s.add_argument("--out", required=True, metavar="PATH", help="a file, or a folder with --test-start")
    s.add_argument("--test-start", metavar="DATE", help="write train.parquet and test.parquet split at DATE")
    s.add_argument("--horizon", type=int, default=24, help="label horizon in bars (default 24)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--barrier-width", type=float, help="barrier width in sigma * sqrt(horizon)")
    g.add_argument("--target-hold", type=float, default=0.6142,
                   help="calibrate the width to this HOLD share of the evaluated bars (default 0.6142)")
    s.add_argument("--label-method", choices=["triple-barrier", "fixed-horizon"], default="triple-barrier")
    s.add_argument("--context", type=int, default=255, help="history bars before the test period (default 255)")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("train", cmd_train, "Train FLAG-TRADER with a loss: the seed's CE or a remedy.")
    s.add_argument("--data", required=True, metavar="FILE", help="training dataset")
    s.add_argument("--preset", choices=["full", "demo"], default="demo")
    s.add_argument("--loss", choices=["ce", "weighted", "focal", "logit_adjusted", "oversample", "multitask"],
                   default="ce")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--test", metavar="FILE", help="report predictions on this dataset's evaluation period")
    s.add_argument("--class-weights", default="inverse", help="weighted: inverse, seed (1,0.5,1) or SELL,HOLD,BUY")
    s.add_argument("--focal-gamma", type=float, default=2.0)
    s.add_argument("--focal-alpha", default="inverse", help="focal: inverse (default), seed or SELL,HOLD,BUY")
    s.add_argument("--tau", type=float, default=1.0, help="logit adjustment strength")
    s.add_argument("--return-weight", type=float, default=0.5, help="multitask: weight of the return loss")
    s.add_argument("--loss-position", choices=["last", "all"], default="last",
                   help="last (default, no leak) or all: the reviewed code's per-position loss, which leaks")
    s.add_argument("--patience", type=int, default=2, help="epochs without validation improvement before stopping")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("train-cgdt", cmd_train_cgdt, "Train CGDT, the ensemble partner (critic-guided decision transformer).")
    s.add_argument("--data", required=True, metavar="FILE", help="training dataset")
    s.add_argument("--out", required=True, metavar="PATH", help="folder (gets cgdt.safetensors) or .safetensors file")
    s.add_argument("--test", metavar="FILE", help="report predictions on this dataset's evaluation period")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("walk-forward", cmd_walk_forward, "Online learning over a test period: fine-tune every K bars.")
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="starting model (remedy 1's)")
    s.add_argument("--data", required=True, metavar="FILE", help="test dataset with labels")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--every", type=int, default=720, help="bars between fine-tunes, 500 to 1000 (default 720)")
    s.add_argument("--recent", type=int, default=2000, help="resolved bars to fine-tune on (default 2000)")
    s.add_argument("--epochs", type=int, default=2)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("init", cmd_init, "Write an untrained, randomly initialised checkpoint of a preset.")
    s.add_argument("--preset", choices=["full", "demo"], required=True)
    s.add_argument("--out", required=True, metavar="PATH")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print JSON")
    def placement_args(sp, what: str, default_workers: int) -> None:
        sp.add_argument("--workers", type=int, default=default_workers,
                        help=f"local worker processes for {what} (default {default_workers})")
        sp.add_argument("--ray-address", metavar="ADDR",
                        help=f"run {what} as tasks on a Ray cluster: 'local', 'auto', host:port or "
                             "ray://host:port (pip install 'flagcore[ray]')")
        sp.add_argument("--task-cpus", type=int, default=1, help="with --ray-address: CPUs per task (default 1)")

    def store_arg(sp):
        sp.add_argument("--store", metavar="PATH",
                        help="DuckDB result store (default $FLAGCORE_STORE or data/flagcore.duckdb)")

    def evaluation_args(sp):
        sp.add_argument("--hold-threshold", type=float, default=0.95, help="option 3's threshold (default 0.95)")
        sp.add_argument("--tau", type=float, default=1.0, help="logit adjustment strength (default 1)")
        sp.add_argument("--sizing", choices=["kelly", "unit"], default="kelly")
        sp.add_argument("--kelly-fraction", type=float, default=0.5)
        sp.add_argument("--fee-bps", type=float, default=4.0)
        sp.add_argument("--slippage-bps", type=float, default=2.0)
        sp.add_argument("--hold", choices=["flat", "keep"], default="flat", help="what HOLD means for the position")
        sp.add_argument("--criteria", metavar="TOML", help="HIFA thresholds ([hifa] table; default the seed's)")

    s = add("evaluate", cmd_evaluate, "Evaluate a checkpoint on a dataset: diagnostics, every option, backtests, "
            "HIFA; written to the store as one run.")
    s.add_argument("--checkpoint", required=True, metavar="CKPT", help="the model under review (plain CE baseline)")
    s.add_argument("--data", required=True, metavar="FILE", help="evaluation dataset")
    s.add_argument("--train", metavar="FILE", help="training dataset: label prior, payoff ratios, feature shift")
    s.add_argument("--partner", metavar="FILE_OR_CKPT", help="ensemble partner: a CGDT checkpoint or a predictions file")
    s.add_argument("--retrained", action="append", metavar="[ROLE=]PATH",
                   help="a retrained checkpoint or predictions file (repeatable); role from its training loss "
                        "unless given, e.g. walk_forward=preds.parquet")
    s.add_argument("--name", help="run name (default: the dataset's file name)")
    evaluation_args(s)
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    placement_args(s, "the checkpoints' inference", default_workers=1)
    store_arg(s)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("demo", cmd_demo, "Build the embedded demo end to end and evaluate it into the store (idempotent).")
    s.add_argument("--quick", action="store_true", help="small market and short training (under a minute)")
    s.add_argument("--root", metavar="DIR", help="where demo artifacts go (default data/demo)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    store_arg(s)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("runs", cmd_runs, "List the stored runs with their options and HIFA verdicts.")
    store_arg(s)
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("report", cmd_report, "Write a run's findings report (Markdown or HTML) from the store.")
    s.add_argument("--run", type=int, required=True, metavar="ID")
    s.add_argument("--format", choices=["md", "html"], default="md")
    s.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    store_arg(s)

    s = add("review", cmd_review, "Record a review (sign-off) of a run; reviews are append-only.")
    s.add_argument("--run", type=int, required=True, metavar="ID")
    s.add_argument("--reviewer", required=True)
    s.add_argument("--verdict", required=True, choices=["approve", "reject", "needs-work"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--comment", default="")
    g.add_argument("--comment-file", metavar="FILE", help="read the comment from a file")
    store_arg(s)
    s.add_argument("--json", action="store_true", help="print JSON")

    s = add("validate", cmd_validate, "The HIFA criteria table of a stored run, per option; --retrain adds "
            "retraining CPCV.")
    s.add_argument("--run", type=int, metavar="ID", help="default: the newest run")
    s.add_argument("--criteria", metavar="TOML", help="judge the stored values against these thresholds")
    s.add_argument("--retrain", action="store_true",
                   help="retraining CPCV: retrain the trainable options on every split (takes minutes)")
    s.add_argument("--options", metavar="LIST", help="with --retrain: comma-separated options (default: all trainable)")
    s.add_argument("--quick-retrain", action="store_true", help="with --retrain: fewer windows per epoch")
    placement_args(s, "the retraining splits", default_workers=2)
    store_arg(s)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
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
