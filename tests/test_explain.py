"""``flagcore explain``: the fills, integrated gradients, the stored result, and the bad inputs."""

import json
import shutil

import duckdb
import numpy as np
import pytest
from conftest import SMALL, copy_demo_store, reviewed_state_dict, with_trained_lora

from flagcore.cli import main
from flagcore.errors import FlagcoreError
from flagcore.models.attribution import (
    bar_windows,
    counterfactual_logits,
    gap_classes,
    integrated_gradients,
    window_logits,
)
from flagcore.pipeline.explain import MEASURES, explain_run
from flagcore.pipeline.explain_inputs import (
    median_fill,
    quantile_fill,
    resample_fill,
    sample_bars,
    shuffle_time,
)
from flagcore.vocab import CAUSE_VERDICTS, HOLD, ROOT_CAUSES

# ----------------------------------------------------------------------------- fills and samples


def test_padding_fills_change_only_the_padded_inputs():
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, 4, 6)).astype(np.float32)
    windows[:, :, 4:] = 0.0  # inputs 4 and 5 are padding
    train = rng.normal(size=(50, 6)).astype(np.float32)
    medians = np.median(train, axis=0)
    before = windows.copy()

    filled = median_fill([4, 5], medians)(windows)
    np.testing.assert_array_equal(filled[:, :, :4], windows[:, :, :4])
    np.testing.assert_allclose(filled[:, :, 4:], np.broadcast_to(medians[4:], (3, 4, 2)))

    rows = resample_fill([4, 5], train, seed=1)(windows)
    np.testing.assert_array_equal(rows[:, :, :4], windows[:, :, :4])
    for b in range(3):  # each window's padded inputs are a stretch of consecutive training rows
        start = int(np.flatnonzero((train[:, 4] == rows[b, 0, 4]) & (train[:, 5] == rows[b, 0, 5]))[0])
        np.testing.assert_array_equal(rows[b, :, 4:], train[start : start + 4, 4:])
    np.testing.assert_array_equal(resample_fill([4, 5], train, seed=1)(windows), rows)  # deterministic
    np.testing.assert_array_equal(windows, before)  # the fills copy


def test_quantile_fill_maps_only_its_inputs_and_keeps_their_order():
    rng = np.random.default_rng(1)
    test = rng.normal(loc=3.0, scale=2.0, size=(400, 3))
    train = rng.normal(size=(800, 3))
    windows = test[None, :, :].astype(np.float32)  # one long window of the test bars
    mapped = quantile_fill([1], test, train)(windows)
    np.testing.assert_array_equal(mapped[:, :, [0, 2]], windows[:, :, [0, 2]])
    x, y = windows[0, :, 1], mapped[0, :, 1]
    assert np.all(np.diff(y[np.argsort(x)]) >= -1e-6)  # monotone: the bars keep their order
    assert abs(np.median(y) - np.median(train[:, 1])) < 0.1  # the test period's shift is gone
    assert abs(np.median(x) - 3.0) < 0.3


def test_sample_and_shuffle_are_deterministic():
    a, b = sample_bars(100, 1600, 500, seed=3), sample_bars(100, 1600, 500, seed=3)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert (len(a.rows), a.stride) == (500, 3) and a.rows[0] == 100 + a.offset
    assert {sample_bars(100, 1600, 500, seed=s).offset for s in range(40)} == {0, 1, 2}
    everything = sample_bars(0, 50, 500, seed=0)
    np.testing.assert_array_equal(everything.rows, np.arange(50))
    w = np.arange(2 * 5 * 1, dtype=float).reshape(2, 5, 1)
    s = shuffle_time(w, seed=0)
    assert sorted(s[0, :, 0]) == sorted(w[0, :, 0]) and not np.array_equal(s, w)
    np.testing.assert_array_equal(s, shuffle_time(w, seed=0))


def test_bar_windows_and_counterfactual_logits():
    import torch

    from flagcore.models.flag_trader import build_model

    torch.manual_seed(0)
    model = with_trained_lora(build_model(SMALL))
    feats = np.random.default_rng(2).normal(size=(40, 60)).astype(np.float32)
    w = bar_windows(feats, np.array([7, 20, 39]), SMALL.window)
    np.testing.assert_array_equal(w[1], feats[13:21])
    with pytest.raises(FlagcoreError, match="bar 3 has no full window"):
        bar_windows(feats, np.array([3]), SMALL.window)
    base = window_logits(model, w)
    np.testing.assert_allclose(counterfactual_logits(model, w), base)
    filled = counterfactual_logits(model, w, median_fill([59], np.full(60, 5.0)))
    assert np.abs(filled - base).max() > 1e-4  # the fill reached the model
    assert w[:, :, 59].max() < 5.0  # and left the windows alone


# ----------------------------------------------------------------------------- integrated gradients


