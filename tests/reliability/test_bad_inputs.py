"""Bad inputs through `flagcore evaluate` (and `train` where it applies): exit 1, one line that names
the problem and where it is, no traceback, and the store logically unchanged."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from flagcore.cli.command import main
from flagcore.store.schema import RUN_TABLES
from flagcore.store.store import Store

pytestmark = pytest.mark.slow  # every case runs against a copy of the quick demo's store


def _digest(store: Store) -> str:
    """A logical fingerprint of the store: every table's rows, in order."""
    h = hashlib.sha256()
    with store.read() as con:  # the test reads the tables raw: the store has no such query
        for t in RUN_TABLES + ("runs", "datasets", "models", "reviews", "inference_cache"):
            df = con.execute(f"SELECT * FROM {t}").df()
            h.update(t.encode() + pd.util.hash_pandas_object(df.astype(str), index=False).values.tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def env(quick_demo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    store = tmp / "store.duckdb"
    shutil.copy(quick_demo["store"].path, store)
    root = quick_demo["root"]
    frame = pd.read_parquet(root / "test.parquet")
    return {
        "store": Store(store),
        "root": root,
        "tmp": tmp,
        "frame": frame,
        "feature": [c for c in frame.columns if c not in ("timestamp", "close", "label")][0],
    }


def _evaluate(env, data, *extra, checkpoint=None) -> tuple[int, str]:
    return main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint or env["root"] / "models" / "ce"),
            "--data",
            str(data),
            "--store",
            str(env["store"].path),
            "--quiet",
            *extra,
        ]
    )


def _write_csv(env, name, df, **kw):
    p = env["tmp"] / name
    df.to_csv(p, index=False, **kw)
    return p


