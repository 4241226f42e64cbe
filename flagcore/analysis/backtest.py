"""The L3 backtest: actions -> positions -> returns, with Kelly sizing and costs. Pure numpy.

Timing: the position for bar t is decided at bar t's close and earns the simple return from
close_t to close_{t+1}; the last bar's position has no next return and is dropped, so n bars give
n - 1 periods. A change of position at t costs (fee + slippage) x |position_t - position_{t-1}|,
charged in period t (the book starts flat).

Actions: 0 SELL (short), 1 HOLD (flat; or keep the previous position with ``hold="keep"``),
2 BUY (long). Sizes: 1 unit, or fractional Kelly f = fraction * (q - (1 - q) / b), clipped to
[0, max_leverage], with q Kelly's win probability (below) and b the payoff ratio (mean win over
mean loss per bar in the market, positions held under the same hold rule) estimated on the
training period; no position when f <= 0.

Kelly's p for a three-class signal. The labels are triple-barrier outcomes over h bars (Lopez de
Prado 2018, ch. 3): the barrier in the trade's direction is hit first (the trade wins b per unit
staked, probability p_a), the opposite barrier is hit first (it loses 1, probability p_opp), or the
time barrier is hit first (HOLD, about 0, probability p_HOLD). The expected log growth of a stake f
is g(f) = p_a log(1 + f b) + p_opp log(1 - f) + p_HOLD log 1, and g'(f) = 0 gives

    f* = q - (1 - q) / b,   q = p_a / (p_a + p_opp) = p_a / (p_SELL + p_BUY),

exactly binary Kelly (Kelly 1956) on q, the probability that the direction is right given that the
outcome is not HOLD. ``kelly_probability`` computes q from an option's class-probability vector;
every option sizes with it, so the same actions give the same positions whichever option made them.
The raw p_a would understate the edge by the factor 1 - p_HOLD (and a model sure of HOLD would never
size a trade it takes).

Metrics follow the usual definitions (annualised with periods per year from the timestamps):
Sharpe = mean / std (ddof 1) x sqrt(ppy); Sortino = mean / sqrt(mean(min(r, 0)^2)) x sqrt(ppy);
max drawdown of the compounded equity; Calmar = annualised return / |max drawdown|. A strategy
whose returns do not vary (it never trades) has an undefined Sharpe: reported as 0 with
``sharpe_defined = False``, never NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from flagcore import vocab
from flagcore.analysis.sharpe import ratio_or_zero, sharpe_defined, sharpe_ratio
from flagcore.errors import FlagcoreError
from flagcore.vocab import BUY, HOLD, SELL

DIRECTION = np.array(vocab.DIRECTION)  # vocab.DIRECTION as an array, indexed by class id


@dataclass(frozen=True)
class BacktestConfig:
    sizing: str = "kelly"  # "kelly" or "unit"
    kelly_fraction: float = 0.5  # half Kelly keeps about 3/4 of the growth at half the variance
    max_leverage: float = 1.0
    fee_bps: float = 4.0
    slippage_bps: float = 2.0
    hold: str = "flat"  # what HOLD means: "flat" (no position) or "keep" (the previous position)

    def __post_init__(self) -> None:
        if self.sizing not in ("kelly", "unit"):
            raise FlagcoreError(f"sizing must be 'kelly' or 'unit', got {self.sizing!r}")
        if self.hold not in ("flat", "keep"):
            raise FlagcoreError(f"hold must be 'flat' or 'keep', got {self.hold!r}")
        if not 0 < self.kelly_fraction <= 1:
            raise FlagcoreError(f"kelly_fraction must lie in (0, 1], got {self.kelly_fraction!r}")
        if not self.max_leverage > 0:
            raise FlagcoreError(f"max_leverage must be > 0, got {self.max_leverage!r}")
        if self.fee_bps < 0 or self.slippage_bps < 0:
            raise FlagcoreError(
                f"costs must be >= 0 bps, got fee {self.fee_bps}, slippage {self.slippage_bps}"
            )

    @property
    def cost_rate(self) -> float:
        return (self.fee_bps + self.slippage_bps) / 1e4

    def to_dict(self) -> dict:
        return asdict(self)


def kelly_fraction(p, b) -> np.ndarray:
    """Kelly's optimal bet f* = p - (1 - p) / b for win probability p and payoff ratio b; 0 when <= 0."""
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise FlagcoreError("win probabilities must lie in [0, 1]")
    if not b > 0:
        raise FlagcoreError(f"payoff ratio must be > 0, got {b!r}")
    return np.maximum(p - (1 - p) / b, 0.0)