def test_integrated_gradients_complete_on_the_small_model():
    import torch

    from flagcore.models.flag_trader import build_model

    torch.manual_seed(0)
    model = with_trained_lora(build_model(SMALL), std=0.2)
    rng = np.random.default_rng(3)
    windows = rng.normal(size=(6, SMALL.window, 60)).astype(np.float32)
    baseline = np.median(rng.normal(size=(100, 60)), axis=0) * np.ones((SMALL.window, 1))
    ig = integrated_gradients(model, windows, baseline, n_steps=16, batch_size=4)
    assert ig.attributions.shape == ig.abs_attributions.shape == (6, 60)
    assert np.all(ig.abs_attributions >= np.abs(ig.attributions) - 1e-9)
    # completeness: each window's attributions sum to gap(x) - gap(baseline), within captum's delta
    np.testing.assert_allclose(ig.attributions.sum(axis=1), ig.gap - ig.baseline_gap + ig.delta, atol=1e-5)
    assert ig.completeness_error() < 1e-3
    assert (
        ig.completeness_error()
        < integrated_gradients(model, windows, baseline, n_steps=2).completeness_error()
    )
    # the gap is the decision's: predicted minus HOLD, or HOLD minus the best other class
    lg = window_logits(model, windows)
    top, other = gap_classes(lg)
    assert np.all(ig.gap > 0) and np.all((top == HOLD) | (other == HOLD))
    np.testing.assert_allclose(ig.gap, lg[np.arange(6), top] - lg[np.arange(6), other])


# ----------------------------------------------------------------------------- on the quick demo


@pytest.fixture(scope="module")
def explained(quick_demo, tmp_path_factory):
    """The quick demo's store copied, explained once through the CLI (200 bars, 16 IG windows)."""
    demo = copy_demo_store(quick_demo, tmp_path_factory.mktemp("explain"))
    args = ["explain", "--run", str(demo["run_id"]), "--bars", "200", "--ig-windows", "16"]
    args += ["--store", str(demo["store"].path), "--quiet"]
    return demo, args


def test_explain_prints_the_verdict_table_and_stores_the_result(explained, capsys):
    demo, args = explained
    store, run_id = demo["store"], demo["run_id"]
    before = store.root_cause(run_id) or {}
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Root cause of the collapse, run {run_id}: the baseline collapses on the test")
    rows = [line for line in out[1:] if any(line.strip().startswith(t) for t in ROOT_CAUSES.values())]
    assert len(rows) == len(ROOT_CAUSES)  # one row per cause, in the vocabulary's order
    for line, title in zip(rows, ROOT_CAUSES.values(), strict=True):
        assert line.strip().startswith(title) and line.split()[-1] in " ".join(CAUSE_VERDICTS)
    assert out.index(rows[-1]) < next(i for i, x in enumerate(out) if x.startswith("Measures on 200"))

    stored = store.root_cause(run_id)
    assert stored["computed_at"] != before.get("computed_at")  # appended to the run
    assert stored["settings"]["bars"] == 200 and stored["settings"]["seed"] == 0
    assert [v["cause"] for v in stored["verdicts"]] == list(ROOT_CAUSES)
    assert stored["measures"]["test"]["n_bars"] == 200 and stored["missing"] == {}
    assert stored["model"]["checked"] is True
    assert stored["checks"]["stored_logits_max_diff"] < 1e-4  # the same logits as the run's
    assert stored["measures"]["test"]["collapsed"] is True  # the quick demo's baseline collapses
    assert stored["measures"]["attribution"]["completeness_error"] < 1e-2
    assert stored["measures"]["padding_median"]["n_bars"] == 200


