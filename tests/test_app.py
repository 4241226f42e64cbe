"""AppTest smoke tests of every page on the quick demo, the slider and a review round trip."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
CRITERION_KEYS = ("min_trades", "cpcv_mean_sharpe", "deflated_sharpe", "permutation_p")


@pytest.fixture(autouse=True)
def clear_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def demo_app(quick_demo, monkeypatch):
    return _app(quick_demo, monkeypatch)


def _app(demo: dict, monkeypatch) -> AppTest:
    monkeypatch.setenv("FLAGCORE_STORE", str(demo["store"].path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(demo["run_id"])  # other tests may have added newer runs
    at.run()
    assert not at.exception
    return at


def _page(at, page):
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _metrics(at) -> dict:
    """label -> value of the first metric with that label (pages with two panels repeat labels)."""
    out = {}
    for m in at.metric:
        out.setdefault(m.label, m.value)
    return out


def _frames(at, column: str) -> list:
    """The page's tables that have ``column``, in page order."""
    return [d.value for d in at.dataframe if column in d.value.columns]


def _charts(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _tab(at, key: str, label: str):
    """Open a page's tab (``panels.open_tab``: only the open tab is drawn), as a click on it does."""
    at.session_state[key] = label
    at.run()
    assert not at.exception, at.exception
    return at


def test_empty_store_offers_to_build_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAGCORE_STORE", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Get started"
    assert at.button[0].label == "Build the demo"
    assert "flagcore demo --quick" in at.code[0].value
    assert not (tmp_path / "empty.duckdb").exists()  # looking does not create a store


def test_status_page_lists_the_run_with_its_verdicts(demo_app, quick_demo):
    at = demo_app
    store, rid = quick_demo["store"], quick_demo["run_id"]
    stored = store.option_results(rid).set_index("option").loc["baseline"]
    p = store.hifa(rid).set_index(["option", "criterion"]).loc[("baseline", "permutation_p"), "value"]
    assert at.title[0].value == "Validation status"
    runs = at.dataframe[0].value
    row = runs[runs["run"] == rid].iloc[0]
    assert row["baseline"] == "COLLAPSED" and row["baseline HIFA"] == f"{stored['hifa_passed']}/4"
    assert _metrics(at)["Baseline"] == "COLLAPSED"
    badges = at.dataframe[1].value
    base = badges[badges["option"] == "Baseline (plain CE)"].iloc[0]
    assert (
        base["Permutation p-value"].endswith(f" {p:.4f}") and base["passed"] == f"{stored['hifa_passed']}/4"
    )
    # a collapsed baseline signals on a handful of bars: below the minimum of independent bets
    assert stored["trades"] < 30 and base["Trades (independent bets)"] == f"FAIL {stored['trades']}"
    # beside the trades, the signals and what Kelly sizing made of them: why a model that signals can
    # show few or no trades
    sizing = stored["metrics"]["sizing"]
    assert base["signals"] == sizing["signals"]
    assert base["sized to 0"] == f"Kelly sized {sizing['sized_zero']:,} of {sizing['signals']:,} signals to 0"
    # the review status under the default policy (two approvals), in the list, the metrics and the picker
    status = store.run_status(rid)
    assert row["status"] == f"{status.status} ({status.approvals}/2)"
    assert (
        _metrics(at)["Review status"] == status.status
        and _metrics(at)["Approvals"] == f"{status.approvals}/2"
    )
    assert at.sidebar.selectbox[0].value == quick_demo["run_id"]
    assert any(
        o.startswith(f"#{rid} ") and o.endswith(f", {status.status}") for o in at.sidebar.selectbox[0].options
    )


def test_model_health_shows_parameters_shift_and_verdict(demo_app):
    at = _page(demo_app, "app_pages/model_health.py")
    assert _metrics(at)["Total parameters"] == "126,723"
    # the network's configuration sits in a labelled expander, not a bare collapsed "{...}"
    assert "Configuration of the baseline network (as stored in its checkpoint)" in [
        e.label for e in at.expander
    ]
    presets = at.dataframe[0].value
    assert int(presets.loc["full", "total_params"]) == 87_955_971
    assert int(presets.loc["full", "trainable_params"]) == 2_938_371
    assert any("11 of 60 model inputs are zero padding" in m.value for m in at.markdown)
    assert any("COLLAPSED" in e.value for e in at.error)
    assert not at.json  # drawn once opened: a collapsed one would still load the JSON viewer
    at.session_state["health_config"] = True
    at.run()
    assert len(at.json) == 1 and json.loads(at.json[0].proto.body)["d_model"] == 64  # the demo preset's
    at.button[0].click().run()  # the load and forward-pass check
    assert not at.exception
    assert any("matches the stored run" in s.value for s in at.success)


def test_logit_analysis_reproduces_the_seed_tables(demo_app, quick_demo):
    at = _page(demo_app, "app_pages/logits.py")
    m = _metrics(at)
    d = quick_demo["store"].diagnostics(quick_demo["run_id"])
    assert m["HOLD"] == f"{d['action_distribution']['counts']['HOLD']:,}"
    # one tab drawn at a time: the action shares and confidence first
    assert "Action distribution" in [c["layout"]["title"]["text"] for c in _charts(at)] and not at.dataframe
    logit_table = _tab(at, "logits_tab", "Logits per class").dataframe[0].value
    assert abs(logit_table.loc["HOLD", "mean"] - d["logits"]["HOLD"]["mean"]) < 1e-9
    assert "Accuracy" not in _metrics(at)
    at = _tab(at, "logits_tab", "Against the labels")
    titles = [c["layout"]["title"]["text"] for c in _charts(at)]
    assert any(t.startswith("Reliability (ECE") for t in titles) and "Confusion matrix" in titles
    assert len(titles) == 2  # the other tabs' charts are not drawn
    m = _metrics(at)
    assert m["Accuracy"] == f"{d['metrics']['accuracy']:.2%}"
    assert m["Majority-class baseline (HOLD)"] == f"{d['metrics']['majority_baseline']:.2%}"
    at.selectbox(key="logit_model").set_value("opt1_class_weights").run()
    assert not at.exception and at.metric[1].value != m["HOLD"]


def test_solution_slider_moves_trades_and_sharpe(demo_app, quick_demo):
    from flagcore.dashboard import gate_views
    from flagcore.dashboard.live import load_live_inputs, threshold_view

    at = _page(demo_app, "app_pages/solutions.py")
    table = at.dataframe[0].value
    assert len(table) == len(quick_demo["store"].option_results(quick_demo["run_id"]))
    slider = at.slider(key="threshold")
    assert slider.value == 0.95
    before = _metrics(at)
    slider.set_value(0.5).run()
    assert not at.exception
    after = _metrics(at)
    # the sweep chart, built once for the session, has its marker moved to the new value
    sweep = next(c for c in _charts(at) if "swept thresholds" in c["layout"]["title"]["text"])
    assert [s["x0"] for s in sweep["layout"]["shapes"]] == [0.5]
    assert [a["text"] for a in sweep["layout"]["annotations"]] == ["current 0.5"]
    want = threshold_view(load_live_inputs(quick_demo["store"], quick_demo["run_id"]), 0.5)
    assert after["Trades"] == f"{want['trades']:,}" != before["Trades"]
    assert after["Sharpe"].startswith(f"{want['sharpe']:.2f}") and after["Sharpe"] != before["Sharpe"]
    # live beside the slider: the four criteria with their rules, both DSR readings, MinTRL/MinBTL
    d = want["hifa"]["deflated_sharpe"]
    assert after["DSR probability"] == f"{d.inputs['dsr_probability']:.3f}"
    crit = _frames(at, "rule")[0].set_index("criterion")
    trades = crit.loc["Trades (independent bets)"]
    assert trades["rule"] == "trades >= 30" and trades["value"] == f"{want['trades']:,}"
    assert trades["result"] == ("PASS" if want["trades"] >= 30 else "FAIL")
    readings = _frames(at, "reading")[0].set_index("reading")
    assert readings.loc["Minimum track record", "value"] == gate_views.track_record_text(d.inputs)
    assert readings.loc["Minimum backtest length", "value"] == gate_views.backtest_length_text(d.inputs)
    assert readings.loc["DSR probability, PSR(SR0)", "value"] == f"{d.inputs['dsr_probability']:.3f}"
    # and the same actions under unit sizing beside the configured sizing
    sizing = _frames(at, "sizing")[0]
    assert list(sizing["trades"]) == [f"{want['trades']:,}", f"{want['unit']['trades']:,}"]
    assert any(gate_views.sizing_text(want["sizing"], "kelly") in c.value for c in at.caption)
    assert not [s for s in at.slider if s.key == "tau"]  # one tab drawn at a time
    at = _tab(at, "solutions_tab", "Logit adjustment (tau)")
    assert at.slider(key="tau").value == 1.0


def test_solution_page_shows_each_signal_apart_from_its_sizing_and_the_gate(demo_app, quick_demo):
    at = _page(demo_app, "app_pages/solutions.py")
    store, rid = quick_demo["store"], quick_demo["run_id"]
    base = store.option_results(rid).set_index("option").loc["baseline"]
    m = base["metrics"]
    signals = m["action_counts"]["SELL"] + m["action_counts"]["BUY"]
    assert not _frames(at, "sized to 0") and not _frames(at, "trades >= 30")  # tabs not open: not drawn
    _tab(at, "solutions_tab", "The signal apart from its sizing")
    sig = _frames(at, "sized to 0")[0].set_index("option").loc["Baseline (plain CE)"]
    # the collapsed baseline's few SELL/BUY signals, and what sizing made of them, show beside its trades
    assert sig["signals"] == signals == m["sizing"]["signals"] and sig["trades"] == base["trades"]
    assert sig["trades (unit)"] == m["unit"]["trades"]
    assert sig["sized to 0"] == f"Kelly sized {m['sizing']['sized_zero']:,} of {signals:,} signals to 0"
    assert _frames(at, "signals")[0].set_index("option").loc["Baseline (plain CE)", "signals"] == signals
    gate = _frames(_tab(at, "solutions_tab", "Every option against the gate"), "why not")[0]
    gate = gate.set_index("option").loc["Baseline (plain CE)"]
    assert gate["trades >= 30"] == f"FAIL {base['trades']}" and gate["passed"] == f"{base['hifa_passed']}/4"
    d = store.hifa(rid).set_index(["option", "criterion"]).loc[("baseline", "deflated_sharpe"), "inputs"]
    trl = d["min_track_record_bars"]  # null in the store where no length reaches the DSR bar
    assert gate["min track record"].startswith("never (SR <= SR0)" if trl is None else f"{trl:,.0f} bars")
    assert f"Trades (independent bets): {base['trades']} trades, below 30" in gate["why not"]


def test_hifa_page_shows_criteria_paths_and_null(demo_app, quick_demo):
    from flagcore.dashboard import gate_views

    at = _page(demo_app, "app_pages/hifa.py")
    store, rid = quick_demo["store"], quick_demo["run_id"]
    summary = store.run(rid)["summary"]
    assert _metrics(at)["Trials counted"] == str(summary["n_trials"])
    crit = _frames(at, "rule")[0]
    assert list(crit["criterion"]) == [
        "Trades (independent bets)",
        "CPCV mean Sharpe",
        "Deflated Sharpe",
        "Permutation p-value",
    ]
    h = store.hifa(rid)
    passed = h[h["option"] == "baseline"].set_index("criterion")["passed"]
    want = ["PASS" if passed[k] else "FAIL" for k in CRITERION_KEYS]
    assert list(crit["result"]) == want and want[0] == "FAIL"  # the baseline: too few trades
    trades = int(store.option_results(rid).set_index("option").loc["baseline", "trades"])
    assert crit["rule"].iloc[0] == "trades >= 30" and crit["value"].iloc[0] == str(trades)
    assert crit["why not"].iloc[0].startswith(f"{trades} trades, below 30")
    assert any(f"{trades} trades, below 30" in w.value.replace("\\", "") for w in at.warning)
    # both readings of the deflated Sharpe, and how far from passing, for the option picked
    at.selectbox(key="hifa_option").set_value("opt3_threshold").run()
    assert not at.exception
    d = gate_views.stored_criteria(store.hifa(rid), "opt3_threshold")["deflated_sharpe"]
    assert _metrics(at)["DSR probability"] == f"{d.inputs['dsr_probability']:.3f}"
    assert _metrics(at)["SR - SR0"] == f"{d.value:.2f}"
    readings = _frames(at, "reading")[0].set_index("reading")
    trl = d.inputs["min_track_record_bars"]
    want = "never (SR <= SR0)" if trl is None else f"{trl:,.0f} bars"
    assert readings.loc["Minimum track record", "value"].startswith(want)
    assert readings.loc["Minimum track record", "needs"].startswith(f"has {d.inputs['n_obs']:,} bars")
    gate = _frames(at, "min backtest")[0]
    assert len(gate) == len(store.option_results(rid))
    assert [c["layout"]["title"]["text"] for c in _charts(at)] == ["CPCV path Sharpe ratios"]
    titles = [c["layout"]["title"]["text"] for c in _charts(_tab(at, "hifa_tab", "Permutation test"))]
    assert len(titles) == 1 and titles[0].startswith("Permutation null (p = ")


def test_review_round_trip_stores_text_verbatim(quick_demo_copy, monkeypatch):
    quick_demo = quick_demo_copy  # its own copy of the store: the review lands there only
    at = _page(_app(quick_demo, monkeypatch), "app_pages/reviews.py")
    comment = "<script>alert('x')</script> looks collapsed"
    at.text_input[0].input("Rita Reviewer")
    at.radio[0].set_value("reject")
    at.text_area[0].input(comment)
    assert "Signing as" not in " ".join(m.value for m in at.markdown)  # no login, no header: typed
    at.button[0].click().run()
    assert not at.exception
    assert any("recorded" in s.value for s in at.success)
    texts = [t.value for t in at.text]
    assert "Reviewer: Rita Reviewer, typed name (unverified)" in texts and comment in texts
    df = quick_demo["store"].reviews(quick_demo["run_id"])
    assert (df["comment"] == comment).sum() == 1
    assert df.loc[df["comment"] == comment, "identity_source"].tolist() == ["typed"]
    at.text_input[0].input(" ")
    at.button[0].click().run()
    assert any("name is required" in e.value for e in at.error)


def test_evaluate_from_the_dashboard_uses_only_configured_folders(quick_demo, monkeypatch, tmp_path):
    from flagcore.dashboard.actions import browsable_files, inside_roots
    from flagcore.store.store import Store

    root = quick_demo["root"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("timestamp,close\n")
    (root / "escape").symlink_to(outside, target_is_directory=True)  # a link leading out of the root
    try:
        files = browsable_files([root])
        assert str((root / "test.parquet").resolve()) in files["datasets"]
        assert str((root / "models" / "ce").resolve()) in files["checkpoints"]
        assert not any("secret" in p for p in files["datasets"])
        assert not inside_roots(outside / "secret.csv", [root])
        assert not inside_roots(root / ".." / ".." / "store.duckdb", [root])
    finally:
        (root / "escape").unlink()
    import shutil

    copy = tmp_path / "copy.duckdb"  # a copy of the demo store, so other tests keep theirs
    shutil.copy(quick_demo["store"].path, copy)
    monkeypatch.setenv("FLAGCORE_STORE", str(copy))
    monkeypatch.setenv("FLAGCORE_FILES", str(root))
    before = len(Store(copy).list_runs())
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    at.selectbox(key="eval_ckpt").set_value(str((root / "models" / "ce").resolve()))
    at.selectbox(key="eval_data").set_value(str((root / "test.parquet").resolve()))
    at.button(key="eval_go").click().run()
    assert not at.exception
    assert any("written" in s.value for s in at.success), [e.value for e in at.error]
    assert len(Store(copy).list_runs()) == before + 1


def test_a_bad_file_in_the_dashboard_gives_one_line_and_writes_nothing(quick_demo, monkeypatch, tmp_path):
    import shutil

    import pandas as pd

    from flagcore.store.store import Store

    files = tmp_path / "files"
    files.mkdir()
    shutil.copytree(quick_demo["root"] / "models" / "ce", files / "ce")
    bad = pd.read_parquet(quick_demo["root"] / "test.parquet")
    bad.loc[5, "close"] = -1.0
    bad.to_csv(files / "bad.csv", index=False)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(quick_demo["store"].path, copy)
    monkeypatch.setenv("FLAGCORE_STORE", str(copy))
    monkeypatch.setenv("FLAGCORE_FILES", str(files))
    before = len(Store(copy).list_runs())
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="eval_data").set_value(str((files / "bad.csv").resolve()))
    at.button(key="eval_go").click().run()
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]  # shown escaped: Markdown renders it as itself
    assert len(errors) == 1 and "bad.csv" in errors[0] and "non-positive price -1.0 at row 6" in errors[0]
    assert "\n" not in errors[0]
    assert len(Store(copy).list_runs()) == before


