"""Two runs side by side (the comparison page, ``?run=A&vs=B``): what each was computed from, and per
option how the actions, trades, Sharpe and each HIFA criterion differ; both runs' equity curves on
one chart.

Every function takes what the store returned (a :class:`RunSide` per run, built by the page from
the cached reads) and returns a frame to show; none reads the store and there is no streamlit here,
so the tests call them on small frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flagcore.dashboard.gate_views import finite, stored_criteria, value_text
from flagcore.vocab import BADGE, CLASS_NAMES, CRITERIA

DIFFERS = "differs"


@dataclass
class RunSide:
    """What one side of the comparison reads from the store.

    ``run`` is ``Store.run``; ``models`` ``Store.run_models``; ``options`` ``Store.option_results``;
    ``hifa`` ``Store.hifa``; ``equity`` ``Store.equity_curves`` (option, timestamp, equity), all of
    run ``run_id``.
    """

    run_id: int
    run: Mapping[str, Any]
    models: pd.DataFrame
    options: pd.DataFrame
    hifa: pd.DataFrame
    equity: pd.DataFrame

    @property
    def tag(self) -> str:
        """How columns name this run: "#3"."""
        return f"#{self.run_id}"


def default_vs(runs: pd.DataFrame, run_id: int, wanted: int | None) -> int | None:
    """The run to compare ``run_id`` with: ``wanted`` when it is another stored run; else the newest
    other run of the same checkpoint; else the newest other run; None with one run.

    ``runs`` is ``Store.list_runs()`` (run_id, model_id; newest first)."""
    others = runs[runs["run_id"] != run_id]
    if others.empty:
        return None
    if wanted is not None and wanted in set(others["run_id"]):
        return int(wanted)
    mine = runs.loc[runs["run_id"] == run_id, "model_id"]
    same = others[others["model_id"] == mine.iloc[0]] if len(mine) else others.iloc[:0]
    return int((same if len(same) else others)["run_id"].iloc[0])


def flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as dotted keys and their values in words: ``{"backtest.sizing": "kelly"}``."""
    out: dict[str, str] = {}
    for k, v in settings.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out |= flat(v, f"{key}.")
        elif isinstance(v, (list, tuple)):
            out[key] = ", ".join(str(x) for x in v)
        else:
            out[key] = "none" if v is None else str(v)
    return out


def _checkpoints(side: RunSide) -> dict[str, str]:
    return {f"checkpoint sha256 ({r['role']})": str(r["model_id"]) for _, r in side.models.iterrows()}


def inputs_table(a: RunSide, b: RunSide) -> pd.DataFrame:
    """What each run was computed from, one row per input: the checkpoints' and datasets' sha256,
    the author, then every setting; ``differs`` is True where the two runs' values are not equal.
    An input one run lacks (an option's checkpoint, a setting added later) reads "none"."""

    def inputs(side: RunSide) -> dict[str, str]:
        r = side.run
        head = {
            "name": str(r.get("name")),
            "author": str(r.get("author") or "unknown"),
            **_checkpoints(side),
            "test dataset sha256": str(r.get("dataset_id")),
            "training dataset sha256": str(r.get("train_dataset_id") or "none"),
        }
        return head | flat(r.get("settings") or {}, "settings: ")

    left, right = inputs(a), inputs(b)
    keys = list(left) + [k for k in right if k not in left]
    rows = [
        {"input": k, a.tag: left.get(k, "none"), b.tag: right.get(k, "none")}
        | {DIFFERS: left.get(k, "none") != right.get(k, "none")}
        for k in keys
    ]
    return pd.DataFrame(rows, columns=["input", a.tag, b.tag, DIFFERS])


def _union(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[str, str]]:
    """(option key, title) of the options in either run: A's table order, then B's others."""
    seen = dict(zip(a["option"], a["title"], strict=True))
    for k, t in zip(b["option"], b["title"], strict=True):
        seen.setdefault(k, t)
    return list(seen.items())


def _value(options: pd.DataFrame, option: str, column: str) -> float:
    row = options[options["option"] == option]
    return np.nan if row.empty else (finite(row[column].iloc[0]) or np.nan)


def _sharpe(options: pd.DataFrame, option: str) -> float:
    """An option's Sharpe, NaN where it is undefined (no trades) or the run lacks the option."""
    row = options[options["option"] == option]
    if row.empty or not bool(row["sharpe_defined"].iloc[0]):
        return np.nan
    return finite(row["sharpe"].iloc[0]) or np.nan