def kelly_probability(probs, actions) -> np.ndarray:
    """Kelly's win probability q = p_a / (p_SELL + p_BUY) of each bar's SELL or BUY action.

    Parameters
    ----------
    probs : array_like, shape (n, 3)
        The class-probability vector behind each action (SELL, HOLD, BUY), rows summing to 1.
    actions : array_like, shape (n,)
        Class ids 0, 1, 2.

    Returns
    -------
    np.ndarray, shape (n,)
        q on SELL/BUY bars: the probability that the trade's direction is right given that the
        triple-barrier outcome is not HOLD (the module docstring derives f* = q - (1 - q) / b from
        the three outcomes). 0 on HOLD bars (no trade to size) and where p_SELL + p_BUY is 0 (no
        evidence of a direction).

    References
    ----------
    Kelly, J. L. (1956). A new interpretation of information rate. Bell System Technical Journal.
    Lopez de Prado, M. (2018). Advances in Financial Machine Learning, ch. 3 and 10. Wiley.

    Examples
    --------
    >>> kelly_probability([[0.1, 0.6, 0.3], [0.2, 0.5, 0.3]], [2, 1]).round(4).tolist()
    [0.75, 0.0]
    """
    p = np.asarray(probs, dtype=np.float64)
    a = np.asarray(actions)
    if p.ndim != 2 or p.shape[1] != 3:
        raise FlagcoreError(f"class probabilities must have shape (n, 3), got {p.shape}")
    if a.shape != (p.shape[0],):
        raise FlagcoreError(f"{a.size} actions for {p.shape[0]} probability rows")
    if a.size and (a.min() < 0 or a.max() > 2):
        raise FlagcoreError("actions must be class ids 0, 1, 2")
    directional = p[:, SELL] + p[:, BUY]
    p_a = p[np.arange(a.size), a]
    # p_a <= directional on traded bars, so the ratio lies in [0, 1]; 0 / 0 is no evidence: no bet
    traded = (a != HOLD) & (directional > 0)
    return np.where(traded, p_a / np.where(traded, directional, 1.0), 0.0).clip(0.0, 1.0)