def test_evaluate_files_refuses_paths_outside_the_roots(tmp_path):
    from flagcore.dashboard.actions import evaluate_files
    from flagcore.errors import FlagcoreError
    from flagcore.store.store import Store

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ce").mkdir(parents=True)
    outside.mkdir()
    (root / "ce" / "model.safetensors").write_bytes(b"")
    (root / "test.csv").write_text("timestamp,close\n")
    (outside / "test.csv").write_text("timestamp,close\n")
    store = Store(tmp_path / "store.duckdb")
    for ckpt, data, train in [
        (root / "ce", outside / "test.csv", None),
        (root / "ce", root / "test.csv", outside / "test.csv"),
        (root / "ce" / ".." / ".." / "outside", root / "test.csv", None),
    ]:
        with pytest.raises(FlagcoreError, match="only files under the configured folders"):
            evaluate_files(store, str(ckpt), str(data), None if train is None else str(train), roots=[root])
    assert not store.exists()  # refused before anything was read or written


def test_paths_appended_to_a_run_show_on_the_next_read(quick_demo, monkeypatch, tmp_path):
    """``flagcore validate --retrain`` appends paths to a run that a page has already shown (and cached)."""
    import shutil

    from flagcore.dashboard import state
    from flagcore.store.store import Store

    copy = tmp_path / "copy.duckdb"
    shutil.copy(quick_demo["store"].path, copy)
    monkeypatch.setenv("FLAGCORE_STORE", str(copy))
    rid = quick_demo["run_id"]
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(rid)
    at = _page(at.run(), "app_pages/hifa.py")

    def boxes() -> list[str]:
        return [
            t["name"]
            for c in _charts(at)
            if c["layout"]["title"]["text"] == "CPCV path Sharpe ratios"
            for t in c["data"]
        ]

    assert boxes() and not any(name.endswith("[retraining]") for name in boxes())
    before = len(state.cpcv_paths(str(copy.resolve()), rid))
    assert Store(copy).append_retraining(rid, "baseline", [0.1, 0.2, 0.3, 0.4, 0.5], {"paths": 5})
    at.run()  # the next rerun of the page, as after `flagcore validate --retrain` in another process
    assert not at.exception
    assert "Baseline (plain CE) [retraining]" in boxes()
    assert len(state.cpcv_paths(str(copy.resolve()), rid)) == before + 5
    assert state.diagnostics(str(copy.resolve()), rid, "baseline")["retrain_cpcv"] == {"paths": 5}


