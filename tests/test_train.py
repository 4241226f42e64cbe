"""Training on a small version of the demo: the collapse, its fixes, and no look-ahead."""

import json

import numpy as np
import pytest
import torch

from flagcore.cli.command import main
from flagcore.errors import FlagcoreError
from flagcore.models.checkpoint import read_checkpoint
from flagcore.models.flag_trader import PRESETS
from flagcore.models.inference import predict
from flagcore.training.loop import TrainConfig, train_model
from flagcore.training.losses import focal_loss
from flagcore.training.walk_forward import walk_forward

# One epoch of 4,096 windows is enough for each model to show what it must (measured with one torch
# thread: plain CE 99.7% HOLD against the 95% asserted; every remedy and further loss 23-36% SELL and
# BUY against 10% and 5%); validation on 512 windows spread over its period, not all of them.
FAST = dict(epochs=1, windows_per_epoch=4096, patience=1, val_windows=512)
# The leak needs about 12,000 training windows to show: inner/last loss 0.65 with these (0.56 with
# the 18,432 of three epochs of 6,144; 0.83 with 8,192, which fails), against the 0.8 asserted.
LONGER = dict(epochs=2, windows_per_epoch=6144, patience=2, val_windows=512)


def _test_shares(model, test):
    e = test.eval_index
    a = predict(model, test.features).action[e:]
    return np.bincount(a, minlength=3) / len(a)


@pytest.fixture(scope="module")
def trained(small_demo):
    out = {}
    for loss in ("ce", "weighted", "focal"):
        out[loss] = train_model(small_demo["train"], PRESETS["demo"], TrainConfig(loss=loss, **FAST))
    return out


def test_plain_cross_entropy_collapses_to_hold(trained, small_demo):
    shares = _test_shares(trained["ce"].model, small_demo["test"])
    assert shares[1] >= 0.95, shares


@pytest.mark.parametrize("loss", ["weighted", "focal"])
def test_remedies_predict_buy_and_sell(trained, small_demo, loss):
    shares = _test_shares(trained[loss].model, small_demo["test"])
    assert shares[0] >= 0.10 and shares[2] >= 0.10, shares


def test_history_and_provenance(trained, small_demo):
    res = trained["weighted"]
    assert 1 <= len(res.history) <= 3 and res.provenance["best_epoch"] >= 1
    row = res.history[0]
    assert set(row["val_pred_shares"]) == {"SELL", "HOLD", "BUY"}
    assert abs(sum(row["val_pred_shares"].values()) - 1) < 1e-9
    p = res.provenance
    assert p["data_hash"] == small_demo["train"].content_hash and p["loss"] == "weighted"
    assert p["loss_position"] == "last" and p["train_config"]["seed"] == 0
    w = np.array(p["class_weights"])
    shares = np.array([p["train_label_shares"][c] for c in ("SELL", "HOLD", "BUY")])
    np.testing.assert_allclose(w * shares, (w * shares)[0], rtol=1e-5)  # inverse frequency
    assert w[1] < w[0] and w[1] < w[2]


def test_training_is_deterministic(small_demo):
    train = small_demo["train"].slice(0, 3000)  # a few months: the loop, not the data, is on trial
    cfg = TrainConfig(loss="weighted", epochs=1, windows_per_epoch=512)
    a = train_model(train, PRESETS["demo"], cfg).model.state_dict()
    b = train_model(train, PRESETS["demo"], cfg).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("loss", ["logit_adjusted", "oversample", "multitask"])
def test_further_losses_train_and_trade(small_demo, loss):
    res = train_model(small_demo["train"], PRESETS["demo"], TrainConfig(loss=loss, **FAST))
    shares = _test_shares(res.model, small_demo["test"])
    assert shares[0] > 0.05 and shares[2] > 0.05, shares
    if loss == "multitask":
        assert res.model.get_base_model().return_head is not None


