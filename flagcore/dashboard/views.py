"""Tables the dashboard shows, shaped from the store (no streamlit here, so tests read them too)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from flagcore.store.store import Store, from_json

CRITERIA = {"cpcv_mean_sharpe": "CPCV mean Sharpe", "deflated_sharpe": "Deflated Sharpe",
            "permutation_p": "Permutation p"}
BADGE = {True: "PASS", False: "FAIL"}


def run_label(row) -> str:
    return f"#{int(row['run_id'])} {row['name']} ({pd.Timestamp(row['created_at']):%Y-%m-%d %H:%M})"


def runs_overview(store: Store) -> pd.DataFrame:
    """One row per run: baseline collapse, HIFA badges of the best option, latest review."""
    runs = store.list_runs()
    if runs.empty:
        return pd.DataFrame()
    opts = store.query("SELECT run_id, option, title, sharpe, trades, hifa_passed FROM option_results")
    rows = []
    for _, r in runs.iterrows():
        summary = from_json(r["summary"]) or {}
        col = summary.get("collapse") or {}
        o = opts[(opts["run_id"] == r["run_id"]) & (opts["option"] != "opt5_labels")]
        base = o[o["option"] == "baseline"]
        best = o.sort_values(["hifa_passed", "sharpe"], ascending=False).head(1)
        rows.append({
            "run": int(r["run_id"]), "name": r["name"], "created": pd.Timestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M"),
            "baseline": "COLLAPSED" if col.get("collapsed") else "not collapsed",
            "baseline HOLD share": summary.get("baseline_hold_share"),
            "baseline HIFA": f"{int(base['hifa_passed'].iloc[0])}/3" if len(base) else "n/a",
            "best option": best["title"].iloc[0] if len(best) else "n/a",
            "best HIFA": f"{int(best['hifa_passed'].iloc[0])}/3" if len(best) else "n/a",
            "options passing HIFA": ", ".join(summary.get("options_passing_hifa") or []) or "none",
            "trials": summary.get("n_trials"),
            "latest review": "none" if pd.isna(r["latest_verdict"]) else f"{r['latest_verdict']} ({r['latest_reviewer']})",
        })
    return pd.DataFrame(rows)


def hifa_badges(store: Store, run_id: int) -> pd.DataFrame:
    """Per option: each criterion's value with PASS/FAIL, and how many pass."""
    h = store.hifa(run_id)
    opts = store.option_results(run_id)
    rows = []
    for _, o in opts.iterrows():
        g = h[h["option"] == o["option"]].set_index("criterion")
        row = {"option": o["title"]}
        for key, label in CRITERIA.items():
            if key in g.index:
                v = g.loc[key]
                fmt = f"{v['value']:.4f}" if key == "permutation_p" else f"{v['value']:.2f}"
                row[label] = f"{BADGE[bool(v['passed'])]} {fmt}"
        row["passed"] = f"{int(o['hifa_passed'])}/3"
        rows.append(row)
    return pd.DataFrame(rows)


def options_table(store: Store, run_id: int) -> pd.DataFrame:
    o = store.option_results(run_id)
    return pd.DataFrame({
        "option": o["title"], "SELL": o["share_sell"], "HOLD": o["share_hold"], "BUY": o["share_buy"],
        "accuracy": o["accuracy"], "balanced accuracy": o["balanced_accuracy"], "macro-F1": o["macro_f1"],
        "trades": o["trades"], "return": o["total_return"], "Sharpe": o["sharpe"],
        "Sharpe defined": o["sharpe_defined"], "max drawdown": o["max_drawdown"],
        "HIFA passed": o["hifa_passed"].astype(int).astype(str) + "/3", "key": o["option"],
    })


def criteria_table(store: Store, run_id: int, option: str) -> pd.DataFrame:
    h = store.hifa(run_id)
    g = h[h["option"] == option]
    return pd.DataFrame({"criterion": [CRITERIA.get(c, c) for c in g["criterion"]], "value": g["value"].to_numpy(),
                         "rule": g["rule"].to_numpy(), "threshold": g["threshold"].to_numpy(),
                         "result": [BADGE[bool(p)] for p in g["passed"]]})


def model_logit_options(store: Store, run_id: int) -> list[str]:
    """Options backed by a model's own logits (what the logit-analysis page can show)."""
    roles = set(store.run_models(run_id)["role"])
    return [o for o in store.option_results(run_id)["option"] if o in roles]


def browsable_files(roots: list[Path] | None = None) -> dict[str, list[str]]:
    """Checkpoints and datasets under the configured folders only (``FLAGCORE_FILES``, a
    ``os.pathsep``-separated list; default ``data``), for the dashboard's pickers. Paths are
    resolved and kept only when they stay inside a root, so links cannot lead out of them."""
    if roots is None:
        env = os.environ.get("FLAGCORE_FILES")
        roots = [Path(p) for p in env.split(os.pathsep)] if env else [Path("data")]
    ckpts, data = set(), set()
    for root in roots:
        base = root.resolve()
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            try:
                rp = p.resolve()
                rp.relative_to(base)
            except (OSError, ValueError):
                continue
            if rp.name == "model.safetensors" or (rp.suffix == ".safetensors" and rp.parent.name != "cgdt"):
                ckpts.add(str(rp.parent if rp.name == "model.safetensors" else rp))
            elif rp.suffix in (".parquet", ".csv") and rp.is_file():
                data.add(str(rp))
    return {"checkpoints": sorted(ckpts), "datasets": sorted(data)}


def inside_roots(path: str | Path, roots: list[Path] | None = None) -> bool:
    files = browsable_files(roots)
    p = str(Path(path).resolve())
    return p in files["checkpoints"] or p in files["datasets"]


def annualise(x, periods_per_year: float):
    return np.asarray(x, dtype=np.float64) * np.sqrt(periods_per_year)