def test_root_cause_page_shows_the_stored_verdicts_and_a_live_ablation(quick_demo_copy, monkeypatch):
    from flagcore.dashboard import root_cause as rc
    from flagcore.pipeline.explain import explain_run
    from flagcore.vocab import ROOT_CAUSES

    store, rid = quick_demo_copy["store"], quick_demo_copy["run_id"]
    at = _page(_app(quick_demo_copy, monkeypatch), "app_pages/root_cause.py")
    assert at.title[0].value == "Root cause" and not at.warning
    assert any(f"flagcore explain --run {rid}" in i.value for i in at.info)  # none stored yet
    assert at.button(key="explain_go").label == "Run explain (500 bars)"
    explain_run(store, rid, bars=200, ig_windows=16)  # as `flagcore explain` from a terminal
    at.run()  # the next rerun reads the new store version
    assert not at.exception
    stored = store.root_cause(rid)
    verdicts = _frames(at, "verdict")[0]
    assert list(verdicts["cause"]) == list(ROOT_CAUSES.values())
    assert list(verdicts["verdict"]) == [rc.BADGES[v["verdict"]] for v in stored["verdicts"]]
    assert any(c.value.startswith(rc.computed_line(stored)) for c in at.caption)
    assert "computed " in rc.computed_line(stored) and " on 200 bars (seed 0)" in rc.computed_line(stored)
    # the live ablation loads the model only when asked for; then the padded inputs are preselected,
    # and filled with the training medians on explain's own sample they give explain's padding
    # counterfactual
    assert not [m for m in at.multiselect if m.key == "ablation_inputs"]
    at.button(key="ablation_load").click().run()
    assert not at.exception and not at.warning
    assert at.multiselect(key="ablation_inputs").value == list(range(49, 60))  # padding_49 .. padding_59
    at.number_input(key="ablation_bars").set_value(200)
    at.button(key="ablation_go").click().run()
    assert not at.exception
    table = _frames(at, "collapsed")[-1].set_index("")
    after = table.loc["after the fill (training medians)"]
    want = stored["measures"]["padding_median"]
    assert after["trades"] == want["trades"] and after["HOLD"] == want["action_shares"]["HOLD"]
    assert table.loc["as evaluated", "trades"] == stored["measures"]["test"]["trades"]