def _frame_cases(env) -> dict:
    f, col = env["frame"], env["feature"]
    n = len(f)
    return {
        "missing timestamp": (f.drop(columns="timestamp"), "missing column 'timestamp'"),
        "missing close": (f.drop(columns="close"), "missing column 'close'"),
        "NaN in a feature": (f.assign(**{col: f[col].mask(f.index == 300)}), f"column '{col}' has NaN"),
        "inf in a feature": (
            f.assign(**{col: f[col].where(f.index != 301, np.inf)}),
            "infinite value at row 302",
        ),
        "string in a feature": (
            f.assign(**{col: f[col].astype(object).where(f.index != 5, "n/a")}),
            "non-numeric value 'n/a' at row 6",
        ),
        "string in close": (
            f.assign(close=f["close"].astype(object).where(f.index != 7, "ten")),
            "column 'close' has a non-numeric value 'ten' at row 8",
        ),
        "unsorted timestamps": (f.iloc[[0, 2, 1] + list(range(3, n))], "timestamps are not increasing"),
        "duplicated timestamps": (
            f.assign(timestamp=f["timestamp"].where(f.index != 9, f["timestamp"][8])),
            "duplicated timestamp",
        ),
        "time zones that collide in UTC": (
            f.assign(
                timestamp=f["timestamp"]
                .dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
                .where(
                    f.index != 10,
                    (f["timestamp"][9] + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
                )
            ),
            "duplicated timestamp",
        ),
        "label outside the three classes": (
            f.assign(label=f["label"].astype(object).where(f.index != 12, 7)),
            "unknown label '7' at row 13",
        ),
        "61 features": (
            f.assign(**{f"extra_{j}": 0.0 for j in range(61 - (f.shape[1] - 3))}),
            "61 feature columns, more than the model's state_dim 60",
        ),
        "shorter than the window": (f.iloc[:20], "20 bars, fewer than the model's window of 32"),
        "too few evaluated bars": (f.iloc[:40], "40 evaluated bars; the backtest and its validation need"),
    }


CASE_NAMES = [
    "missing timestamp",
    "missing close",
    "NaN in a feature",
    "inf in a feature",
    "string in a feature",
    "string in close",
    "unsorted timestamps",
    "duplicated timestamps",
    "time zones that collide in UTC",
    "label outside the three classes",
    "61 features",
    "shorter than the window",
    "too few evaluated bars",
]


def _assert_one_line(capsys, where, message):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("flagcore: error: ") and str(where) in err and message in err, err


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_dataset(env, capsys, case):
    before = _digest(env["store"])
    df, message = _frame_cases(env)[case]
    path = _write_csv(env, f"{case.replace(' ', '_')}.csv", df)
    assert _evaluate(env, path) == 1
    _assert_one_line(capsys, path, message)
    assert _digest(env["store"]) == before


@pytest.mark.parametrize(
    "case, content, message",
    [
        ("missing", None, "no such file"),
        ("empty", b"", "the file is empty"),
        ("header only", b"timestamp,close,label\n", "has a header but no rows"),
        ("binary", bytes(range(128, 256)) * 8, "not UTF-8"),
        ("binary with ASCII", bytes(range(256)) * 4, "not a well-formed CSV"),
    ],
)
def test_unreadable_files(env, capsys, case, content, message):
    before = _digest(env["store"])
    path = env["tmp"] / f"{case.replace(' ', '_')}.csv"
    if content is not None:
        path.write_bytes(content)
    assert _evaluate(env, path) == 1
    _assert_one_line(capsys, path, message)
    assert _digest(env["store"]) == before


def test_wrong_delimiter_encoding_and_truncation(env, capsys):
    before = _digest(env["store"])
    semi = _write_csv(env, "semicolon.csv", env["frame"], sep=";")
    assert _evaluate(env, semi) == 1
    _assert_one_line(capsys, semi, "missing column 'timestamp'")
    latin = env["tmp"] / "latin1.csv"
    df = env["frame"].assign(
        label=env["frame"]["label"].astype(object).where(env["frame"].index != 3, "HÖLD")
    )
    latin.write_bytes(df.to_csv(index=False).encode("latin-1"))
    assert _evaluate(env, latin) == 1
    _assert_one_line(capsys, latin, "not UTF-8")
    whole = (env["root"] / "test.parquet").read_bytes()
    cut = env["tmp"] / "truncated.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    assert _evaluate(env, cut) == 1
    _assert_one_line(capsys, cut, "not a readable Parquet file")
    assert _digest(env["store"]) == before


def test_overlapping_train_and_test(env, capsys):
    before = _digest(env["store"])
    test = env["root"] / "test.parquet"
    assert _evaluate(env, test, "--train", str(test)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "overlap" in err
    assert _digest(env["store"]) == before


def test_partner_with_other_timestamps(env, capsys):
    before = _digest(env["store"])
    ts = pd.date_range("2019-01-01", periods=500, freq="h", tz="UTC")
    partner = _write_csv(env, "partner.csv", pd.DataFrame({"timestamp": ts, "action": "HOLD"}))
    assert _evaluate(env, env["root"] / "test.parquet", "--partner", str(partner)) == 1
    _assert_one_line(capsys, partner, "no prediction for bar")
    assert _digest(env["store"]) == before


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/flagcore-pwned",))


def _checkpoint_cases(env) -> dict:
    from safetensors.torch import load_file, save_file

    tmp = env["tmp"]
    src = env["root"] / "models" / "ce" / "model.safetensors"
    raw = src.read_bytes()
    cases = {}
    p = tmp / "corrupt.safetensors"
    p.write_bytes(raw[:8] + b"{not json" + raw[17:])
    cases["corrupt"] = (p, "")
    p = tmp / "truncated.safetensors"
    p.write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = (p, "")
    sd = load_file(src)
    p = tmp / "missing_key.pt"
    torch.save({k: v for k, v in sd.items() if "action_head.weight" not in k}, p)
    cases["missing keys"] = (p, "")
    p = tmp / "extra_key.pt"
    torch.save({**sd, "surprise.weight": torch.zeros(3)}, p)
    cases["extra keys"] = (p, "")
    p = tmp / "other_arch.pt"
    torch.save({"layer.weight": torch.zeros(4, 4)}, p)
    cases["another architecture"] = (p, "")
    p = tmp / "evil.pt"
    torch.save({"model": _Boom()}, p)
    cases["pickle that runs code"] = (p, "")
    p = tmp / "garbage.safetensors"
    p.write_bytes(b"\x00" * 64)
    cases["garbage"] = (p, "")
    del save_file
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "truncated",
        "missing keys",
        "extra keys",
        "another architecture",
        "pickle that runs code",
        "garbage",
    ],
)
def test_bad_checkpoint(env, capsys, case):
    import os

    before = _digest(env["store"])
    if os.path.exists("/tmp/flagcore-pwned"):
        os.remove("/tmp/flagcore-pwned")
    path, _ = _checkpoint_cases(env)[case]
    assert _evaluate(env, env["root"] / "test.parquet", checkpoint=path) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(path) in err, err
    assert not os.path.exists("/tmp/flagcore-pwned")  # the payload never ran
    assert _digest(env["store"]) == before


def test_training_on_one_class_is_refused(env, capsys):
    train = pd.read_parquet(env["root"] / "train.parquet").assign(label="HOLD")
    path = _write_csv(env, "one_class.csv", train)
    assert main(["train", "--data", str(path), "--out", str(env["tmp"] / "m"), "--quiet"]) == 1
    _assert_one_line(capsys, path, "every training label is HOLD")
