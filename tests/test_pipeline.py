"""The evaluate pipeline and the quick demo, through the store and the CLI."""

import json

import numpy as np
import pytest

from flagcore.cli.command import main
from flagcore.pipeline.evaluate import evaluate
from flagcore.pipeline.settings import EvaluateSettings
from flagcore.store.schema import RUN_TABLES
from flagcore.store.store import Store


def _counts(store: Store) -> dict:
    with store.read() as con:
        return {
            t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
            for t in RUN_TABLES + ("runs", "datasets", "models", "reviews", "inference_cache")
        }


def test_quick_demo_reproduces_the_collapse(quick_demo, capsys):
    assert main(["runs", "--json", "--store", str(quick_demo["store"].path)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    run = next(r for r in runs if r["run_id"] == quick_demo["run_id"])
    base = run["options"]["baseline"]
    assert run["collapse"]["collapsed"] is True
    assert base["action_shares"]["HOLD"] >= 0.95
    # its few SELL/BUY bars are sized like any option's (the HOLD threshold at 0 gives the same
    # figures), but they are too few independent bets for the gate
    assert set(base["hifa"]) == {"min_trades", "cpcv_mean_sharpe", "deflated_sharpe", "permutation_p"}
    assert base["trades"] < 30 and base["hifa"]["min_trades"]["passed"] is False
    assert base["hifa"]["min_trades"]["value"] == base["trades"]
    trading = [k for k, o in run["options"].items() if o["trades"] > 0 and k != "opt5_labels"]
    assert len(trading) >= 3, trading
    # the labels as a signal are the upper bound: they beat every model
    best_model = max(o["total_return"] for k, o in run["options"].items() if k != "opt5_labels")
    assert run["options"]["opt5_labels"]["total_return"] > best_model
    for o in run["options"].values():
        assert abs(sum(o["action_shares"].values()) - 1) < 1e-9


def test_stored_run_is_complete_and_consistent(quick_demo):
    s, rid = quick_demo["store"], quick_demo["run_id"]
    opts = s.option_results(rid)
    summary = s.run(rid)["summary"]
    n = summary["evaluated_bars"]
    for option in opts["option"]:
        p = s.predictions(rid, option)
        assert len(p) == n
        # equity is the compounded net return, bar by bar
        r = p["net_return"].to_numpy()[:-1]
        assert np.allclose(p["equity"].to_numpy()[1:], np.cumprod(1 + r))
        row = opts[opts["option"] == option].iloc[0]
        assert np.isclose(p["equity"].iloc[-1] - 1, row["total_return"])
        assert np.isclose((p["action"] == 1).mean(), row["share_hold"])
    # the trials the deflated Sharpe counted: options (labels excepted) and every other swept value
    sweeps = s.sweeps(rid)
    n_opts = int((opts["option"] != "opt5_labels").sum())
    assert summary["trials_tried"] == n_opts + len(sweeps) - 2
    assert (
        1 < summary["n_trials"] < summary["trials_tried"]
    )  # repeats (e.g. thresholds that flip nothing) count once
    h = s.hifa(rid)
    assert (
        h.loc[h["criterion"] == "deflated_sharpe", "inputs"].map(lambda d: d["n_trials"])
        == summary["n_trials"]
    ).all()
    # the payoff stretch is the training period's last year, counted in the data's own bars
    train_rows = s.dataset(s.run(rid)["train_dataset_id"])["bars"]
    year = round(summary["periods_per_year"])
    assert len(s.bars(rid, "train")) == summary["payoff_period"]["bars"] == min(train_rows, year)
    paths = s.cpcv_paths(rid)
    assert set(paths["mode"]) == {"post-hoc"}
    assert (paths.groupby("option").size() == 5).all()  # N=6, k=2: five paths
    null = s.permutation_null(rid, "opt2_focal")
    assert null["null_sharpes"].shape == (10000,) and 0 < null["p_value"] <= 1
    d = s.diagnostics(rid)
    assert d["collapse"]["collapsed"] and sum(r["padding"] for r in d["feature_shift"]) == 11


def test_second_evaluate_reuses_cached_inference(quick_demo_copy):
    quick_demo = quick_demo_copy  # its own copy of the store: the new run lands there only
    s, root = quick_demo["store"], quick_demo["root"]
    before = _counts(s)
    fast = EvaluateSettings(criteria={**EvaluateSettings().resolved_criteria(), "n_permutations": 200})
    res = evaluate(
        root / "models" / "ce",
        root / "test.parquet",
        store=s,
        train_data=root / "train.parquet",
        retrained=[str(root / "models" / "weighted")],
        name="again",
        settings=fast,
    )
    assert res["inference"] == {"computed": 0, "cached": 4}
    assert not res["reused"] and res["run_id"] > quick_demo["run_id"]
    after = _counts(s)
    assert after["runs"] == before["runs"] + 1
    assert after["inference_cache"] == before["inference_cache"]  # nothing new was inferred
    opts = s.option_results(res["run_id"])
    assert "opt1_class_weights" in set(opts["option"]) and "cgdt" not in set(opts["option"])


@pytest.mark.parametrize("table", ["run_models", "option_results", "predictions", "sweeps"])
def test_a_failure_mid_write_leaves_the_store_as_before(quick_demo_copy, table, monkeypatch):
    from flagcore.pipeline import evaluate as pipeline

    s, root = quick_demo_copy["store"], quick_demo_copy["root"]
    captured = {}
    real = pipeline.write_run
    monkeypatch.setattr(pipeline, "write_run", lambda store, run, **kw: captured.setdefault("run", run) and 0)
    fast = EvaluateSettings(criteria={**EvaluateSettings().resolved_criteria(), "n_permutations": 100})
    evaluate(root / "models" / "ce", root / "test.parquet", store=s, settings=fast)
    before = _counts(s)
    with pytest.raises(RuntimeError, match="injected"):
        real(s, captured["run"], fail_after=table)
    assert _counts(s) == before


def test_demo_is_idempotent(quick_demo):
    from flagcore.pipeline.demo import build_demo

    res = build_demo(quick_demo["store"], quick=True, root=quick_demo["root"].parent)
    assert res["run_id"] == quick_demo["run_id"]
    assert set(res["steps"].values()) == {"reused"}


def test_report_and_review_through_the_cli(quick_demo_copy, tmp_path, capsys):
    quick_demo = quick_demo_copy  # its own copy of the store: the review lands there only
    st, rid = str(quick_demo["store"].path), str(quick_demo["run_id"])
    comment = "<script>alert('x')</script> | '; DROP TABLE reviews; --"
    assert (
        main(
            [
                "review",
                "--store",
                st,
                "--run",
                rid,
                "--reviewer",
                "Ann",
                "--verdict",
                "needs-work",
                "--comment",
                comment,
            ]
        )
        == 0
    )
    out = tmp_path / "r.html"
    assert main(["report", "--store", st, "--run", rid, "--format", "html", "--out", str(out)]) == 0
    html = out.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "Collapse diagnosis" in html and "HIFA validation" in html
    capsys.readouterr()
    assert main(["report", "--store", st, "--run", rid]) == 0
    md = capsys.readouterr().out
    assert "| Baseline \\(plain CE\\) |" in md and "COLLAPSED" in md and "needs-work" in md
    assert "\\| '; DROP TABLE reviews" in md  # table cells escape the pipe
    df = quick_demo["store"].reviews(int(rid))
    assert df["comment"].iloc[-1] == comment


def test_validate_prints_the_criteria_table(quick_demo, tmp_path, capsys):
    st = str(quick_demo["store"].path)
    assert main(["validate", "--store", st, "--run", str(quick_demo["run_id"])]) == 0
    out = capsys.readouterr().out
    assert "CPCV mode: post-hoc" in out and "Baseline (plain CE)" in out and "FAIL" in out
    lenient = tmp_path / "c.toml"
    lenient.write_text(
        "[hifa]\nmin_trades = 0\ncpcv_mean_sharpe_min = -100\ndeflated_sharpe_min = -100\n"
        "dsr_probability_min = 0\npermutation_p_max = 1.01\n"
    )
    assert (
        main(
            [
                "validate",
                "--store",
                st,
                "--run",
                str(quick_demo["run_id"]),
                "--criteria",
                str(lenient),
                "--json",
            ]
        )
        == 0
    )
    table = json.loads(capsys.readouterr().out)["criteria"]
    assert all(o["passed_all"] for o in table["options"])
    strict = tmp_path / "s.toml"
    strict.write_text("[hifa]\nn_permutations = 50\n")
    assert main(["validate", "--store", st, "--criteria", str(strict)]) == 1
    assert "evaluate again" in capsys.readouterr().err


def test_evaluate_errors_are_one_line(quick_demo, tmp_path, capsys):
    root, st = quick_demo["root"], str(tmp_path / "s.duckdb")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(root / "models" / "ce"),
                "--data",
                str(tmp_path / "none.parquet"),
                "--store",
                st,
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.parquet" in err
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(root / "models" / "ce"),
                "--data",
                str(root / "test.parquet"),
                "--retrained",
                "bogus=" + str(root / "models" / "focal"),
                "--store",
                st,
                "--quiet",
            ]
        )
        == 1
    )
    assert "unknown role 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "s.duckdb").exists() or Store(st).list_runs().empty