# ----------------------------------------------------------------------------- issue 17: who signed, status


def _second_run(demo: dict, **settings) -> int:
    """The demo's checkpoint evaluated again into ``demo``'s store with other settings: seconds, the
    inference is cached in the store. The first run is then superseded."""
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.pipeline.settings import EvaluateSettings

    root = demo["root"]
    res = evaluate(
        root / "models" / "ce",
        root / "test.parquet",
        store=demo["store"],
        train_data=root / "train.parquet",
        name="second",
        settings=EvaluateSettings(**settings),
    )
    return int(res["run_id"])


def _team_config(folder: Path, text: str) -> Path:
    cfg = folder / "team.toml"
    cfg.write_text(text)
    return cfg


def test_sign_off_as_the_logged_in_user(quick_demo_copy, monkeypatch):
    """OIDC: AppTest seeds st.user as a login would (``is_logged_in`` is there only with ``[auth]``)."""
    demo, rid = quick_demo_copy, quick_demo_copy["run_id"]
    monkeypatch.setenv("FLAGCORE_STORE", str(demo["store"].path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(rid)
    at.user = {"is_logged_in": True, "email": "ana@example.com", "name": "Ana"}
    at = _page(at.run(), "app_pages/reviews.py")
    assert not at.text_input  # no name field: the login signs
    assert any(m.value.replace("\\", "") == "Signing as **ana@example.com** (logged in)" for m in at.markdown)
    at.radio[0].set_value("approve")
    at.button[0].click().run()
    assert not at.exception and any("recorded" in s.value for s in at.success)
    assert "Reviewer: ana@example.com, logged in" in [t.value for t in at.text]
    last = demo["store"].reviews(rid).iloc[-1]
    assert (last["reviewer"], last["identity_source"]) == ("ana@example.com", "oidc")
    assert _metrics(at)["Approvals"] == "1/2"  # the status above the form counts the new review
    # [auth] configured but logged out: signing refused, with a login button, and no typed name
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and not at.text_input
    assert any("Log in to sign" in e.value for e in at.error)
    assert [b.label for b in at.button] == ["Log in"]


def test_sign_off_by_trusted_header_and_the_run_turns_approved(quick_demo_copy, monkeypatch, tmp_path):
    """The header path in-process (request headers faked: AppTest cannot send them; the browser suite
    sends real ones), under a one-approval policy; without the header the form refuses."""
    from flagcore.analysis.review_policy import load_review_policy
    from flagcore.dashboard import identity
    from flagcore.dashboard.report import render_report

    demo, rid = quick_demo_copy, quick_demo_copy["run_id"]
    cfg = _team_config(
        tmp_path, '[review]\napprovals_required = 1\n[identity]\ntrusted_header = "X-Forwarded-Email"\n'
    )
    monkeypatch.setenv("FLAGCORE_CONFIG", str(cfg))
    headers = {"x-forwarded-email": "bo@example.com"}
    monkeypatch.setattr(identity, "request_headers", lambda: headers)
    at = _page(_app(demo, monkeypatch), "app_pages/reviews.py")
    assert not at.text_input and _metrics(at)["Review status"] == "awaiting review"
    at.radio[0].set_value("approve")
    at.button[0].click().run()
    assert not at.exception
    assert _metrics(at)["Review status"] == "approved" and _metrics(at)["Approvals"] == "1/1"
    last = demo["store"].reviews(rid).iloc[-1]
    assert (last["reviewer"], last["identity_source"]) == ("bo@example.com", "header")
    assert demo["store"].run_status(rid, load_review_policy(cfg)).status == "approved"
    # the report says so, with where the reviewer's name came from
    md = render_report(demo["store"], rid, "md", policy=load_review_policy(cfg))
    assert "Review status: approved. 1 of 1 approvals: bo@example.com." in md.replace("\\", "")
    assert "| bo@example.com | trusted proxy header | approve |" in md.replace("\\", "")
    headers.clear()  # a request that did not come through the proxy
    at.run()
    assert not at.exception and not at.text_input
    assert not [b for b in at.button if b.label == "Sign off"]
    errors = [e.value.replace("\\", "") for e in at.error]
    assert len(errors) == 1 and "no X-Forwarded-Email header" in errors[0]


def test_compare_page_puts_two_runs_side_by_side(quick_demo_copy, monkeypatch):
    demo, first = quick_demo_copy, quick_demo_copy["run_id"]
    second = _second_run(demo, hold_threshold=0.9, author="Ann Author")
    monkeypatch.setenv("FLAGCORE_STORE", str(demo["store"].path))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(first)
    at.query_params["vs"] = str(second)
    at = _page(at.run(), "app_pages/compare.py")
    assert at.title[0].value == "Compare runs"
    # the first run is superseded: the same checkpoint on the same data with other settings
    assert (
        _metrics(at)[f"Run #{first}"] == "superseded" and _metrics(at)[f"Run #{second}"] == "awaiting review"
    )
    inputs = _frames(at, "differs")[0].set_index("input")
    assert inputs.loc["settings: hold_threshold", "differs"]
    assert (
        inputs.loc["settings: hold_threshold", f"#{first}"],
        inputs.loc["settings: hold_threshold", f"#{second}"],
    ) == (
        "0.95",
        "0.9",
    )
    assert (
        not inputs.loc["checkpoint sha256 (baseline)", "differs"]
        and inputs.loc["author", f"#{second}"] == "Ann Author"
    )
    opts = _frames(at, "trades change")[0].set_index("option")
    base = {r: demo["store"].option_results(r).set_index("option").loc["baseline"] for r in (first, second)}
    assert opts.loc["Baseline (plain CE)", f"trades #{first}"] == base[first]["trades"]
    assert opts.loc["Baseline (plain CE)", "trades change"] == base[second]["trades"] - base[first]["trades"]
    crit = _frames(at, "changed")[0]
    assert set(crit["criterion"]) == {
        "Trades (independent bets)",
        "CPCV mean Sharpe",
        "Deflated Sharpe",
        "Permutation p-value",
    }
    chart = next(c for c in _charts(at) if c["layout"]["title"]["text"].startswith("Equity curves, runs"))
    assert [t["name"] for t in chart["data"]] == [
        f"#{first} Baseline (plain CE)",
        f"#{second} Baseline (plain CE)",
    ]
    # the status page shows the second run's author
    at.switch_page("app_pages/status.py")
    at.query_params["run"] = str(second)
    at.session_state["run"] = second
    at.run()
    assert "Author: Ann Author" in [t.value for t in at.text]


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_store_shows_one_line_with_the_way_back(tmp_path, monkeypatch, damage):
    import os

    from flagcore.store.store import Store

    path = tmp_path / "store.duckdb"
    with Store(path).write() as con:  # a store's schema and a few blocks of rows: cheaper than the demo
        con.execute("CREATE TABLE filler AS SELECT range AS x, range::VARCHAR AS y FROM range(200000)")
    size = os.path.getsize(path)
    if damage == "truncated":
        os.truncate(path, 100_000)  # the headers stay, the blocks after them are gone
    else:
        path.write_bytes(b"\0" * size)
    monkeypatch.setenv("FLAGCORE_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert str(path) in errors[0] and "flagcore store restore" in errors[0]


def test_a_bad_team_config_shows_one_line(tmp_path, monkeypatch):
    cfg = _team_config(tmp_path, "[review]\napprovals_required = 0\n")
    monkeypatch.setenv("FLAGCORE_STORE", str(tmp_path / "empty.duckdb"))
    monkeypatch.setenv("FLAGCORE_CONFIG", str(cfg))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]
    assert len(errors) == 1 and str(cfg) in errors[0] and "approvals_required" in errors[0]


def test_histograms_are_binned_here_over_every_value():
    import numpy as np

    from flagcore.dashboard import plots

    x = np.random.default_rng(0).normal(size=(5000, 3))
    x[0, 0] = np.nan  # a value that cannot be binned is left out, not an error
    fig = plots.logit_distributions(x)
    assert [int(t.y.sum()) for t in fig.data] == [4999, 5000, 5000]
    assert all(len(t.x) == 80 and np.array_equal(t.x, fig.data[0].x) for t in fig.data)  # shared bins
    conf = plots.confidence_histogram(np.array([0.0, 0.5, 0.999, 1.0]))
    assert len(conf.data[0].x) == 60 and int(conf.data[0].y.sum()) == 4
    null = plots.permutation_null(x[:, 1], 0.5, 0.2)
    assert int(null.data[0].y.sum()) == 5000 and null.layout.shapes[0].x0 == 0.5


def test_a_sweep_charts_marker_moves_in_place():
    import pandas as pd

    from flagcore.dashboard import plots

    sweep = pd.DataFrame({"value": [0.5, 0.7, 0.9], "sharpe": [0.1, 0.3, -0.2], "trades": [90, 40, 10]})
    fig = plots.sweep_chart(sweep, 0.7, "HOLD threshold", "t")
    assert plots.mark_current(fig, 0.55) is fig
    assert (fig.layout.shapes[0].x0, fig.layout.shapes[0].x1) == (0.55, 0.55)
    assert [a.text for a in fig.layout.annotations] == ["current 0.55"]


# ----------------------------------------------------------------------------- issue 18: inference precision


def test_a_runs_inference_precision_and_agreement_show_wherever_the_run_does(quick_demo_copy, monkeypatch):
    import duckdb

    from flagcore.dashboard.report import report_blocks
    from flagcore.store.codec import from_json, to_json

    store, rid = quick_demo_copy["store"], quick_demo_copy["run_id"]
    at = _app(quick_demo_copy, monkeypatch)  # an old run: no precision stored, so fp32, no agreement
    assert "Inference precision: fp32" in [c.value for c in at.sidebar.caption]
    assert not any(", fp32" in o for o in at.sidebar.selectbox[0].options)
    assert "Inference precision: fp32." in [c.value for c in at.caption]
    agreement = {"bars_sampled": 256, "actions_equal_share": 0.9961, "max_abs_logit_diff": 0.0312}
    agreement["sample"] = "256 bars evenly spaced"
    con = duckdb.connect(str(store.path))
    try:  # the run as an int8 evaluation stores it (helper A2's fields)
        settings, summary = con.execute(
            "SELECT settings, summary FROM runs WHERE run_id = ?", [rid]
        ).fetchone()
        settings, summary = from_json(settings), from_json(summary)
        settings["precision"] = "int8"
        summary["inference"] = {"baseline": {"precision": "int8", "agreement": agreement}}
        con.execute(
            "UPDATE runs SET settings = ?, summary = ? WHERE run_id = ?",
            [to_json(settings), to_json(summary), rid],
        )
    finally:
        con.close()
    at = _app(quick_demo_copy, monkeypatch)  # a new visit: the store's new version is read
    assert "Inference precision: int8" in [c.value for c in at.sidebar.caption]
    assert any(o.startswith(f"#{rid} ") and ", int8, " in o for o in at.sidebar.selectbox[0].options)
    line = (
        "Inference precision: int8. Agreement with fp32, baseline: the actions equal fp32's on 99.6% of "
        "256 sampled bars, largest logit difference 0.031 (256 bars evenly spaced)."
    )
    assert line in [c.value for c in at.caption]  # the status page
    at = _page(at, "app_pages/model_health.py")
    assert line in [c.value for c in at.caption]
    assert ("p", line) in report_blocks(store, rid)  # the report's model section, in either format


# ----------------------------------------------------------------------------- issue 18: first visits


def test_the_launcher_warms_every_page_import_and_refuses_a_missing_app(tmp_path, monkeypatch):
    import sys

    from flagcore.dashboard import serve

    took = serve.warm()
    assert set(serve.WARM_MODULES) | {
        "first figures and table",
        "streamlit's and plotly's page-time imports",
    } == set(took)
    assert all(m in sys.modules for m in serve.WARM_MODULES)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="app.py: no such app file"):
        serve.main(["--server.port", "1"])


def _count_connects(monkeypatch) -> list[int]:
    """How many DuckDB files are opened from now on (``duckdb.connect`` calls), as a one-item list."""
    import duckdb

    real, count = duckdb.connect, [0]

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting)
    return count


