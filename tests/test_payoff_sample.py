"""The payoff ratio from a sample of the training stretch: blocks, its standard error, the run."""

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL, make_frame

from flagcore.analysis.backtest import (
    BacktestConfig,
    block_payoff_ratio,
    sample_blocks,
    signal_payoff_ratio,
    simple_returns,
)
from flagcore.errors import FlagcoreError
from flagcore.pipeline.settings import EvaluateSettings
from flagcore.vocab import BUY, HOLD, SELL

KEEP = BacktestConfig(hold="keep")


def _market(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fat-tailed closes and actions with a small edge, HOLD on 60% of the bars."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=n - 1) * 0.006 * np.repeat(rng.uniform(0.5, 2.0, n // 500 + 1), 500)[: n - 1]
    close = 100 * np.cumprod(np.concatenate([[1.0], 1 + r]))
    direction = np.where(rng.random(n - 1) < 0.55, np.sign(r), -np.sign(r))  # right 55% of the time
    acts = np.where(direction > 0, BUY, SELL)
    acts = np.append(np.where(rng.random(n - 1) < 0.6, HOLD, acts), HOLD)
    return acts, close


def _sampled(acts, close, starts, block):
    rows = np.concatenate([np.arange(s, s + block) for s in starts])
    return acts[rows], close[rows], np.arange(len(starts)) * block


def test_blocks_are_stratified_seeded_and_checked():
    starts = sample_blocks(8766, 250, 8, seed=3)
    edges = (np.arange(9) * 8766) // 8
    assert ((starts >= edges[:-1]) & (starts + 250 <= edges[1:])).all()  # one block per stratum
    assert (np.diff(starts) >= 250).all()
    assert np.array_equal(starts, sample_blocks(8766, 250, 8, seed=3))
    assert not np.array_equal(starts, sample_blocks(8766, 250, 8, seed=4))
    with pytest.raises(FlagcoreError, match="do not fit"):
        sample_blocks(1000, 250, 5)
    with pytest.raises(FlagcoreError, match="2 blocks"):
        sample_blocks(1000, 250, 1)


def test_sampled_payoff_lies_within_three_standard_errors_of_the_whole_stretch():
    inside2 = 0
    for seed in range(40):
        acts, close = _market(8766, seed)
        whole = signal_payoff_ratio(acts, simple_returns(close), KEEP)
        a, c, bs = _sampled(acts, close, sample_blocks(8766, 250, 8, seed), 250)
        est = block_payoff_ratio(a, c, bs, KEEP)
        assert est.se is not None and 0 < est.se < 0.5 * est.ratio
        assert abs(est.ratio - whole) < 3 * est.se, (seed, est, whole)
        inside2 += abs(est.ratio - whole) < 2 * est.se
    assert inside2 >= 32  # about 95% of samples within 2 SE: the error is neither far too small nor huge


def test_one_block_is_the_whole_stretch_ratio():
    acts, close = _market(600, 0)
    est = block_payoff_ratio(acts, close, [0], KEEP)
    assert est.ratio == pytest.approx(signal_payoff_ratio(acts, simple_returns(close), KEEP), rel=1e-12)
    assert est.se is None and est.blocks == 1
    flat = block_payoff_ratio(np.full(10, HOLD), close[:10], [0, 5])
    assert (flat.ratio, flat.se, flat.in_market) == (1.0, None, 0)
    with pytest.raises(FlagcoreError, match="block starts"):
        block_payoff_ratio(acts, close, [1, 300])
    with pytest.raises(FlagcoreError, match="block starts"):
        block_payoff_ratio(acts, close, [0, 599])


def test_settings_check_and_record_the_sample():
    s = EvaluateSettings(payoff_sample=2000)
    assert s.payoff_blocks == 8 and s.to_dict()["payoff_sample"] == 2000
    assert EvaluateSettings().to_dict()["payoff_sample"] is None
    assert s.to_dict() != EvaluateSettings().to_dict()  # part of the request key
    assert EvaluateSettings(precision="int8").to_dict()["precision"] == "int8"
    for bad, msg in [
        ({"payoff_sample": 300}, ">= 500"),
        ({"payoff_sample": 1000, "payoff_block": 1}, "payoff_block"),
        ({"precision": "fp8"}, "precision must be one of"),
    ]:
        with pytest.raises(FlagcoreError, match=msg):
            EvaluateSettings(**bad)


# ----------------------------------------------------------------------------- the sample and the run


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from flagcore.data.dataset import load_dataset, write_dataset

    root = tmp_path_factory.mktemp("payoff")
    train = write_dataset(make_frame(3000, seed=1), root / "train.parquet")
    test = write_dataset(make_frame(400, seed=2, start="2025-06-01"), root / "test.parquet")
    return load_dataset(train, state_dim=60), load_dataset(test, state_dim=60)


def test_the_sample_is_its_blocks_with_their_history(datasets):
    from flagcore.pipeline.payoff_sample import payoff_stretch, recent, sample_stretch

    train, _ = datasets
    w = SMALL.window
    sm = sample_stretch(train, 3000, w - 1, 100, 8, seed=0)
    ds, e = sm.dataset, sm.dataset.eval_index
    assert sm.bars == 800 and list(sm.block_starts) == list(range(0, 800, 100))
    assert list(ds.timestamps[e + sm.rows[sm.block_starts]]) == sm.starts
    # every sampled bar's window is the real bars before it, contiguous in the training data
    pos = train.timestamps.get_indexer(ds.timestamps)
    for r in e + sm.rows:
        assert r >= w - 1 and pos[r] - pos[r - w + 1] == w - 1
    assert ds.n_bars < 800 + 8 * w  # blocks and their histories only
    # its own cache key: another content hash than the whole data's and another seed's sample
    other = sample_stretch(train, 3000, w - 1, 100, 8, seed=1).dataset
    assert len({ds.content_hash, other.content_hash, train.content_hash}) == 3
    whole, none = payoff_stretch(train, 3000, w - 1, EvaluateSettings(payoff_sample=3000, payoff_block=100))
    assert none is None and whole.n_bars == recent(train, 3000, w - 1).n_bars  # nothing left to sample


def _logits(ds) -> np.ndarray:
    """Logits as a function of each bar's features: the same bar gets the same logits in any dataset."""
    return ds.features[:, :3].astype(np.float64) * np.array([1.0, 0.2, 1.0])


def _run(datasets, settings, sample=None, train=None):
    from flagcore.pipeline.inference_cache import ModelLogits
    from flagcore.pipeline.run import compute_run

    full, test = datasets
    train = train if train is not None else full
    m = ModelLogits(
        "baseline", "m", "flag-trader", "m", {}, _logits(test), _logits(train)[train.eval_index :]
    )
    return compute_run({"baseline": m}, test, train, settings=settings, full_train=full, sample=sample)


def test_a_run_on_the_sample_reads_its_blocks_and_records_them(datasets):
    from flagcore.pipeline.payoff_sample import sample_stretch

    full, _ = datasets
    crit = {**EvaluateSettings().resolved_criteria(), "n_permutations": 50}
    s0 = EvaluateSettings(criteria=crit)
    whole = _run(datasets, s0)
    base = whole.options["baseline"]
    # no sample: today's payoff ratio, from the whole stretch
    acts = _logits(full).argmax(1)
    assert base["backtest"]["payoff_ratio"] == signal_payoff_ratio(acts, simple_returns(full.close))
    assert base["payoff_se"] is None and base["payoff_source"] == "training period"
    assert whole.summary["payoff_period"]["sample"] is None

    s = EvaluateSettings(criteria=crit, payoff_sample=800, payoff_block=100)
    sm = sample_stretch(full, 3000, SMALL.window - 1, 100, 8, s.permutation_seed)
    run = _run(datasets, s, sm, sm.dataset)
    o = run.options["baseline"]
    rows = sm.dataset.eval_index + sm.rows
    est = block_payoff_ratio(_logits(sm.dataset)[rows].argmax(1), sm.dataset.close[rows], sm.block_starts)
    assert o["backtest"]["payoff_ratio"] == est.ratio and o["payoff_se"] == est.se > 0
    assert o["payoff_source"] == "training period sample: 8 blocks of 100 bars"
    assert run.summary["payoff_se"]["baseline"] == est.se
    period = run.summary["payoff_period"]
    assert (
        period["bars"] == 800
        and period["sample"]["blocks"] == 8
        and "feature shift" in period["sample"]["restricted"]
    )
    assert len(run.train_bars) == 800 and len(run.baseline_train_logits) == 800
    assert pd.Index(run.train_bars["timestamp"]).equals(
        pd.Index(full.timestamps[full.timestamps.isin(sm.dataset.timestamps[rows])])
    )
    assert run.settings["payoff_sample"] == 800 and run.request_key != whole.request_key
    assert run.summary["label_prior"] == whole.summary["label_prior"]  # the whole training data's
    assert run.summary["inference"] == {"baseline": {"precision": "fp32", "agreement": None}}


# ----------------------------------------------------------------------------- the command and progress


def test_evaluate_options_reach_the_settings():
    from flagcore.cli.command import build_parser
    from flagcore.cli.runs import settings

    base = ["evaluate", "--checkpoint", "c", "--data", "d"]
    s = settings(build_parser().parse_args([*base, "--payoff-sample", "2000", "--precision", "int8"]))
    assert (s.payoff_sample, s.payoff_blocks, s.precision) == (2000, 8, "int8")
    s = settings(build_parser().parse_args(base))
    assert (s.payoff_sample, s.precision) == (None, "fp32")


def test_progress_says_the_time_left_of_each_stage():
    from flagcore.dashboard.actions import with_time_left
    from flagcore.pipeline.settings import duration_text, progress_text, time_left

    assert time_left(0.4, 60.0) == pytest.approx(90.0) and time_left(1.0, 5.0) == 0.0
    assert time_left(0.0, 60.0) is None and time_left(0.5, 0.0) is None
    assert [duration_text(x) for x in (0.2, 44.6, 61, 3599, 3600 * 3)] == [
        "about 1 s",
        "about 45 s",
        "about 1 min",
        "about 1 h",
        "about 3 h",
    ]
    assert progress_text("inference", 0.43, 60.0) == "inference: 43% - about 1 min 20 s left"
    assert progress_text("writing", 0.0, 3.0) == "writing: 0%" and progress_text("x", 1.0, 9.0) == "x: 100%"
    now, shown = [0.0], []
    report = with_time_left(lambda text, f: shown.append((text, f)), clock=lambda: now[0])
    report("inference", 0.0)
    now[0] = 30.0
    report("inference", 0.25)
    report("validation", 0.0)  # a new stage starts its own clock
    now[0] = 40.0
    report("validation", 0.5)
    assert shown == [
        ("inference: 0%", 0.0),
        ("inference: 25% - about 1 min 30 s left", 0.25),
        ("validation: 0%", 0.0),
        ("validation: 50% - about 10 s left", 0.5),
    ]


def test_evaluate_caches_the_sample_under_its_own_key(tmp_path):
    from flagcore.cli.runs import runs_json
    from flagcore.data.dataset import load_dataset, write_dataset
    from flagcore.models.checkpoint import save_checkpoint
    from flagcore.models.flag_trader import build_model
    from flagcore.pipeline.evaluate import evaluate
    from flagcore.store.store import Store

    train = write_dataset(make_frame(1000, seed=1), tmp_path / "train.parquet")
    test = write_dataset(make_frame(400, seed=2, start="2025-06-01"), tmp_path / "test.parquet")
    ckpt = save_checkpoint(build_model(SMALL), tmp_path / "ck.safetensors", provenance={"loss": "ce"})
    store = Store(tmp_path / "s.duckdb")
    crit = {**EvaluateSettings().resolved_criteria(), "n_permutations": 20}
    s = EvaluateSettings(criteria=crit, payoff_sample=400, payoff_block=50)
    res = evaluate(ckpt, test, store=store, train_data=train, settings=s)
    with store.read() as con:
        entries = con.execute(
            "SELECT dataset_id, settings, count(*) FROM inference_cache GROUP BY ALL"
        ).fetchall()
    sampled = [e for e in entries if "sample:8x50@" in e[1]]
    assert len(entries) == 2 and len(sampled) == 1
    assert sampled[0][0] != load_dataset(train).content_hash  # the sample's own content hash
    assert 400 < sampled[0][2] < 400 + 8 * SMALL.window  # the blocks and their history only
    # the model infers the blocks' bars only: each as predict infers it in the whole sample, the
    # history bars (read as windows, never as logits) left NaN
    from flagcore.models.checkpoint import load_checkpoint
    from flagcore.models.inference import predict
    from flagcore.pipeline.evaluate import evaluation_inputs
    from flagcore.vocab import LOGIT_COLUMNS

    _, _, _, sm = evaluation_inputs(test, train, SMALL, s)
    assert sm is not None and sm.to_dict()["inferred_bars"] == 400
    with store.read() as con:
        cached = (
            con.execute("SELECT * FROM inference_cache WHERE settings = ? ORDER BY bar", [sampled[0][1]])
            .df()[list(LOGIT_COLUMNS)]
            .to_numpy()
        )
    read = sm.dataset.eval_index + sm.rows
    assert np.isfinite(cached[read]).all() and np.isnan(np.delete(cached, read, axis=0)).all()
    whole = predict(load_checkpoint(ckpt), sm.dataset.features).logits[read]
    np.testing.assert_allclose(cached[read], whole, rtol=1e-5, atol=1e-5)
    run = runs_json(store)[0]
    assert (run["payoff_sample"], run["precision"]) == ("training period sample: 8 blocks of 50 bars", "fp32")
    rid = res["run_id"]
    assert len(store.bars(rid, "train")) == 400 and len(store.predictions(rid, "baseline", "train")) == 400
    again = evaluate(ckpt, test, store=store, train_data=train, settings=s, reuse=True)
    assert again["reused"] and again["inference"] == {"computed": 0, "cached": 2}
    # the slider recomputes from the stored sample as the run did: each block held on its own
    from flagcore.analysis.remedies import compare_options
    from flagcore.dashboard.live import load_live_inputs

    inp = load_live_inputs(store, rid)
    assert inp.train is not None and inp.train.block_starts is not None
    stored = store.option_results(rid).set_index("option")["metrics"]
    for option in ("baseline", "opt3_threshold"):
        if option not in stored:
            continue
        live = compare_options(inp.test, inp.train, cfg=inp.cfg, options=[option])[option]
        assert live["backtest"]["payoff_ratio"] == pytest.approx(stored[option]["payoff_ratio"], rel=1e-9)
        assert live["payoff_se"] == pytest.approx(stored[option]["payoff_se"], rel=1e-9, nan_ok=True)
