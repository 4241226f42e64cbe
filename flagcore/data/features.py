"""L1 features: 49 market features from OHLCV, and 11 order-flow features where a feed exists.

Every feature at bar t uses bars up to and including t only (rolling windows end at t, EWMs
run forward), and each is scaled to order one: returns are standardised by the 168-bar realised
volatility, volatilities are logs of annualised figures, oscillators are centred and scaled.
The first ``WARMUP`` bars, whose longest look-back is incomplete, are dropped.

Input: a table with timestamp, open, high, low, close, volume (any bar frequency) and optionally
the order-flow columns of ``market.py``. Volatilities are annualised with the market's calendar
(``data.calendar``: 24/7, 24/5, exchange sessions, daily 365 or 252, ...), never with the sample's
span, so a bar's features do not depend on how many bars follow it; ``periods_per_year`` overrides it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from flagcore.data.calendar import Calendar, resolve_calendar
from flagcore.errors import FlagcoreError
from flagcore.vocab import CLASS_NAMES

OHLCV = ("open", "high", "low", "close", "volume")
WARMUP = 168 + 24  # the longest look-back (168 bars) plus room for the statistics built on it
EPS = 1e-12

# name -> one-line description; the order is the model-input order
MARKET_FEATURES: dict[str, str] = {
    "ret_1": "log return over 1 bar / (168-bar realised vol)",
    "ret_2": "log return over 2 bars / (vol * sqrt 2)",
    "ret_4": "log return over 4 bars / (vol * sqrt 4)",
    "ret_8": "log return over 8 bars / (vol * sqrt 8)",
    "ret_12": "log return over 12 bars / (vol * sqrt 12)",
    "ret_24": "log return over 24 bars / (vol * sqrt 24)",
    "ret_48": "log return over 48 bars / (vol * sqrt 48)",
    "ret_96": "log return over 96 bars / (vol * sqrt 96)",
    "ret_168": "log return over 168 bars / (vol * sqrt 168)",
    "rvol_12": "log of annualised realised volatility over 12 bars",
    "rvol_24": "log of annualised realised volatility over 24 bars",
    "rvol_72": "log of annualised realised volatility over 72 bars",
    "rvol_168": "log of annualised realised volatility over 168 bars",
    "vol_ratio_12_72": "log(rvol 12 / rvol 72): volatility expanding (>0) or contracting",
    "vol_ratio_24_168": "log(rvol 24 / rvol 168)",
    "parkinson_24": "log of annualised Parkinson (high-low) volatility over 24 bars",
    "garman_klass_24": "log of annualised Garman-Klass (OHLC) volatility over 24 bars",
    "vol_of_vol_72": "std over 72 bars of the 12-bar log volatility",
    "ret_skew_72": "skewness of 1-bar returns over 72 bars",
    "ret_kurt_168": "excess kurtosis of 1-bar returns over 168 bars, log(1+x) scaled",
    "rsi_6": "RSI over 6 bars (Wilder), (RSI - 50) / 50",
    "rsi_14": "RSI over 14 bars (Wilder), (RSI - 50) / 50",
    "rsi_24": "RSI over 24 bars (Wilder), (RSI - 50) / 50",
    "macd": "MACD line (EMA 12 - EMA 26) / (close * 168-bar vol)",
    "macd_signal": "MACD signal line (EMA 9 of MACD), same scale",
    "macd_hist": "MACD histogram (MACD - signal), same scale",
    "sma_dist_24": "log(close / SMA 24) / (vol * sqrt 24)",
    "sma_dist_72": "log(close / SMA 72) / (vol * sqrt 72)",
    "sma_dist_168": "log(close / SMA 168) / (vol * sqrt 168)",
    "ema_cross_12_48": "log(EMA 12 / EMA 48) / (vol * sqrt 48)",
    "ema_cross_24_168": "log(EMA 24 / EMA 168) / (vol * sqrt 168)",
    "bb_pos_24": "position in the 24-bar Bollinger band: (close - SMA) / (2 std)",
    "bb_width_24": "log of the 24-bar Bollinger band width (4 std / SMA) over the 168-bar vol",
    "stoch_k_14": "stochastic %K over 14 bars, centred: (%K - 50) / 50",
    "stoch_d_14": "3-bar mean of %K, centred",
    "cci_20": "commodity channel index over 20 bars / 100",
    "atr_14": "log(14-bar average true range / (close * vol))",
    "range_1": "log((high - low) / (close * vol)) of the bar",
    "body_1": "(close - open) / (high - low): the bar's body as a share of its range",
    "upper_wick_1": "(high - max(open, close)) / (high - low)",
    "lower_wick_1": "(min(open, close) - low) / (high - low)",
    "range_pos_24": "(close - 24-bar low) / (24-bar high - 24-bar low), centred",
    "drawdown_168": "log(close / 168-bar high) / (vol * sqrt 168)",
    "volume_z_24": "z-score of log volume against the past 24 bars",
    "volume_z_168": "z-score of log volume against the past 168 bars",
    "volume_ratio_6_48": "log(mean volume 6 bars / mean volume 48 bars)",
    "obv_slope_24": "24-bar change of on-balance volume / 24-bar total volume",
    "hour_sin": "sin(2 pi hour / 24): time of day",
    "hour_cos": "cos(2 pi hour / 24)",
}

ORDER_FLOW_FEATURES: dict[str, str] = {
    "flow_imbalance_1": "taker imbalance (buy - sell) / volume of the bar",
    "flow_imbalance_6": "EWM (span 6) of the taker imbalance",
    "flow_imbalance_24": "EWM (span 24) of the taker imbalance",
    "flow_delta_24": "24-bar cumulative (buy - sell) / 24-bar volume",
    "flow_imbalance_z_168": "z-score of the taker imbalance against the past 168 bars",
    "trade_count_z_24": "z-score of log trade count against the past 24 bars",
    "trade_size_z_168": "z-score of log mean trade size against the past 168 bars",
    "depth_imbalance_1": "(bid depth - ask depth) / (bid depth + ask depth)",
    "depth_imbalance_12": "EWM (span 12) of the depth imbalance",
    "spread_z_168": "z-score of log spread against the past 168 bars",
    "spread_change_6": "log(spread / spread 6 bars ago)",
}
ORDER_FLOW_INPUTS = ("buy_volume", "sell_volume", "trade_count", "bid_depth", "ask_depth", "spread_bps")


def _rsi(close: pd.Series, n: int) -> pd.Series:
    d = close.diff()
    up = d.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()
    down = (-d).clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()
    return 100 - 100 / (1 + up / (down + EPS))


def _z(x: pd.Series, n: int) -> pd.Series:
    r = x.rolling(n)
    return (x - r.mean()) / (r.std() + EPS)


def market_features(bars: pd.DataFrame, ppy: float) -> pd.DataFrame:
    """The 49 market features for every bar (NaN where a look-back is incomplete).

    ``ppy`` is the bars per year of the market's calendar (``features_calendar``) that annualises
    the volatilities; a value taken from the sample's span would make a bar's features depend on the
    bars after it.
    """
    o, h, l, c, v = (bars[k].astype(float) for k in OHLCV)  # noqa: E741
    lc = np.log(c)
    r1 = lc.diff()
    vol = r1.rolling(168).std() + EPS  # per-bar scale for standardising returns
    ann = np.sqrt(ppy)
    f: dict[str, pd.Series] = {}
    for k in (1, 2, 4, 8, 12, 24, 48, 96, 168):
        f[f"ret_{k}"] = lc.diff(k) / (vol * np.sqrt(k))
    rv = {n: r1.rolling(n).std() + EPS for n in (12, 24, 72, 168)}
    for n in (12, 24, 72, 168):
        f[f"rvol_{n}"] = np.log(rv[n] * ann)
    f["vol_ratio_12_72"] = np.log(rv[12] / rv[72])
    f["vol_ratio_24_168"] = np.log(rv[24] / rv[168])
    hl = np.log(h / l)
    f["parkinson_24"] = np.log(np.sqrt((hl**2).rolling(24).mean() / (4 * np.log(2))) * ann + EPS)
    gk = 0.5 * hl**2 - (2 * np.log(2) - 1) * np.log(c / o) ** 2
    f["garman_klass_24"] = np.log(np.sqrt(gk.rolling(24).mean().clip(lower=0)) * ann + EPS)
    f["vol_of_vol_72"] = np.log(rv[12]).rolling(72).std()
    f["ret_skew_72"] = r1.rolling(72).skew()
    f["ret_kurt_168"] = np.log1p(r1.rolling(168).kurt().clip(lower=-0.99))
    for n in (6, 14, 24):
        f[f"rsi_{n}"] = (_rsi(c, n) - 50) / 50
    macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    signal = macd.ewm(span=9, adjust=False).mean()
    scale = c * vol
    f["macd"], f["macd_signal"], f["macd_hist"] = macd / scale, signal / scale, (macd - signal) / scale
    for n in (24, 72, 168):
        f[f"sma_dist_{n}"] = np.log(c / c.rolling(n).mean()) / (vol * np.sqrt(n))
    ema = {n: c.ewm(span=n, adjust=False).mean() for n in (12, 24, 48, 168)}
    f["ema_cross_12_48"] = np.log(ema[12] / ema[48]) / (vol * np.sqrt(48))
    f["ema_cross_24_168"] = np.log(ema[24] / ema[168]) / (vol * np.sqrt(168))
    sma24, sd24 = c.rolling(24).mean(), c.rolling(24).std()
    f["bb_pos_24"] = (c - sma24) / (2 * sd24 + EPS)
    f["bb_width_24"] = np.log(4 * sd24 / (sma24 * vol) + EPS)
    lo14, hi14 = l.rolling(14).min(), h.rolling(14).max()
    k = 100 * (c - lo14) / (hi14 - lo14 + EPS)
    f["stoch_k_14"] = (k - 50) / 50
    f["stoch_d_14"] = (k.rolling(3).mean() - 50) / 50
    tp = (h + l + c) / 3
    mad = tp.rolling(20).apply(lambda x: np.abs(x - x.mean()).mean(), raw=True)
    f["cci_20"] = (tp - tp.rolling(20).mean()) / (0.015 * mad + EPS) / 100
    tr = pd.concat([h - l, (h - c.shift()).abs(), (l - c.shift()).abs()], axis=1).max(axis=1)
    f["atr_14"] = np.log(tr.ewm(alpha=1 / 14, adjust=False).mean() / (c * vol) + EPS)
    rng = (h - l) + EPS
    f["range_1"] = np.log(rng / (c * vol))
    f["body_1"] = (c - o) / rng
    f["upper_wick_1"] = (h - np.maximum(o, c)) / rng
    f["lower_wick_1"] = (np.minimum(o, c) - l) / rng
    lo24, hi24 = l.rolling(24).min(), h.rolling(24).max()
    f["range_pos_24"] = 2 * (c - lo24) / (hi24 - lo24 + EPS) - 1
    f["drawdown_168"] = np.log(c / h.rolling(168).max()) / (vol * np.sqrt(168))
    lv = np.log(v + 1)
    f["volume_z_24"] = _z(lv, 24)
    f["volume_z_168"] = _z(lv, 168)
    f["volume_ratio_6_48"] = np.log((v.rolling(6).mean() + EPS) / (v.rolling(48).mean() + EPS))
    obv = (np.sign(c.diff()).fillna(0) * v).cumsum()
    f["obv_slope_24"] = obv.diff(24) / (v.rolling(24).sum() + EPS)
    hour = pd.DatetimeIndex(bars["timestamp"]).hour.to_numpy()
    f["hour_sin"] = pd.Series(np.sin(2 * np.pi * hour / 24), index=bars.index)
    f["hour_cos"] = pd.Series(np.cos(2 * np.pi * hour / 24), index=bars.index)
    out = pd.DataFrame(f, index=bars.index)[list(MARKET_FEATURES)]
    return out.astype(np.float32)


def order_flow_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The 11 order-flow features (NaN wherever the feed is missing)."""
    buy, sell, n, bid, ask, spread = (bars[k].astype(float) for k in ORDER_FLOW_INPUTS)
    vol = buy + sell + EPS
    imb = (buy - sell) / vol
    f = {
        "flow_imbalance_1": imb,
        "flow_imbalance_6": imb.ewm(span=6, adjust=False, ignore_na=False).mean(),
        "flow_imbalance_24": imb.ewm(span=24, adjust=False, ignore_na=False).mean(),
        "flow_delta_24": (buy - sell).rolling(24).sum() / vol.rolling(24).sum(),
        "flow_imbalance_z_168": _z(imb, 168),
        "trade_count_z_24": _z(np.log(n + 1), 24),
        "trade_size_z_168": _z(np.log(vol / (n + 1)), 168),
        "depth_imbalance_1": (bid - ask) / (bid + ask + EPS),
    }
    f["depth_imbalance_12"] = f["depth_imbalance_1"].ewm(span=12, adjust=False).mean()
    ls = np.log(spread + EPS)
    f["spread_z_168"] = _z(ls, 168)
    f["spread_change_6"] = ls.diff(6)
    out = pd.DataFrame(f, index=bars.index)[list(ORDER_FLOW_FEATURES)]
    out[bars[list(ORDER_FLOW_INPUTS)].isna().any(axis=1)] = np.nan  # EWMs must not run past the feed
    return out.astype(np.float32)