def test_reads_in_a_reading_block_share_one_connection_and_writes_still_go_through(tmp_path, monkeypatch):
    import numpy as np

    from flagcore.store.connection import shared_read_files, unshared_reads
    from flagcore.store.store import Store

    store = Store(tmp_path / "s.duckdb")
    store.ensure()
    store.list_runs()  # the schema check of this file version, done once per process
    count = _count_connects(monkeypatch)
    with store.reading():
        store.list_runs()
        store.reviews()
        assert store.cached_logits("m", "d", "s") is None
        assert count[0] == 1 and shared_read_files() == [str(store.path.resolve())]
        with unshared_reads():  # a write from the same thread: DuckDB refuses it beside the open reader
            store.put_inference("m", "d", "s", np.zeros((2, 3), np.float32), np.zeros(2, bool))
        assert len(store.cached_logits("m", "d", "s")) == 2  # the block reads on, through a new connection
    assert shared_read_files() == []
    before = count[0]
    store.list_runs()
    store.reviews()
    assert count[0] - before >= 2  # outside a block: one connection per read, as before


def test_every_page_run_opens_at_most_one_connection(demo_app, monkeypatch):
    import streamlit as st

    pages = sorted(p.stem for p in (Path(APP).parent / "app_pages").glob("*.py") if p.stem != "welcome")
    assert len(pages) == 8
    for name in pages:
        st.cache_data.clear()  # every read misses the caches
        count = _count_connects(monkeypatch)
        _page(demo_app, f"app_pages/{name}.py")
        assert count[0] <= 1, (name, count[0])


