"""The "Root cause" page's logic (``flagcore.dashboard.ablation``, ``flagcore.dashboard.root_cause``)
on small synthetic inputs: the live ablation's fills and outcome, the sample size from time, the
stored explain's tables and the report section; and the page on the quick demo (AppTest): the "Run explain"
button when nothing is stored, and the one-line warning for a gone or changed checkpoint with the stored
result still shown. The stored verdicts with the live ablation: ``tests/test_app.py``; in Chromium:
``tests/browser/test_root_cause_in_browser.py``."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from flagcore.dashboard import ablation as abl
from flagcore.dashboard import report
from flagcore.dashboard import root_cause as rc
from flagcore.errors import FlagcoreError
from flagcore.models.file_id import file_sha256
from flagcore.vocab import CAUSE_VERDICTS, ROOT_CAUSES

N_REAL = 49  # real inputs; 49..59 are zero padding in the evaluated period, as in the demo
PADDED = list(range(N_REAL, 60))


def _model(train: bool = True) -> abl.AblationModel:
    from flagcore.models.attribution import inference_network
    from flagcore.models.flag_trader import FlagTraderConfig, build_model

    cfg = FlagTraderConfig(d_model=16, num_layers=1, num_heads=2, ff_dim=32, max_length=8, window=4)
    net = inference_network(build_model(cfg, seed=0))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(260, 60)).astype(np.float32)
    features[:, PADDED] = 0.0
    close = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=260)))
    return abl.AblationModel(
        run_id=1,
        net=net,
        features=features,
        close=close,
        eval_index=20,
        names=[f"f{j}" for j in range(N_REAL)] + [f"padding_{j}" for j in PADDED],
        padded=PADDED,
        train_features=(rng.normal(size=(400, 60)) + 1.0).astype(np.float32) if train else None,
        n_params=sum(p.numel() for p in net.parameters()),
        periods_per_year=8760.0,
    )


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def sample(model):
    return abl.sample_windows(model, 120, seed=0)


def test_the_sample_is_explains_sample_with_its_logits(model, sample):
    from flagcore.models.attribution import window_logits
    from flagcore.pipeline.explain_inputs import sample_bars

    want = sample_bars(model.first, len(model.features), 120, 0)
    assert np.array_equal(sample.rows, want.rows) and sample.stride == want.stride == 2
    assert sample.windows.shape == (120, 4, 60) and sample.close.shape == (120,)
    np.testing.assert_allclose(sample.logits, window_logits(model.net, sample.windows), atol=1e-5)
    with pytest.raises(FlagcoreError, match="at least 20 bars"):
        abl.sample_windows(model, 5, seed=0)


def test_filling_nothing_leaves_the_outcome_unchanged(model, sample):
    before = sample.windows.copy()
    for kind in abl.FILLS:
        ab = abl.ablate(model, sample, kind, [])
        assert ab.after == ab.before and ab.max_logit_change == 0.0
        assert ab.inputs == ab.changed == [] and ab.bars == 120
    assert np.array_equal(sample.windows, before)  # the cached sample is never written


@pytest.mark.parametrize("kind", list(abl.FILLS))
def test_a_fill_changes_only_the_chosen_inputs(model, sample, kind):
    chosen = [3, N_REAL, N_REAL + 4]
    windows = sample.windows.copy()
    filled = abl.make_fill(model, kind, chosen, seed=0)(windows.copy())
    others = [j for j in range(60) if j not in chosen]
    assert np.array_equal(filled[:, :, others], windows[:, :, others])
    for j in chosen:
        assert not np.array_equal(filled[:, :, j], windows[:, :, j]), (kind, j)
    ab = abl.ablate(model, sample, kind, chosen, progress=lambda stage, frac: None)
    assert ab.changed == ab.inputs == ["f3", "padding_49", "padding_53"]
    assert ab.max_logit_change > 0 and ab.before.n_bars == ab.after.n_bars == 120


def test_the_ablation_reports_progress_and_reads_as_a_table(model, sample):
    seen = []
    ab = abl.ablate(model, sample, "median", PADDED, progress=lambda stage, frac: seen.append((stage, frac)))
    assert seen[-1] == ("inferring 120 of 120 bars", 1.0) and len(seen) == 2  # batches of 64
    table = ab.table()
    assert list(table[""]) == ["as evaluated", "after the fill (training medians)"]
    assert table.loc[0, "trades"] == ab.before.trades and table.loc[1, "trades"] == ab.after.trades
    assert "filling 11 inputs" in ab.caption()
    # the medians are the training period's, the padded inputs' included
    np.testing.assert_allclose(model.medians, np.median(model.train_features, axis=0), rtol=1e-6)


def test_without_training_data_only_the_evaluated_medians_fill():
    m = _model(train=False)
    assert list(m.fills()) == ["median"]
    np.testing.assert_allclose(m.medians, np.median(m.features[m.eval_index :], axis=0))
    with pytest.raises(FlagcoreError, match="unknown fill 'resample'"):
        abl.make_fill(m, "resample", PADDED)


def test_the_sample_size_stays_under_the_time_budget_for_a_big_model():
    small, big = 126_723, 87_955_971
    assert abl.sample_size_for(0.05, small) == rc.DEFAULT_BARS  # a small model keeps the default
    assert abl.sample_size_for(0.12, big) == 250  # 30 s / 0.12 s
    assert abl.sample_size_for(0.01, big) == rc.DEFAULT_BARS  # fast enough for the default
    assert abl.sample_size_for(10.0, big) == abl.MIN_BARS  # never below the minimum
    assert abl.sample_size_for(0.001, small, candidates=80) == 80
    assert rc.explain_settings(big) == rc.EXPLAIN_BIG and rc.explain_settings(small) == rc.EXPLAIN_SMALL


def test_the_plan_times_the_model_here(model):
    plan = abl.plan_sample(model)
    assert not plan.big and plan.timed_windows == abl.ABLATION_BATCH and plan.per_window_s > 0
    assert plan.bars == plan.candidates == 260 - 20  # the default 500, capped by the evaluated bars
    assert f"{model.n_params:,} parameters" in plan.note()
    huge = abl.SamplePlan(250, 0.12, 8, 87_955_971, True, 30.0, 9000)
    assert (
        "over 10 M" in huge.note()
        and "250 bars, at most about 30 s per inference (the budget is 30 s)" in huge.note()
    )


# ----------------------------------------------------------------------------- the stored explain


def _stored(with_fills: bool = True) -> dict:
    """An explain result as the store returns it (JSON), from synthetic measures."""
    from flagcore.analysis.root_cause import Evidence, root_cause_verdicts
    from flagcore.analysis.root_cause_measures import outcome, prior_check, sensitivity
    from flagcore.pipeline.explain import ExplainResult

    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(scale=0.01, size=200)))
    collapsed = np.tile([-5.6, 5.0, -5.6], (200, 1)) + rng.normal(scale=0.01, size=(200, 3))
    lively = rng.normal(size=(200, 3)) * 3
    prior = np.array([0.2, 0.61, 0.19])
    test = outcome(collapsed, close, 8760)
    fill = outcome(lively, close, 8760)
    ev = Evidence(
        test=test,
        prior=prior_check(collapsed, prior),
        padding_median=fill if with_fills else None,
        padding_resample=test if with_fills else None,
        shift=test if with_fills else None,
        shifted_inputs=["ret_96"] if with_fills else [],
        sensitivity=sensitivity(collapsed, collapsed, collapsed[:1]),
        has_padding=True,
    )
    missing = {} if with_fills else {"padding_median": "the run has no training data"}
    res = ExplainResult(
        7, "2025-03-04T05:06:07+00:00", {"bars": 200, "seed": 3}, root_cause_verdicts(ev), ev, missing
    )
    return json.loads(json.dumps(res.to_dict()))


def test_the_verdict_table_has_one_row_per_cause_with_its_badge_rule_and_numbers():
    res = _stored()
    t = rc.verdict_table(res)
    assert list(t["cause"]) == list(ROOT_CAUSES.values())
    assert set(t["verdict"]) <= {rc.BADGES[v] for v in CAUSE_VERDICTS}
    by = t.set_index("cause")
    assert by.loc[ROOT_CAUSES["padding"], "verdict"] == "SUPPORTED"  # the median fill trades
    assert "padding_median_trades" in by.loc[ROOT_CAUSES["padding"], "numbers"]
    assert by.loc[ROOT_CAUSES["prior"], "rule"].startswith("supported when the model collapses")
    assert rc.supported_causes(res)[0] == ROOT_CAUSES["padding"]
    assert rc.computed_line(res) == "computed 2025-03-04 05:06 UTC on 200 bars (seed 3)"
    assert [c for _, c in rc.verdict_badges(res)][1] == "red"


def test_the_measures_read_as_tables():
    res = _stored()
    cf = rc.counterfactual_table(res)
    assert list(cf[""])[:4] == [
        "evaluated bars, as they are",
        "padded inputs = training medians",
        "padded inputs = resampled training rows",
        "shifted inputs quantile-mapped (ret_96)",
    ]
    assert len(cf) == 4  # no in-sample outcome measured
    assert cf.loc[0, "collapsed"] == "COLLAPSED" and cf.loc[0, "HOLD"] == 1.0
    shares, gaps, sentence = rc.prior_tables(res)
    assert list(shares["training prior"].round(2)) == [0.2, 0.61, 0.19]
    assert gaps.loc[0, "gap"] == "HOLD - SELL" and round(gaps.loc[0, "mean gap (nats)"], 1) == 10.6
    assert sentence.startswith("The prior accounts for 11% of the mean HOLD margin")
    sens = rc.sensitivity_table(res).set_index("measure")["value"]
    assert sens["input-blind"] == "yes"
    assert rc.attribution_table(res) is None and rc.missing_table(res).empty
    unshifted = _stored()
    unshifted["measures"]["shifted_inputs"] = []  # measured, nothing to map
    assert list(rc.counterfactual_table(unshifted)[""])[3] == "no input shifted (PSI > 0.25): nothing mapped"
    partial = _stored(with_fills=False)
    assert list(rc.missing_table(partial)["measure"]) == ["padding_median"]
    assert len(rc.counterfactual_table(partial)) == 1


def test_the_report_section_shows_the_verdicts_or_says_explain_has_not_run():
    none = report.root_cause_section(SimpleNamespace(run={"run_id": 7}, root_cause=None))
    assert none == [
        ("h2", "Root cause"),
        ("p", "flagcore explain has not been run for this run (flagcore explain --run 7)."),
    ]
    res = _stored(with_fills=False)
    blocks = report.root_cause_section(SimpleNamespace(run={"run_id": 7}, root_cause=res))
    assert blocks[0] == ("h2", "Root cause")
    assert "computed 2025-03-04 05:06 UTC on 200 bars (seed 3)" in blocks[1][1]
    table = blocks[2]
    assert table[0] == "table" and table[1] == ["cause", "verdict", "rule", "numbers"]
    assert [r[0] for r in table[2]] == list(ROOT_CAUSES.values())
    assert blocks[3][1].startswith("Not computed: padding_median (the run has no training data)")
    md, page = report.to_markdown(blocks), report.to_html(blocks)
    assert "## Root cause" in md and "<h2>Root cause</h2>" in page and "inconclusive" in page


def test_the_module_examples_hold():
    assert doctest.testmod(rc).failed == 0 and doctest.testmod(abl).failed == 0


# ----------------------------------------------------------------------------- the page (AppTest)

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def page(quick_demo_copy, monkeypatch):
    """The Root cause page of the app over this test's own copy of the quick demo's store."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()  # caches outlive an AppTest in this process
    st.cache_resource.clear()
    monkeypatch.setenv("FLAGCORE_STORE", str(quick_demo_copy["store"].path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(quick_demo_copy["run_id"])
    at.run()
    at.switch_page("app_pages/root_cause.py").run()
    assert not at.exception, at.exception
    yield at, quick_demo_copy
    st.cache_data.clear()
    st.cache_resource.clear()


def _verdict_rows(at) -> list[str]:
    tables = [d.value for d in at.dataframe if "verdict" in d.value.columns]
    return list(tables[0]["cause"]) if tables else []


def test_the_run_explain_button_computes_and_shows_the_verdicts(page, monkeypatch):
    at, demo = page
    store, rid = demo["store"], demo["run_id"]
    monkeypatch.setattr(rc, "EXPLAIN_SMALL", {"bars": 100, "ig_windows": 8})  # cheap, same code path
    at.run()
    assert store.root_cause(rid) is None and _verdict_rows(at) == []
    assert any(f"flagcore explain --run {rid}" in i.value for i in at.info)
    button = at.button(key="explain_go")
    assert button.label == "Run explain (100 bars)"
    button.click().run()
    assert not at.exception and not at.error
    stored = store.root_cause(rid)
    assert stored is not None and stored["settings"]["bars"] == 100 and stored["settings"]["ig_windows"] == 8
    assert _verdict_rows(at) == list(ROOT_CAUSES.values())  # the page shows what it just stored
    assert any(c.value.startswith(rc.computed_line(stored)) for c in at.caption)
    assert not [b for b in at.button if b.key == "explain_go"]  # stored now: no button


@pytest.mark.parametrize("how", ["gone", "changed"])
def test_a_gone_or_changed_checkpoint_is_one_warning_line_and_the_stored_result_shows(page, tmp_path, how):
    import shutil

    import duckdb

    from flagcore.pipeline.explain import explain_run

    at, demo = page
    store, rid = demo["store"], demo["run_id"]
    explain_run(store, rid, bars=60, ig_windows=0)
    stored = store.root_cause(rid)
    source = store.run_models(rid).set_index("role").loc["baseline", "source"]
    moved = tmp_path / "moved.safetensors"
    if how == "changed":  # one byte of the last tensor's data
        shutil.copy(source, moved)
        with open(moved, "r+b") as f:
            f.seek(-1, 2)
            last = f.read(1)
            f.seek(-1, 2)
            f.write(bytes([last[0] ^ 1]))
    con = duckdb.connect(str(store.path))
    try:  # the run's checkpoint recorded at the moved (or missing) file, in this test's own store copy
        mid = con.execute("SELECT model_id FROM runs WHERE run_id = ?", [rid]).fetchall()[0][0]
        con.execute("UPDATE models SET source = ? WHERE model_id = ?", [str(moved), mid])
    finally:
        con.close()
    import streamlit as st

    st.cache_resource.clear()  # the checked model loaded earlier is cached
    st.cache_data.clear()
    at.run()
    assert not at.exception
    assert len(at.warning) == 1
    text = at.warning[0].value.replace("\\", "")  # shown as escaped markdown
    assert "\n" not in text.strip() and f"{moved}: " in text
    assert ("gone" in text) if how == "gone" else ("sha256" in text)
    assert _verdict_rows(at) == list(ROOT_CAUSES.values())  # the stored result still shows
    assert any(c.value.startswith(rc.computed_line(stored)) for c in at.caption)
    assert any("needs the run's FLAG-TRADER checkpoint" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "ablation_go"]
    assert store.root_cause(rid) == stored  # nothing was added


def test_viewing_the_page_loads_no_model_until_the_live_ablation_is_asked_for(page, monkeypatch):
    from flagcore.dashboard import state as ac

    at, demo = page
    loads: list[int] = []
    real = ac.explain_model
    monkeypatch.setattr(ac, "explain_model", lambda path, rid: loads.append(rid) or real(path, rid))
    at.run()  # the view: the checkpoint's file and sha256 checked, nothing loaded
    assert not at.exception and not at.warning and loads == []
    assert not [m for m in at.multiselect if m.key == "ablation_inputs"]
    at.button(key="ablation_load").click().run()
    assert not at.exception and not at.warning and set(loads) == {demo["run_id"]}  # the plan reads it too
    assert at.multiselect(key="ablation_inputs").value == PADDED  # the controls, the padded preselected
    assert not [b for b in at.button if b.key == "ablation_load"]


def test_the_ablation_problem_is_told_from_the_files_without_the_model(tmp_path):
    import pandas as pd

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    data = tmp_path / "test.parquet"
    data.write_bytes(b"rows")
    run = {"run_id": 3, "dataset_id": "d1", "train_dataset_id": None}
    models = pd.DataFrame(
        [
            {
                "role": "baseline",
                "kind": "flag-trader",
                "source": str(ckpt),
                "model_id": file_sha256(str(ckpt)),
            }
        ]
    )
    datasets = {"d1": {"source": str(data)}}
    assert abl.ablation_problem(run, models, datasets.get) is None
    assert "sha256 differs" in abl.ablation_problem(run, models.assign(model_id="0" * 64), datasets.get)
    assert "is gone" in abl.ablation_problem(run, models.assign(source=str(tmp_path / "x")), datasets.get)
    assert "not a FLAG-TRADER" in abl.ablation_problem(run, models.assign(kind="cgdt"), datasets.get)
    data.unlink()
    assert abl.ablation_problem(run, models, datasets.get) == (
        f"{data}: run 3's evaluated dataset is gone; the live ablation needs it"
    )
