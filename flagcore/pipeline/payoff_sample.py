"""The training stretch the payoff ratios read: its last year (:func:`recent`), or a sample of it.

Kelly's payoff ratio is one number per option, estimated on the training period's last year. For a
large model inferring that year costs as much as the evaluation itself, so ``EvaluateSettings``
``payoff_sample`` asks for a sample: K blocks of ``payoff_block`` bars, one in each of K equal strata
of the stretch (``analysis.backtest.sample_blocks``, seeded by ``permutation_seed``). Each block
keeps the ``window - 1`` bars before it as history, so every sampled bar is inferred from its full
window of real, contiguous bars; the blocks with their history, concatenated in time order, are one
dataset (:class:`PayoffSample`) of which a FLAG-TRADER infers the blocks' bars only
(``inference_cache.READ_BARS``), once per model, cached under the sample's own content hash.

Everything that reads the training stretch then reads the sampled bars only: the payoff ratios
(each block held on its own, with a standard error: ``analysis.backtest.block_payoff_ratio``),
calibration of Kelly's probability, the sweeps' payoff ratios, and the training-period logits
stored with the run. The label prior and the feature shift read the whole training dataset, as
without a sample. A CGDT partner's autoregressive actions in a block's history follow on from the
bars before them in the sample, as those of the whole stretch's first bars follow on from nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from flagcore.analysis.backtest import sample_blocks
from flagcore.data.dataset import Dataset
from flagcore.errors import FlagcoreError
from flagcore.pipeline.inference_cache import READ_BARS, ModelLogits
from flagcore.vocab import UNLABELLED

SE_METHOD = "delta method, blocks as clusters (Cochran 1977, 6.4)"
RESTRICTED = (
    "payoff ratios, calibration and the stored training-period logits read the sampled blocks only; "
    "the label prior and the feature shift read the whole training data"
)


@dataclass
class PayoffSample:
    """Sampled blocks of a training stretch, as the models infer them and the run reads them."""

    dataset: Dataset  # the blocks with their history bars, concatenated: what the models infer
    rows: np.ndarray  # (K * L,) the sampled bars' positions after ``dataset.eval_index``
    block_starts: np.ndarray  # (K,) where each block begins among the sampled bars: 0, L, 2L, ...
    starts: list[pd.Timestamp]  # each block's first bar
    block: int  # L, bars per block
    seed: int
    stretch_bars: int  # bars of the stretch sampled

    @property
    def n_blocks(self) -> int:
        return len(self.starts)

    @property
    def bars(self) -> int:
        return int(self.rows.size)

    @property
    def source(self) -> str:
        """The sample in words: every option's payoff source."""
        return f"training period sample: {self.n_blocks} blocks of {self.block} bars"

    def restrict(self, m: ModelLogits) -> ModelLogits:
        """``m`` with its training-period logits cut to the sampled bars (history bars dropped)."""
        if m.train is None:
            return m
        if len(m.train) != self.dataset.n_bars - self.dataset.eval_index:
            raise FlagcoreError(
                f"{m.source}: {len(m.train)} training-period logits for a sample of "
                f"{self.dataset.n_bars - self.dataset.eval_index} bars"
            )
        return replace(m, train=m.train[self.rows])

    def to_dict(self) -> dict:
        """What the run's summary records of the sample (``payoff_period["sample"]``)."""
        return {
            "source": self.source,
            "blocks": self.n_blocks,
            "block_bars": self.block,
            "bars": self.bars,
            "stretch_bars": self.stretch_bars,
            "seed": self.seed,
            "starts": [t.isoformat() for t in self.starts],
            # where each block begins among the stored training-period bars (positions restart there)
            "block_starts": [int(x) for x in self.block_starts],
            # a FLAG-TRADER infers the blocks' bars only; a CGDT partner runs through their history too
            "inferred_bars": self.bars,
            "se_method": SE_METHOD,
            "restricted": RESTRICTED,
        }


def recent(ds, bars: int, history: int):
    """The last ``bars`` bars of a training dataset, preceded by ``history`` bars that only give the
    first windows their full history (``evaluation_start`` marks where the stretch begins)."""
    if bars < 1:
        raise FlagcoreError(f"the payoff stretch needs at least one bar, got {bars}")
    first = max(0, ds.n_bars - bars)
    start = max(0, first - history)
    out = ds.slice(start, ds.n_bars)
    out.evaluation_start = ds.timestamps[first]
    out.attrs = {**ds.attrs, "slice": f"{start}:{ds.n_bars}"}
    return out