def test_evaluate_in_int8_prints_its_agreement_with_fp32(quick_demo, tmp_path, capsys):
    root, st = quick_demo["root"], str(tmp_path / "s.duckdb")
    args = ["evaluate", "--checkpoint", str(root / "models" / "ce"), "--data", str(root / "test.parquet")]
    assert main([*args, "--store", st, "--precision", "int8", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Inference precision: int8."))
    share = float(line.split("fp32's on ")[1].split("%")[0]) / 100
    rid = int(Store(st).list_runs()["run_id"].max())
    a = Store(st).run(rid)["summary"]["inference"]["baseline"]["agreement"]
    assert share == pytest.approx(a["actions_equal_share"], abs=5e-4) and "256 sampled bars" in line
    assert main([*args, "--store", st, "--quiet"]) == 0  # fp32: nothing to compare
    assert "Inference precision" not in capsys.readouterr().out


def test_write_run_needs_a_baseline():
    from flagcore.errors import FlagcoreError
    from flagcore.pipeline.run import compute_run

    with pytest.raises(FlagcoreError, match="baseline"):
        compute_run({}, None)


def test_validate_retrain_adds_a_labelled_cpcv_mode(quick_demo, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy.duckdb"  # retraining appends to the run: work on a copy
    shutil.copy(quick_demo["store"].path, copy)
    root = quick_demo["root"]
    # the smallest CPCV that still has paths: 3 groups, 2 of them tested per split; 3 splits to
    # retrain, each group predicted twice: 2 paths (the demo's run has 6 and 2: 15 splits)
    crit = {**EvaluateSettings().resolved_criteria(), "cpcv_groups": 3, "n_permutations": 100}
    rid = evaluate(
        root / "models" / "ce",
        root / "test.parquet",
        store=Store(copy),
        train_data=root / "train.parquet",
        settings=EvaluateSettings(criteria=crit),
    )["run_id"]
    args = [
        "validate",
        "--store",
        str(copy),
        "--run",
        str(rid),
        "--retrain",
        "--options",
        "baseline",
        "--quick-retrain",
        "--workers",  # in this process: no pool to start (test_train.py retrains in worker processes)
        "1",
        "--quiet",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    info = out["retrain"]["baseline"]
    assert info["splits"] == 3 and info["paths"] == 2 and info["quick"] is True
    paths = Store(copy).cpcv_paths(rid)
    retrained = paths[(paths["option"] == "baseline") & (paths["mode"] == "retraining")]
    assert len(retrained) == 2 and np.isfinite(retrained["sharpe"]).all()
    assert np.isclose(retrained["sharpe"].mean(), info["mean_sharpe"])
    base = next(o for o in out["criteria"]["options"] if o["option"] == "baseline")
    assert base["retrain_paths"] == 2 and out["criteria"]["cpcv_mode"] == "post-hoc and retraining"
    assert main(args) == 0  # a second call does not retrain or append again
    assert json.loads(capsys.readouterr().out)["retrain"]["baseline"] == {"skipped": "already in the store"}
    assert len(Store(copy).cpcv_paths(rid)) == len(paths)
    assert main(["validate", "--store", str(copy), "--retrain", "--options", "cgdt", "--quiet"]) == 1
    assert "no retrainable checkpoint" in capsys.readouterr().err