def simple_returns(close) -> np.ndarray:
    """(n - 1,) returns close_{t+1} / close_t - 1."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1 or c.size < 2:
        raise FlagcoreError("need at least two closes to compute returns")
    if not (np.isfinite(c).all() and (c > 0).all()):
        raise FlagcoreError("close prices must be positive and finite")
    return c[1:] / c[:-1] - 1.0


def positions(
    actions, confidence=None, cfg: BacktestConfig | None = None, payoff_ratio: float | None = None
) -> np.ndarray:
    """(n,) signed position sizes decided at each bar's close.

    ``confidence`` is Kelly's win probability of each bar's action (``kelly_probability``, or its
    calibrated form); with ``hold="keep"`` a carried position keeps the size of the bar that opened it.
    """
    cfg = cfg or BacktestConfig()
    a = np.asarray(actions)
    if a.ndim != 1 or (a.size and (a.min() < 0 or a.max() > 2)):
        raise FlagcoreError("actions must be a 1-d array of class ids 0, 1, 2")
    direction = DIRECTION[a]
    if cfg.hold == "keep":
        # carry the last non-HOLD direction forward
        idx = np.where(a != HOLD, np.arange(a.size), -1)
        idx = np.maximum.accumulate(idx)
        direction = np.where(idx >= 0, DIRECTION[a[np.maximum(idx, 0)]], 0.0)
    if cfg.sizing == "unit":
        size = np.ones(a.size)
    else:
        if confidence is None or payoff_ratio is None:
            raise FlagcoreError("Kelly sizing needs the confidence of each action and a payoff ratio")
        conf = np.asarray(confidence, dtype=np.float64)
        if cfg.hold == "keep":
            conf = np.where(idx >= 0, conf[np.maximum(idx, 0)], 0.0)
        size = np.minimum(cfg.kelly_fraction * kelly_fraction(conf, payoff_ratio), cfg.max_leverage)
    return direction * size


def payoff_ratio(pos, returns) -> float:
    """Mean winning bar over mean losing bar, in the market (|position| > 0): Kelly's b.

    1.0 when there are no wins or no losses to estimate it from (a fair bet).
    """
    pos = np.asarray(pos, dtype=np.float64)
    pnl = np.sign(pos[: len(returns)]) * np.asarray(returns, dtype=np.float64)
    pnl = pnl[pos[: len(returns)] != 0]
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    if wins.size == 0 or losses.size == 0:
        return 1.0
    return float(wins.mean() / -losses.mean())


def signal_payoff_ratio(actions, returns, cfg: BacktestConfig | None = None) -> float:
    """Kelly's b from one option's training-period actions, held under ``cfg``'s hold rule.

    The positions are the unit-size ones the backtest would hold (with ``hold="keep"`` carried
    through HOLD bars), so b measures the same bets that Kelly then sizes.

    Examples
    --------
    >>> acts = np.array([BUY, HOLD, SELL])
    >>> signal_payoff_ratio(acts, np.array([0.02, -0.01]), BacktestConfig(hold="keep"))
    2.0
    """
    cfg = cfg or BacktestConfig()
    return payoff_ratio(positions(actions, cfg=replace(cfg, sizing="unit")), returns)


def unit_metrics(actions, returns, periods_per_year: float, cfg: BacktestConfig | None = None) -> dict:
    """``metrics`` of ``actions`` at one unit in each action's direction, ``cfg``'s hold rule and costs.

    The signal apart from its sizing: with ``cfg.sizing == "unit"`` it equals the configured backtest's
    metrics.
    """
    cfg = replace(cfg or BacktestConfig(), sizing="unit")
    pos = positions(actions, cfg=cfg)
    net, _ = strategy_returns(pos, returns, cfg.cost_rate)
    return metrics(net, pos, periods_per_year)


def strategy_returns(pos, returns, cost_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Net per-period returns (n - 1,) and the traded amount at each decision (n - 1,)."""
    pos = np.asarray(pos, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if pos.size != r.size + 1:
        raise FlagcoreError(f"{pos.size} positions need {pos.size - 1} returns, got {r.size}")
    held = pos[:-1]
    traded = np.abs(np.diff(np.concatenate([[0.0], held])))
    return held * r - cost_rate * traded, traded


def metrics(net: np.ndarray, pos: np.ndarray, periods_per_year: float) -> dict:
    """Trading metrics of net per-period returns ``net`` for positions ``pos`` (one longer)."""
    r = np.asarray(net, dtype=np.float64)
    held = np.asarray(pos, dtype=np.float64)[: r.size]
    n = r.size
    if n == 0:
        raise FlagcoreError("no periods to backtest")
    if not periods_per_year or periods_per_year <= 0:
        raise FlagcoreError(f"periods per year must be > 0, got {periods_per_year!r}")
    ann = np.sqrt(periods_per_year)
    equity = np.cumprod(1.0 + r)
    total = float(equity[-1] - 1.0)
    years = n / periods_per_year
    annual_return = float(equity[-1] ** (1.0 / years) - 1.0) if equity[-1] > 0 else -1.0
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    sharpe = float(sharpe_ratio(r) * ann)
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    sortino = float(ratio_or_zero(r.mean(), downside) * ann)
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))
    drawdown = np.concatenate([[1.0], equity]) / peak - 1.0
    max_dd = float(drawdown.min())
    calmar = float(annual_return / -max_dd) if max_dd < 0 else 0.0
    changes = np.abs(np.diff(np.concatenate([[0.0], held])))
    # a trade is a run of bars in the market on one side; Kelly resizing within it is not a new trade
    side = np.sign(held)
    run_id = np.cumsum(np.concatenate([[True], side[1:] != side[:-1]]))
    in_market = held != 0
    run_pnl = np.bincount(run_id[in_market], weights=np.log1p(r[in_market]), minlength=run_id.max() + 1)
    runs = np.unique(run_id[in_market])
    wins = int((run_pnl[runs] > 0).sum())
    return {
        "periods": int(n),
        "periods_per_year": float(periods_per_year),
        "trades": int(runs.size),
        "position_changes": int((changes > 0).sum()),  # incl. resizing
        "total_return": total,
        "annual_return": annual_return,
        "annual_volatility": float(std * ann),
        "sharpe": sharpe,
        "sharpe_defined": sharpe_defined(r),
        "sortino": sortino,
        "max_drawdown": max_dd,
        "calmar": calmar,
        "win_rate": float(wins / runs.size) if runs.size else 0.0,
        "exposure": float(in_market.mean()),
        "turnover_per_year": float(changes.sum() / years),
        "mean_abs_position": float(np.abs(held).mean()),
    }