def period_bars(ds, period: str, rows: np.ndarray | None = None) -> pd.DataFrame:
    """The bars of ``period`` evaluated in dataset ``ds`` (after its lead-in; of those, ``rows``
    where given: a payoff sample's blocks): the ``run_bars`` rows."""
    e = ds.eval_index
    sl = slice(e, None) if rows is None else e + rows
    ts = ds.timestamps[sl]
    labels = ds.labels[sl] if ds.labels is not None else np.full(len(ts), UNLABELLED)
    return pd.DataFrame(
        {
            "period": period,
            "bar": np.arange(len(ts), dtype=np.int32),
            "timestamp": ts,
            "close": ds.close[sl],
            "label": labels.astype(np.int8),
        }
    )


def sample_stretch(
    ds: Dataset, bars: int, history: int, block: int, n_blocks: int, seed: int
) -> PayoffSample:
    """K = ``n_blocks`` blocks of ``block`` bars from the last ``bars`` bars of ``ds``, each with up to
    ``history`` bars before it, concatenated (overlapping histories merged) as one dataset.

    Raises
    ------
    FlagcoreError
        When the blocks do not fit in the stretch (``sample_blocks``).
    """
    n = min(bars, ds.n_bars)
    first = ds.n_bars - n
    starts = first + sample_blocks(n, block, n_blocks, seed)  # (K,) in ds
    keep = np.zeros(ds.n_bars, dtype=bool)  # the bars inferred: blocks and their history
    in_block = np.zeros(ds.n_bars, dtype=bool)
    for a in starts:
        keep[max(0, a - history) : a + block] = True
        in_block[a : a + block] = True
    idx = np.flatnonzero(keep)  # (m,) in time order
    spec = f"{n_blocks}x{block}@" + ",".join(str(int(a)) for a in starts)
    out = Dataset(
        source=ds.source,
        timestamps=ds.timestamps[idx],
        features=ds.features[idx],
        feature_names=ds.feature_names,
        close=None if ds.close is None else ds.close[idx],
        labels=None if ds.labels is None else ds.labels[idx],
        label_horizon=ds.label_horizon,
        evaluation_start=ds.timestamps[starts[0]],
        # the sample's own content: the parent's hash and which bars it keeps
        content_hash=hashlib.sha256(f"{ds.content_hash};sample={spec}".encode()).hexdigest(),
        attrs={**ds.attrs, "slice": f"sample:{spec}"},
    )
    e = out.eval_index
    rows = np.flatnonzero(in_block[idx][e:])  # (K * L,)
    # only the blocks' bars are inferred (a history bar's logits are never read); the cache key
    # says so, apart from entries that inferred every bar
    out.attrs = {**out.attrs, READ_BARS: e + rows, "slice": f"sample:{spec};read=blocks"}
    return PayoffSample(
        out,
        rows,
        np.arange(n_blocks) * block,
        [ds.timestamps[a] for a in starts],
        block,
        seed,
        n,
    )


def payoff_period(train: Dataset | None, sample: PayoffSample | None, requested: int | None) -> dict | None:
    """The run summary's ``payoff_period``: the stretch the payoff ratios read (after the lead-in
    that only gives windows history), with the ``sample`` where one was drawn; None without one.

    ``requested`` is the settings' ``payoff_sample``: where it asked for a sample but the stretch
    was too short to sample, the whole stretch was read and ``sample_note`` says so.
    """
    if train is None:
        return None
    e = train.eval_index
    out: dict = {
        "bars": int(train.n_bars - e) if sample is None else sample.bars,
        "start": train.timestamps[e].isoformat(),
        "end": train.timestamps[-1].isoformat(),
        "sample": None if sample is None else sample.to_dict(),
    }
    if sample is None and requested is not None:
        out["sample_note"] = (
            f"a sample of {requested} bars would cover the {out['bars']}-bar stretch: "
            "the whole stretch was read"
        )
    return out


def payoff_stretch(full_train: Dataset, bars: int, history: int, s) -> tuple[Dataset, PayoffSample | None]:
    """The training stretch the models infer for the payoff ratios, as ``EvaluateSettings`` ``s``
    asks: the last ``bars`` bars with ``history`` bars before them, or a sample of them (blocks of
    ``s.payoff_block`` bars, ``s.payoff_blocks`` of them) where the sample is smaller than the stretch."""
    n = min(bars, full_train.n_bars)
    k = s.payoff_blocks
    if k is None or k * s.payoff_block >= n:
        return recent(full_train, bars, history), None
    sample = sample_stretch(full_train, n, history, s.payoff_block, k, s.permutation_seed)
    return sample.dataset, sample