def options_table(a: RunSide, b: RunSide) -> pd.DataFrame:
    """Per option (either run's), side by side: each action's share in A and B, trades and Sharpe
    in A and B with the change B - A, and the HIFA criteria passed. An option one run lacks shows
    NaN there; an undefined Sharpe (no trades) shows NaN.

    Examples
    --------
    With option ``baseline`` trading 3 times in run 1 and 40 in run 2, the row "Baseline" reads
    ``trades #1 = 3, trades #2 = 40, trades change = 37``.
    """
    rows = []
    for key, title in _union(a.options, b.options):
        row: dict[str, Any] = {"option": title}
        for c in CLASS_NAMES:
            col = f"share_{c.lower()}"
            row[f"{c} {a.tag}"] = _value(a.options, key, col)
            row[f"{c} {b.tag}"] = _value(b.options, key, col)
        for name, pick in (("trades", lambda o, k: _value(o, k, "trades")), ("Sharpe", _sharpe)):
            va, vb = pick(a.options, key), pick(b.options, key)
            row[f"{name} {a.tag}"], row[f"{name} {b.tag}"], row[f"{name} change"] = va, vb, vb - va
        for side in (a, b):
            passed = _value(side.options, key, "hifa_passed")
            row[f"HIFA {side.tag}"] = "n/a" if np.isnan(passed) else f"{int(passed)}/{len(CRITERIA)}"
        row["key"] = key
        rows.append(row)
    return pd.DataFrame(rows)


def _criterion_cell(side: RunSide, option: str, key: str) -> tuple[str, str]:
    if option not in set(side.options["option"]):
        return "n/a", "not in run"
    r = stored_criteria(side.hifa, option)[key]
    if r is None:
        return "n/a", "not judged"
    return value_text(r), BADGE[bool(r.passed)]


def criteria_table(a: RunSide, b: RunSide) -> pd.DataFrame:
    """Per option and HIFA criterion: the value and PASS/FAIL in each run, and whether the result
    changed between them (``changed``: the PASS/FAIL differs)."""
    rows = []
    for key, title in _union(a.options, b.options):
        for c in CRITERIA:
            va, ra = _criterion_cell(a, key, c.key)
            vb, rb = _criterion_cell(b, key, c.key)
            rows.append(
                {
                    "option": title,
                    "criterion": c.label,
                    f"value {a.tag}": va,
                    f"result {a.tag}": ra,
                    f"value {b.tag}": vb,
                    f"result {b.tag}": rb,
                    "changed": ra != rb,
                }
            )
    return pd.DataFrame(rows)


def equity_pair(a: RunSide, b: RunSide, options: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Both runs' equity curves of ``options`` as one frame for ``plots.equity_curves``: each curve
    keyed "option@run" and titled "#3 Baseline (plain CE)"; an option a run lacks has no curve."""
    frames: list[pd.DataFrame] = []
    titles: dict[str, str] = {}
    for side in (a, b):
        names = dict(zip(side.options["option"], side.options["title"], strict=True))
        eq = side.equity[side.equity["option"].isin(options)]
        key = eq["option"] + f"@{side.run_id}"
        frames.append(eq.assign(option=key))
        titles |= {f"{o}@{side.run_id}": f"{side.tag} {names.get(o, o)}" for o in options}
    return pd.concat(frames, ignore_index=True), titles


def summary_lines(a: RunSide, b: RunSide) -> list[str]:
    """What changed, in a few words each: the inputs that differ, the options only one run has, and
    the options (in both) whose HIFA criteria passed changed."""
    inputs = inputs_table(a, b)
    differ = [str(k) for k in inputs.loc[inputs[DIFFERS], "input"] if k != "name"]
    lines = [f"Inputs that differ: {', '.join(differ) if differ else 'none (the same inputs)'}."]
    opts = options_table(a, b)
    ha, hb = opts[f"HIFA {a.tag}"], opts[f"HIFA {b.tag}"]
    for tag, only in ((a.tag, hb == "n/a"), (b.tag, ha == "n/a")):
        if only.any():
            lines.append(f"Only in run {tag}: {', '.join(opts.loc[only, 'option'])}.")
    both = (ha != "n/a") & (hb != "n/a")
    moved = [f"{r['option']} {ha[i]} -> {hb[i]}" for i, r in opts[both & (ha != hb)].iterrows()]
    lines.append(
        f"HIFA criteria passed changed for: {', '.join(moved) if moved else 'no option in both runs'}."
    )
    return lines