def test_the_launcher_fills_the_caches_the_pages_read(quick_demo_copy, monkeypatch):
    from flagcore.dashboard import serve

    monkeypatch.setenv("FLAGCORE_STORE", str(quick_demo_copy["store"].path))
    newest = int(quick_demo_copy["store"].list_runs()["run_id"].iloc[0])
    assert set(serve.warm_store()) == {"the newest run's cached reads"}
    count = _count_connects(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = str(newest)
    at.run()
    # every page a first visitor opens reads from the filled caches; Reviews reads its history fresh
    for page in ("status", "model_health", "logits", "solutions", "hifa", "root_cause"):
        _page(at, f"app_pages/{page}.py")
        assert count[0] == 0, page
    monkeypatch.setenv("FLAGCORE_WARM_STORE", "0")
    assert serve.warm_store() == {}


def test_the_launcher_warms_nothing_from_a_missing_or_damaged_store(tmp_path, monkeypatch, capsys):
    from flagcore.dashboard import serve

    path = tmp_path / "store.duckdb"
    monkeypatch.setenv("FLAGCORE_STORE", str(path))
    assert serve.warm_store() == {} and not path.exists()  # looking does not create a store
    path.write_bytes(b"\0" * 8192)
    assert serve.warm_store() == {}  # the server still starts; the pages show the way back
    assert "the store was not read ahead of the first visit" in capsys.readouterr().err