def test_focal_loss_formula():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, -1)
    want = (
        -(0.5 * (1 - p[0, 0]) ** 2 * torch.log(p[0, 0]) + 2.0 * (1 - p[1, 2]) ** 2 * torch.log(p[1, 2])) / 2
    )
    got = focal_loss(logits, y, gamma=2.0, alpha=torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(got, want)
    # gamma 0 and alpha 1 is plain cross-entropy
    torch.testing.assert_close(
        focal_loss(logits, y, 0.0, torch.ones(3)), torch.nn.functional.cross_entropy(logits, y)
    )


def test_train_command_writes_checkpoint_with_provenance(small_demo, tmp_path, capsys):
    from conftest import dataset_rows

    out = tmp_path / "seed_weights"
    # the training period's last 3,000 bars (its metadata kept): the command, not the data, on trial
    data = dataset_rows(small_demo["train_path"], tmp_path / "train_tail.parquet", -3000)
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--test",
            str(small_demo["test_path"]),
            "--loss",
            "weighted",
            "--class-weights",
            "seed",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["provenance"]["class_weights"] == [1.0, 0.5, 1.0]
    assert result["test"]["bars"] == 1500
    _, info = read_checkpoint(out)
    assert info.meta.provenance["class_weights"] == [1.0, 0.5, 1.0]
    assert len(info.meta.feature_names) == 60
    assert json.loads((out / "train_log.json").read_text())["checkpoint"].endswith("model.safetensors")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loss", "weighted", "--class-weights", "1,2"], "three numbers"),
        (["--loss", "focal", "--focal-gamma", "-1"], "focal_gamma must be >= 0"),
        (["--epochs", "0"], "epochs must be a positive integer"),
    ],
)
def test_train_command_rejects_bad_settings(small_demo, tmp_path, capsys, argv, message):
    rc = main(["train", "--data", str(small_demo["train_path"]), "--out", str(tmp_path / "x"), *argv])
    assert rc == 1 and message in capsys.readouterr().err


