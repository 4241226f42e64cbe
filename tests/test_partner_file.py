import numpy as np
import pandas as pd
import pytest

from flagcore.data.predictions import load_predictions
from flagcore.errors import FlagcoreError


def _ts(n, start="2025-01-01"):
    return pd.date_range(start, periods=n, freq="h", tz="UTC")


def test_logit_file_and_action_file(tmp_path):
    df = pd.DataFrame(
        {
            "timestamp": _ts(4),
            "logit_sell": [1.0, 0, 0, 0],
            "logit_hold": [0, 1.0, 0, 0],
            "logit_buy": [0, 0, 1.0, 2.0],
        }
    )
    df.to_csv(tmp_path / "l.csv", index=False)
    p = load_predictions(tmp_path / "l.csv")
    assert p.action.tolist() == [0, 1, 2, 2] and p.logits.shape == (4, 3)
    pd.DataFrame({"timestamp": _ts(3), "action": ["BUY", "-1", "hold"]}).to_csv(
        tmp_path / "a.csv", index=False
    )
    a = load_predictions(tmp_path / "a.csv")
    assert a.action.tolist() == [2, 0, 1] and a.logits is None


def test_align_selects_rows_and_refuses_missing_bars(tmp_path):
    pd.DataFrame({"timestamp": _ts(10), "action": ["BUY"] * 5 + ["SELL"] * 5}).to_csv(
        tmp_path / "a.csv", index=False
    )
    p = load_predictions(tmp_path / "a.csv")
    assert p.align(_ts(3, "2025-01-01 04:00")).action.tolist() == [2, 0, 0]
    with pytest.raises(
        FlagcoreError, match=r"no prediction for bar 2025-01-01T10:00:00\+00:00 \(2 of 4 bars missing"
    ):
        p.align(_ts(4, "2025-01-01 08:00"))


@pytest.mark.parametrize(
    "frame, message",
    [
        (
            pd.DataFrame({"timestamp": _ts(3), "logit_sell": [0.0] * 3, "logit_hold": [0.0] * 3}),
            "has logit_sell, logit_hold but not 'logit_buy'",
        ),
        (
            pd.DataFrame({"timestamp": _ts(3), "action": ["BUY", "MAYBE", "SELL"]}),
            "column 'action' has unknown label 'MAYBE' at row 2",
        ),
        (
            pd.DataFrame({"timestamp": _ts(3), "action": ["BUY", "", "SELL"]}),
            "column 'action' is empty at row 2",
        ),
        (
            pd.DataFrame(
                {
                    "timestamp": _ts(3),
                    "logit_sell": [0.0, np.nan, 0],
                    "logit_hold": [0.0] * 3,
                    "logit_buy": [0.0] * 3,
                }
            ),
            "column 'logit_sell' has NaN (missing) at row 2",
        ),
    ],
)
def test_bad_partner_files(tmp_path, frame, message):
    frame.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(FlagcoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_predictions(tmp_path / "p.csv")