def read_ohlcv(path) -> pd.DataFrame:
    """Read and validate an OHLCV file (CSV or Parquet): clear errors naming file, column, row."""
    from pathlib import Path

    from flagcore.data.tables import numeric_column, parse_timestamps, read_table, require_finite

    p = Path(path)
    df, _ = read_table(p)
    if len(df) == 0:
        raise FlagcoreError(f"{p}: has a header but no rows")
    ts = parse_timestamps(df, p)
    missing = [k for k in OHLCV if k not in df.columns]
    if missing:
        raise FlagcoreError(f"{p}: missing column {missing[0]!r} (OHLCV needs {', '.join(OHLCV)})")
    out = pd.DataFrame({"timestamp": ts})
    for k in OHLCV:
        x = numeric_column(df, k, p)
        require_finite(x, k, p, ts)
        bad = (x < 0) if k == "volume" else (x <= 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise FlagcoreError(f"{p}: column {k!r} has an impossible value {x[i]} at row {i + 1}")
        out[k] = x
    bad = (out["high"] < out[["open", "close", "low"]].max(axis=1) * (1 - 1e-9)) | (
        out["low"] > out[["open", "close"]].min(axis=1) * (1 + 1e-9)
    )
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise FlagcoreError(f"{p}: row {i + 1} has high below or low above the open/close")
    for k in ORDER_FLOW_INPUTS:
        if k in df.columns:
            out[k] = numeric_column(df, k, p)
    if len(out) <= WARMUP + 10:
        raise FlagcoreError(
            f"{p}: {len(out)} bars; features need more than {WARMUP + 10} (look-back {WARMUP})"
        )
    return out


def compute_features(
    bars: pd.DataFrame,
    progress: Callable[[str], None] | None = None,
    *,
    periods_per_year: float | None = None,
) -> pd.DataFrame:
    """timestamp, close and the features; order-flow features only if the feed has any data.

    Volatilities are annualised with ``periods_per_year``, by default the market's calendar
    inferred from the timestamps (``data.calendar.infer_calendar``), so that the same bars give
    the same features in a file cut short and in the whole file.
    """
    ppy = features_calendar(bars, periods_per_year).periods_per_year
    out = pd.concat([bars[["timestamp", "close"]], market_features(bars, ppy)], axis=1)
    flow = list(ORDER_FLOW_INPUTS)
    if all(k in bars.columns for k in flow) and bars[flow].notna().any().all():
        out = pd.concat([out, order_flow_features(bars)], axis=1)
    return out


def features_calendar(bars: pd.DataFrame, periods_per_year: float | None = None) -> Calendar:
    """The calendar the features annualise with: ``periods_per_year`` if given, else inferred.

    Raises
    ------
    FlagcoreError : an override that is not a number above 0, or bars whose calendar cannot be told.
    """
    try:
        return resolve_calendar(pd.DatetimeIndex(bars["timestamp"]), periods_per_year)
    except FlagcoreError as e:
        if periods_per_year is not None:
            raise
        raise FlagcoreError(
            f"features cannot tell the bars per year ({e}); pass --periods-per-year N"
        ) from None


SEED_HOLD_SHARE = 0.6142  # the seed's test-period HOLD share (its reported accuracy)


def _first_test_bar(ts: pd.DatetimeIndex, test_start, horizon: int, source: str) -> int:
    """The index of the first bar on or after ``test_start``, refused without enough bars on each side."""
    start = pd.Timestamp(test_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    first_test = int(ts.searchsorted(start))
    if first_test >= len(ts):
        raise FlagcoreError(f"{source}: no bars on or after the test start {start.isoformat()}")
    if first_test - horizon <= WARMUP + 100:
        raise FlagcoreError(f"{source}: too few training bars before {start.isoformat()}")
    return first_test


def _period(feats: pd.DataFrame, label_text: pd.Series, rows: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """The rows' features and labels: every market feature, and the order-flow features the feed covers
    over all of these rows."""
    flow = [c for c in ORDER_FLOW_FEATURES if c in feats.columns and feats.loc[rows, c].notna().all()]
    cols = [*MARKET_FEATURES, *flow]
    df = feats.loc[rows, ["timestamp", "close", *cols]].copy()
    df["label"] = label_text[rows].to_numpy()
    return df.reset_index(drop=True), flow


def build_datasets(
    bars: pd.DataFrame,
    *,
    horizon: int = 24,
    width: float | None = None,
    target_hold: float = SEED_HOLD_SHARE,
    method: str = "triple-barrier",
    test_start: str | pd.Timestamp | None = None,
    context: int = 255,
    source: str = "",
    periods_per_year: float | None = None,
) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Feature-and-label datasets from bars: ``{"all": ...}`` or ``{"train": ..., "test": ...}``.

    With ``test_start`` the training set ends ``horizon`` bars before it (purged: its labels
    resolve before the test period) and keeps the order-flow features where the feed covers it;
    the test set holds the features available in the whole test period, and starts ``context``
    bars before ``test_start`` so that every test bar has a full window of history (its metadata
    ``evaluation_start`` marks the first evaluated bar). ``width=None`` calibrates the barrier
    width so that the HOLD share of the evaluated bars is ``target_hold``. Volatilities are
    annualised with ``periods_per_year`` (None: the market's calendar, inferred from the bars), and
    the metadata records it with the calendar's name ("override" when given).
    """
    from flagcore.data.labels import calibrate_width, ewm_volatility, make_labels, shares

    calendar = features_calendar(bars, periods_per_year)
    feats = compute_features(bars, periods_per_year=calendar.periods_per_year)
    close = bars["close"].to_numpy(float)
    sigma = ewm_volatility(close)
    ts = pd.DatetimeIndex(bars["timestamp"])
    bar = np.arange(len(bars))
    keep = bar >= WARMUP
    first_test = None if test_start is None else _first_test_bar(ts, test_start, horizon, source)
    eval_mask = keep if first_test is None else bar >= first_test
    if width is None:
        width = calibrate_width(close, sigma, horizon, target_hold, method, mask=eval_mask)
    labels = make_labels(close, sigma, horizon, width, method)
    label_text = pd.Series(np.asarray([*CLASS_NAMES, ""])[labels], index=bars.index)
    meta = {
        "label_horizon": int(horizon),
        "label_method": method,
        "barrier_width": float(width),
        "volatility": "EWM std of 1-bar log returns, span 168",
        "source": source,
        "periods_per_year": calendar.periods_per_year,
        "calendar": calendar.name,
    }

    def described(rows: np.ndarray, label_rows: np.ndarray, **extra) -> tuple[pd.DataFrame, dict]:
        df, flow = _period(feats, label_text, rows)
        features = {"market": list(MARKET_FEATURES), "order_flow": flow}
        return df, {**meta, "features": features, **extra, "label_shares": shares(labels[label_rows])}

    if first_test is None:
        return {"all": described(keep, keep)}
    train_rows = keep & (bar < first_test - horizon)
    test_rows = bar >= max(first_test - context, WARMUP)
    return {
        "train": described(train_rows, train_rows, purged_bars=int(horizon)),
        "test": described(
            test_rows,
            eval_mask,
            evaluation_start=ts[first_test].isoformat(),
            context_bars=int(first_test - test_rows.argmax()),
        ),
    }