def backtest(
    actions,
    close,
    periods_per_year: float,
    *,
    confidence=None,
    cfg: BacktestConfig | None = None,
    payoff: float | None = None,
) -> dict:
    """Backtest one option's actions on closes: metrics, the equity curve and the positions."""
    cfg = cfg or BacktestConfig()
    r = simple_returns(close)
    a = np.asarray(actions)
    if a.size != r.size + 1:
        raise FlagcoreError(f"{a.size} actions for {r.size + 1} bars")
    if cfg.sizing == "kelly" and payoff is None:
        raise FlagcoreError("Kelly sizing needs the payoff ratio estimated on the training period")
    pos = positions(a, confidence, cfg, payoff)
    net, _ = strategy_returns(pos, r, cfg.cost_rate)
    out = metrics(net, pos, periods_per_year)
    out["payoff_ratio"] = payoff
    out["config"] = cfg.to_dict()
    out["equity"] = np.cumprod(1.0 + net)
    out["returns"] = net
    out["positions"] = pos
    return out


# ----------------------------------------------------------------------------- a sampled payoff ratio


def sample_blocks(n_bars: int, block: int, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Start positions of ``n_blocks`` blocks of ``block`` bars spread over ``n_bars`` bars.

    Stratified: the stretch is cut into ``n_blocks`` equal strata and each holds one block, placed
    uniformly at random within its stratum (``seed``), so the sample covers the whole stretch
    (every season of a training year) and no two blocks overlap.

    Parameters
    ----------
    n_bars : int
        Bars in the stretch sampled.
    block : int
        Bars per block (>= 2: a block needs one return).
    n_blocks : int
        Blocks (>= 2: the standard error compares blocks); ``n_blocks * block <= n_bars``.
    seed : int
        Where each block lies within its stratum.

    Returns
    -------
    np.ndarray, shape (n_blocks,)
        Increasing start positions in ``0 .. n_bars - block``.

    Examples
    --------
    >>> starts = sample_blocks(1000, 100, 4, seed=0)
    >>> [bool(k * 250 <= s <= (k + 1) * 250 - 100) for k, s in enumerate(starts)]
    [True, True, True, True]
    """
    if block < 2:
        raise FlagcoreError(f"a payoff block needs at least 2 bars, got {block}")
    if n_blocks < 2:
        raise FlagcoreError(f"a payoff sample needs at least 2 blocks for its standard error, got {n_blocks}")
    if n_blocks * block > n_bars:
        raise FlagcoreError(f"{n_blocks} blocks of {block} bars do not fit in {n_bars} bars")
    edges = (np.arange(n_blocks + 1) * n_bars) // n_blocks  # strata, each at least `block` wide
    rng = np.random.default_rng(seed)
    return np.array([int(rng.integers(edges[k], edges[k + 1] - block + 1)) for k in range(n_blocks)])


@dataclass(frozen=True)
class PayoffEstimate:
    """Kelly's payoff ratio b from sampled blocks, with its standard error."""

    ratio: float  # mean winning bar over mean losing bar, over the in-market bars of every block
    se: float | None  # delta-method standard error across blocks; None where it is undefined
    blocks: int
    in_market: int  # bars in the market (a win or a loss) over all blocks


def block_payoff_ratio(actions, close, block_starts, cfg: BacktestConfig | None = None) -> PayoffEstimate:
    """Kelly's b from blocks of a stretch: mean win over mean loss, and its standard error.

    Each block is held on its own (positions start flat at its first bar, unit size, ``cfg``'s hold
    rule) and earns only its own bars' returns, so no position or return crosses a gap between
    blocks. With per-block sums of winning returns W_k and losing returns L_k (as positive numbers)
    and their counts a_k, c_k, the estimate is the ratio estimator

        b = (sum W / sum a) / (sum L / sum c)

    over the K blocks (what :func:`payoff_ratio` gives on one block). Its standard error is the
    delta method with the blocks as clusters (Cochran 1977, sec. 6.4 and 11.7): log b is a smooth
    function of four block means, whose linearisation gives each block the value

        z_k = W_k / mean(W) - a_k / mean(a) - L_k / mean(L) + c_k / mean(c),

    and se(b) = b * sqrt(var(z, ddof=1) / K). It treats the blocks as a random sample; the stratified
    placement (:func:`sample_blocks`) removes the between-strata variation it still counts, so the
    error is, if anything, overstated. Like any delta method it wants a few blocks (K >= 8 or so).

    Parameters
    ----------
    actions : array_like, shape (n,)
        Class ids 0, 1, 2 of the sampled bars, blocks concatenated.
    close : array_like, shape (n,)
        Their closes.
    block_starts : array_like, shape (K,)
        Where each block begins (the first is 0), increasing; every block has at least 2 bars.
    cfg : BacktestConfig, optional
        The hold rule (sizing is ignored: b is measured at unit size).

    Returns
    -------
    PayoffEstimate
        ``ratio`` 1.0 (a fair bet) and ``se`` None without a win or a loss; ``se`` None with one
        block, or where a block mean is 0.

    References
    ----------
    Cochran, W. G. (1977). Sampling Techniques, 3rd ed., ch. 6 (ratio estimators) and 11.7. Wiley.
    Kelly, J. L. (1956). A new interpretation of information rate. Bell System Technical Journal.

    Examples
    --------
    >>> acts = np.array([BUY, BUY, BUY, SELL, SELL, SELL])
    >>> close = np.array([100.0, 102.0, 101.0, 100.0, 99.0, 100.0])
    >>> est = block_payoff_ratio(acts, close, [0, 3])
    >>> round(est.ratio, 4), round(est.se, 4), est.in_market
    (1.5072, 0.5249, 4)
    """
    cfg = replace(cfg or BacktestConfig(), sizing="unit")
    a = np.asarray(actions)
    c = np.asarray(close, dtype=np.float64)
    if a.shape != c.shape or a.ndim != 1:
        raise FlagcoreError(f"{a.size} actions for {c.size} closes")
    starts = np.asarray(block_starts, dtype=np.int64)
    bounds = np.append(starts, a.size)
    if starts.ndim != 1 or starts.size == 0 or starts[0] != 0 or (np.diff(bounds) < 2).any():
        raise FlagcoreError("block starts must begin at 0 and leave every block at least 2 bars")
    sums = np.zeros((starts.size, 4))  # per block: W, a, L, c
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        pos = positions(a[lo:hi], cfg=cfg)[:-1]
        pnl = (np.sign(pos) * simple_returns(c[lo:hi]))[pos != 0]
        sums[k] = [pnl[pnl > 0].sum(), (pnl > 0).sum(), -pnl[pnl < 0].sum(), (pnl < 0).sum()]
    total = sums.sum(0)
    n_in = int(total[1] + total[3])
    if total[1] == 0 or total[3] == 0:
        return PayoffEstimate(1.0, None, int(starts.size), n_in)
    ratio = float((total[0] / total[1]) / (total[2] / total[3]))
    means = sums.mean(0)
    if starts.size < 2:
        return PayoffEstimate(ratio, None, 1, n_in)
    z = sums @ (np.array([1.0, -1.0, -1.0, 1.0]) / means)  # (K,) the linearised log ratio
    se = float(ratio * np.sqrt(z.var(ddof=1) / starts.size))
    return PayoffEstimate(ratio, se, int(starts.size), n_in)