def test_train_refuses_overlapping_test_period(small_demo, tmp_path, capsys):
    rc = main(
        [
            "train",
            "--data",
            str(small_demo["train_path"]),
            "--test",
            str(small_demo["train_path"]),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 1 and "overlaps" in capsys.readouterr().err


def test_walk_forward_uses_only_resolved_labels(trained, small_demo):
    test = small_demo["test"]
    model = trained["weighted"].model
    every, h, E = 500, test.label_horizon, test.eval_index
    logits, final, log = walk_forward(model, test, every=every, recent=600, epochs=1)
    assert logits.shape == (test.n_bars - E, 3) and len(log) == 2
    # block 1 is the starting model's prediction
    np.testing.assert_allclose(logits[:every], predict(model, test.features).logits[E : E + every], atol=1e-5)
    # labels that resolve only after block 2 starts cannot change blocks 1 and 2
    changed = test.slice(0, test.n_bars)
    changed.labels = test.labels.copy()
    changed.labels[E + every - h :] = 0  # labels unknown at the first fine-tune
    other, _, _ = walk_forward(model, changed, every=every, recent=600, epochs=1)
    np.testing.assert_array_equal(other[: 2 * every], logits[: 2 * every])
    assert not np.array_equal(other[2 * every :], logits[2 * every :])
    # and the model passed in is untouched
    np.testing.assert_allclose(predict(model, test.features).logits[E : E + every], logits[:every], atol=1e-5)


def test_walk_forward_step_range(trained, small_demo):
    with pytest.raises(FlagcoreError, match=r"\[500, 1000\]"):
        walk_forward(trained["ce"].model, small_demo["test"], every=100)


def test_reviewed_per_position_loss_leaks_the_future(small_demo):
    """reviewed-model.md's defect: with the loss at every position and no mask, inner positions
    see the bars that define their labels, so they look far better than the last position."""
    train = small_demo["train"]
    res = train_model(train, PRESETS["demo"], TrainConfig(loss="ce", loss_position="all", **LONGER))
    assert res.provenance["loss_position"] == "all"
    W = PRESETS["demo"].window
    ends = np.arange(len(train.labels) - 2000, len(train.labels) - 30)
    inner_bar = ends - (W - 1 - W // 2)  # the bar at position W // 2 of each window
    ends, inner_bar = ends[train.labels[inner_bar] >= 0], inner_bar[train.labels[inner_bar] >= 0]
    x = torch.as_tensor(train.features)[torch.as_tensor(ends[:, None] - np.arange(W - 1, -1, -1))]
    with torch.inference_mode():
        logits = res.model(x)  # (B, W, 3)
    ce = torch.nn.functional.cross_entropy
    inner = ce(logits[:, W // 2], torch.as_tensor(train.labels[inner_bar], dtype=torch.long))
    last = ce(logits[:, -1], torch.as_tensor(train.labels[ends], dtype=torch.long))
    assert inner < 0.8 * last, (inner, last)


def test_diagnose_command_shows_the_seed_picture_for_plain_ce(trained, small_demo, tmp_path, capsys):
    from flagcore.models.checkpoint import save_checkpoint

    ckpt = save_checkpoint(trained["ce"].model, tmp_path / "ce.safetensors")
    rc = main(
        [
            "diagnose",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(small_demo["test_path"]),
            "--train",
            str(small_demo["train_path"]),
            "--json",
        ]
    )
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bars"] == 1500 and r["collapse"]["collapsed"] and r["collapse"]["dominant_class"] == "HOLD"
    assert r["logits"]["HOLD"]["mean"] > max(r["logits"]["SELL"]["mean"], r["logits"]["BUY"]["mean"])
    m = r["metrics"]
    assert abs(m["accuracy"] - m["majority_baseline"]) < 0.02 and m["majority_class"] == "HOLD"
    shift = {row["name"]: row for row in r["feature_shift"]}
    flow = [row for row in r["feature_shift"] if row["padding"]]
    assert len(flow) == 11 and all(row["test_all_zero"] and row["shift"] == "major" for row in flow)
    assert shift["hour_sin"]["shift"] == "stable"


def test_retraining_cpcv_in_worker_processes(small_demo):
    """Every bar on every path is predicted by a model trained without it; workers change nothing."""
    from flagcore.analysis.cpcv import cpcv_splits
    from flagcore.training.cpcv import retrain_cpcv

    train = small_demo["train"]
    ds = train.slice(0, 2400)
    cfg = TrainConfig(loss="weighted", epochs=1, windows_per_epoch=256, patience=1)
    calls = []
    res = retrain_cpcv(  # 3 groups, 2 tested per split: 3 splits on 2 workers, 2 paths
        ds,
        PRESETS["demo"],
        cfg,
        n_groups=3,
        n_test_groups=2,
        embargo=5,
        workers=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert res.mode == "retraining" and res.paths.shape == (2, 3) and len(res.split_provenance) == 3
    assert calls[-1] == (3, 3)
    assert res.path_logits.shape == (2, 2400, 3) and np.isfinite(res.path_logits).all()
    # split 0 retrained here, in-process, gives the same logits as the worker did
    sp = cpcv_splits(2400, 3, 2, purge=ds.label_horizon, embargo=5)[0]
    direct = train_model(ds, PRESETS["demo"], cfg, train_index=sp.train)
    want = predict(direct.model, ds.features).logits[res.groups[sp.test_groups[0]]]
    p = int(np.flatnonzero(res.paths[:, sp.test_groups[0]] == 0)[0])
    np.testing.assert_allclose(res.path_logits[p, res.groups[sp.test_groups[0]]], want, atol=1e-5)
    # training never touched the split's test bars or their purge zones
    assert direct.provenance["train_windows"] + direct.provenance["val_windows"] <= sp.train.size