def test_explain_json_is_valid_and_the_newest_result_is_read(explained, capsys):
    demo, args = explained
    store, run_id = demo["store"], demo["run_id"]
    if store.root_cause(run_id) is None:  # run on its own: explain once first
        assert main(args) == 0
    first = store.root_cause(run_id)
    capsys.readouterr()
    assert main([*args, "--json", "--seed", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["cause"] for v in data["verdicts"]] == list(ROOT_CAUSES)
    assert all(v["verdict"] in CAUSE_VERDICTS for v in data["verdicts"])
    assert set(MEASURES) <= set(data["measures"])
    newest = store.root_cause(run_id)
    assert newest["settings"]["seed"] == 1 and newest["computed_at"] > first["computed_at"]
    assert store.diagnostics(run_id)["root_cause"] == newest  # never an older row
    assert main([*args, "--stored", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["computed_at"] == newest["computed_at"]


def _point_checkpoint(store, run_id, path):
    """Tests only: the run's baseline checkpoint recorded at ``path`` (in this test's own store copy)."""
    con = duckdb.connect(str(store.path))
    try:
        mid = con.execute("SELECT model_id FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0]
        con.execute("UPDATE models SET source = ? WHERE model_id = ?", [str(path), mid])
    finally:
        con.close()


def test_a_gone_or_changed_checkpoint_is_one_line_and_the_stored_result_still_shows(
    explained, tmp_path, capsys
):
    demo, args = explained
    own = copy_demo_store(demo, tmp_path / "own")
    store, run_id = own["store"], own["run_id"]
    if store.root_cause(run_id) is None:
        explain_run(store, run_id, bars=100, ig_windows=0)
    stored = store.root_cause(run_id)
    args = [*args[:-3], "--store", str(store.path), "--quiet"]

    gone = tmp_path / "moved" / "model.safetensors"
    _point_checkpoint(store, run_id, gone)
    capsys.readouterr()
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and str(gone) in err and "gone" in err
    assert (
        "(stored result)" in out and f"Root cause of the collapse, run {run_id}" in out
    )  # the stored result shows
    assert store.root_cause(run_id) == stored  # and nothing was added

    source = demo["store"].run_models(run_id).set_index("role").loc["baseline", "source"]
    changed = tmp_path / "changed.safetensors"
    shutil.copy(source, changed)
    with open(changed, "r+b") as f:  # one byte of the last tensor's data
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    _point_checkpoint(store, run_id, changed)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(changed) in err and "sha256" in err
    assert store.root_cause(run_id) == stored


def test_a_run_without_a_model_gets_the_measures_that_need_none(explained, tmp_path):
    demo, _ = explained
    own = copy_demo_store(demo, tmp_path / "own")
    store, run_id = own["store"], own["run_id"]
    model_id = store.run(run_id)["model_id"]
    con = duckdb.connect(str(store.path))
    try:  # the baseline recorded as a predictions file
        con.execute("UPDATE models SET kind = 'predictions' WHERE model_id = ?", [model_id])
    finally:
        con.close()
    before = store.root_cause(run_id)
    res = explain_run(store, run_id, bars=100, save=False).to_dict()
    m = res["measures"]
    assert m["test"]["n_bars"] == 100 and m["prior"] is not None and m["in_sample"] is not None
    assert m["padding_median"] is None and m["sensitivity"] is None and m["attribution"] is None
    assert set(res["missing"]) == {
        "padding_median",
        "padding_resample",
        "shift",
        "sensitivity",
        "attribution",
    }
    assert "predictions model" in res["missing"]["shift"]
    assert res["model"]["checked"] is False and store.root_cause(run_id) == before
    verdicts = {v["cause"]: v for v in res["verdicts"]}
    assert verdicts["padding"]["verdict"] == "inconclusive" and verdicts["padding"]["missing"]


def test_bad_settings_and_runs_are_one_line(explained, capsys):
    demo, args = explained
    with pytest.raises(FlagcoreError, match="bars must be a whole number >= 20, got 5"):
        explain_run(demo["store"], demo["run_id"], bars=5)
    with pytest.raises(FlagcoreError, match="no run 999"):
        demo["store"].add_root_cause(999, {"computed_at": "2026-01-01T00:00:00+00:00"})
    capsys.readouterr()
    assert main(["explain", "--run", "999", *args[3:]]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run 999" in err


# ----------------------------------------------------------------------------- an imported checkpoint


@pytest.mark.slow  # about 15 s: an evaluate of the small demo, then explain
def test_explain_on_a_run_evaluated_from_an_imported_reviewed_checkpoint(small_demo, tmp_path, capsys):
    """The reviewed team's format (reviewed-model.md): imported with `flagcore import`, evaluated,
    then explained through the CLI; the verdict table prints and the checked checkpoint is the import."""
    import torch

    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings
    from flagcore.store.store import Store

    reviewed = tmp_path / "reviewed.pt"
    config = {"state_dim": 60, "action_dim": 3, "max_length": SMALL.max_length}
    torch.save({"model": reviewed_state_dict(SMALL), "config": config}, reviewed)
    imported = tmp_path / "imported"
    assert main(["import", str(reviewed), "--out", str(imported), "--num-heads", "4", "--window", "8"]) == 0
    store = Store(tmp_path / "store.duckdb")
    fast = EvaluateSettings(criteria={**EvaluateSettings().resolved_criteria(), "n_permutations": 100})
    run_id = evaluate(
        imported, small_demo["test_path"], train_data=small_demo["train_path"], store=store, settings=fast
    )["run_id"]
    capsys.readouterr()
    args = ["explain", "--run", str(run_id), "--bars", "100", "--ig-windows", "8"]
    assert main([*args, "--store", str(store.path), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Root cause of the collapse, run {run_id}: the baseline ")
    rows = [line.strip() for line in out if any(line.strip().startswith(t) for t in ROOT_CAUSES.values())]
    assert len(rows) == len(ROOT_CAUSES)
    for line, title in zip(rows, ROOT_CAUSES.values(), strict=True):
        assert line.startswith(title) and line.endswith(CAUSE_VERDICTS)
    stored = store.root_cause(run_id)
    assert stored["model"]["checked"] is True and stored["model"]["source"].startswith(str(imported))
    assert stored["missing"] == {} and stored["measures"]["test"]["n_bars"] == 100
    assert stored["checks"]["stored_logits_max_diff"] < 1e-4  # the same logits as the evaluate's
    assert stored["measures"]["has_padding"] is True  # the small demo's order flow stops at the test period
