"""The evaluate pipeline: load, infer, diagnose, every option, backtests, HIFA, one write.

``evaluate`` does all the heavy work first (inference is cached in the store by checkpoint hash,
dataset hash and inference settings: ``pipeline.inference_cache``), computes the run
(``pipeline.run.compute_run``), then writes the whole run in one transaction
(``pipeline.records.write_run``): an interrupted run leaves no part of a run behind and earlier
runs untouched. (Inference results enter the cache as they are computed, each in its own
transaction: a cache entry is complete or absent, and an interrupted run's logits are reused by
the next.)

The names other modules imported from here before the pipeline was split stay importable here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flagcore.errors import FlagcoreError
from flagcore.pipeline.inference_cache import (
    INFERENCE_SETTINGS,
    InferenceStats,
    ModelLogits,
    cgdt_id,
    cgdt_logits,
    file_logits,
    flag_trader_logits,
    flag_trader_settings,
    prefetch_inference,
)
from flagcore.pipeline.payoff_sample import PayoffSample, payoff_stretch
from flagcore.pipeline.records import write_run
from flagcore.pipeline.run import (
    compute_run,
    request_key,
)
from flagcore.pipeline.settings import (
    EvaluateSettings,
    Progress,
    no_progress,
)
from flagcore.store.store import Store
from flagcore.vocab import (
    MODEL_ROLES,
    ROLE_BY_LOSS,
)


def parse_retrained(spec: str) -> tuple[str | None, str]:
    """``ROLE=PATH`` or ``PATH`` (role read from the checkpoint's training loss)."""
    if "=" in spec:
        role, path = spec.split("=", 1)
        if role not in MODEL_ROLES or role == "baseline":
            raise FlagcoreError(
                f"--retrained {spec!r}: unknown role {role!r}; choose one of "
                f"{', '.join(r for r in MODEL_ROLES if r != 'baseline')}"
            )
        return role, path
    return None, spec


def role_of_checkpoint(model, path) -> str:
    """The option a retrained FLAG-TRADER stands for, read from the training loss it records."""
    loss = (model.checkpoint_info.meta.provenance or {}).get("loss")
    role = ROLE_BY_LOSS.get(loss) if isinstance(loss, str) else None
    if role is None or role == "baseline":
        raise FlagcoreError(
            f"--retrained {path}: cannot tell which option it is (training loss {loss!r}); "
            f"name it as ROLE=PATH"
        )
    return role


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a checkpoint (a folder, a safetensors or a torch file), not a predictions file."""
    from flagcore.models.checkpoint import file_kind

    p = Path(path)
    if p.is_dir():
        return True
    try:
        return file_kind(p) in ("safetensors", "torch")
    except FlagcoreError:
        return False


# ----------------------------------------------------------------------------- the inputs


def load_evaluation_data(data, train_data, config, s: EvaluateSettings) -> tuple[Any, Any, Any]:
    """The evaluated dataset, the training stretch the payoff ratios come from, and the whole
    training dataset (both None without ``train_data``), checked against the model's ``config``.
    With ``s.payoff_sample`` the stretch is the sample's dataset (:func:`evaluation_inputs` gives
    the sample too)."""
    test, train, full_train, _ = evaluation_inputs(data, train_data, config, s)
    return test, train, full_train


def evaluation_inputs(
    data, train_data, config, s: EvaluateSettings
) -> tuple[Any, Any, Any, PayoffSample | None]:
    """:func:`load_evaluation_data`'s three datasets and the payoff sample drawn from the training
    stretch (None: the whole stretch is inferred; ``pipeline.payoff_sample``)."""
    from flagcore.data.dataset import check_disjoint, load_dataset

    test = load_dataset(data, state_dim=config.state_dim)
    if test.close is None:
        raise FlagcoreError(f"{data}: needs a 'close' column to backtest")
    if test.n_bars < config.window:
        raise FlagcoreError(f"{data}: {test.n_bars} bars, fewer than the model's window of {config.window}")
    crit, h = s.resolved_criteria(), int(test.label_horizon or 0)
    # every CPCV group must outlast its purge and embargo, and the permutation test needs two blocks
    need = 1 + max(
        2 * int(crit["permutation_block"]), 2 * s.pbo_blocks, int(crit["cpcv_groups"]) * (2 * h + 2)
    )
    if test.n_bars - test.eval_index < need:
        raise FlagcoreError(
            f"{data}: {test.n_bars - test.eval_index} evaluated bars; the backtest and its "
            f"validation need at least {need} (label horizon {h})"
        )
    if train_data is None:
        return test, None, None, None
    full_train = load_dataset(train_data, state_dim=config.state_dim)
    check_disjoint(full_train, test)
    if full_train.close is None:
        raise FlagcoreError(f"{train_data}: needs a 'close' column to estimate payoff ratios")
    # the bar count of payoff_years follows the market's calendar (hourly 24/7, equity sessions,
    # daily, ...) recorded with the data or inferred, unless the settings override it
    ppy = s.periods_per_year or full_train.periods_per_year
    bars = max(1, round(ppy * s.payoff_years))
    train, sample = payoff_stretch(full_train, bars, config.window - 1, s)
    return test, train, full_train, sample


@dataclass
class ModelSpec:
    """One ``--retrained`` model: its role, path, kind ("flag-trader", "cgdt" or "file") and, for a
    FLAG-TRADER, the loaded model."""

    role: str
    path: str
    kind: str
    model: Any = None


def retrained_specs(retrained) -> list[ModelSpec]:
    """Every ``--retrained`` model, its role resolved; FLAG-TRADER checkpoints are loaded."""
    from flagcore.models.checkpoint import is_cgdt, load_checkpoint

    specs: list[ModelSpec] = []
    for spec in retrained:
        role, path = parse_retrained(str(spec))
        if not is_checkpoint(path):
            if role is None:
                raise FlagcoreError(f"--retrained {path}: a predictions file needs its role, as ROLE={path}")
            specs.append(ModelSpec(role, path, "file"))
        elif is_cgdt(path):
            specs.append(ModelSpec(role or "cgdt", path, "cgdt"))
        else:
            rm = load_checkpoint(path)
            specs.append(ModelSpec(role or role_of_checkpoint(rm, path), path, "flag-trader", rm))
        if specs[-1].role in ["baseline"] + [x.role for x in specs[:-1]]:
            raise FlagcoreError(f"--retrained {path}: a second model for {specs[-1].role!r}")
    return specs


def partner_is_cgdt(partner) -> bool:
    """Whether ``--partner`` is a CGDT checkpoint (else a predictions file); refuses a FLAG-TRADER."""
    from flagcore.models.checkpoint import is_cgdt

    if partner is None or not is_checkpoint(partner):
        return False
    if is_cgdt(partner):
        return True
    raise FlagcoreError(
        f"--partner {partner}: a FLAG-TRADER checkpoint; the partner is a CGDT checkpoint "
        f"or a predictions file"
    )


# ----------------------------------------------------------------------------- the logits


def _prefetch(
    store: Store,
    base_model,
    specs: list[ModelSpec],
    cgdt_partner,
    datasets: list,
    stats: InferenceStats,
    placement,
    device,
    progress: Progress,
    precision: str = "fp32",
) -> None:
    flag_traders = [base_model] + [x.model for x in specs if x.kind == "flag-trader"]
    cgdts = [x.path for x in specs if x.kind == "cgdt"] + ([cgdt_partner] if cgdt_partner is not None else [])
    jobs = [
        (
            "flag-trader",
            str(m.checkpoint_info.path),
            m.checkpoint_info.sha256,
            flag_trader_settings(m.checkpoint_info, precision),
        )
        for m in flag_traders
    ]
    jobs += [("cgdt", str(p), cgdt_id(p), INFERENCE_SETTINGS) for p in cgdts]
    prefetch_inference(store, list(dict.fromkeys(jobs)), datasets, stats, placement, device, progress)


def model_logits(
    store: Store,
    base_model,
    specs: list[ModelSpec],
    test,
    train,
    stats: InferenceStats,
    device,
    progress: Progress,
    precision: str = "fp32",
) -> dict[str, ModelLogits]:
    """The baseline's and every retrained model's logits, by role (cached inference; FLAG-TRADERs
    at ``precision``, ``EvaluateSettings.precision``)."""
    models: dict[str, ModelLogits] = {}
    models["baseline"] = flag_trader_logits(
        store, base_model, "baseline", test, train, stats, device, progress, precision=precision
    )
    for x in specs:
        if x.kind == "cgdt":
            m = cgdt_logits(store, x.path, test, train, stats, progress)
        elif x.kind == "flag-trader":
            m = flag_trader_logits(
                store, x.model, x.role, test, train, stats, device, progress, precision=precision
            )
        else:
            m = file_logits(x.path, x.role, test, train)
        m.role = x.role
        models[x.role] = m
    return models


def partner_logits(
    store: Store,
    partner,
    is_cgdt: bool,
    models: dict[str, ModelLogits],
    test,
    train,
    stats: InferenceStats,
    progress: Progress,
) -> ModelLogits | None:
    """The ensemble partner's logits, also recorded in ``models`` (as "cgdt", or as "partner")."""
    if partner is None:
        return None
    if is_cgdt:
        m = cgdt_logits(store, partner, test, train, stats, progress)
        models.setdefault("cgdt", m)
    else:
        m = file_logits(partner, "partner", test, train)
        models["partner"] = m  # recorded with the run; no option reads it by this name
    return m


# ----------------------------------------------------------------------------- the command


def evaluate(
    checkpoint,
    data,
    *,
    store: Store,
    train_data=None,
    partner=None,
    retrained=(),
    name: str | None = None,
    settings: EvaluateSettings | None = None,
    progress: Progress = no_progress,
    reuse: bool = False,
    placement=None,
    stats: InferenceStats | None = None,
) -> dict:
    """``flagcore evaluate``: every option of one checkpoint on one dataset, written as one run.

    Returns ``{"run_id", "reused", "inference": {"computed", "cached"}, "seconds"}``. With
    ``reuse`` an identical earlier request (same models, data and settings) returns its run. With a
    parallel ``placement`` (``tasks.Placement``: local workers or a Ray cluster) the checkpoints'
    inference runs as tasks there; the run is the same as in one process. ``stats``: cache entries the
    caller computed (``inference_cache.put_entries``, as the demo does), counted as computed.
    """
    from flagcore.models.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    s = settings or EvaluateSettings()
    progress("loading", 0.0)
    base_model = load_checkpoint(checkpoint)
    test, train, full_train, sample = evaluation_inputs(
        data, train_data, base_model.checkpoint_info.config, s
    )
    stats = stats if stats is not None else InferenceStats()
    # every checkpoint first, so that their inference can run as tasks side by side
    specs = retrained_specs(retrained)
    cgdt_partner = partner_is_cgdt(partner)
    if placement is not None and placement.parallel:
        datasets = [test] + ([train] if train is not None else [])
        _prefetch(
            store,
            base_model,
            specs,
            partner if cgdt_partner else None,
            datasets,
            stats,
            placement,
            s.device,
            progress,
            s.precision,
        )
    models = model_logits(store, base_model, specs, test, train, stats, s.device, progress, s.precision)
    partner_m = partner_logits(store, partner, cgdt_partner, models, test, train, stats, progress)
    if reuse:
        found = store.find_run(request_key(models, test, full_train, partner_m, s))
        if found is not None:
            return {
                "run_id": found,
                "reused": True,
                "inference": stats.counts(),
                "seconds": round(time.perf_counter() - t0, 2),
            }
    run = compute_run(
        models,
        test,
        train,
        partner=partner_m,
        settings=s,
        name=name,
        progress=progress,
        full_train=full_train,
        sample=sample,
    )
    progress("writing", 0.0)
    run_id = write_run(store, run)
    progress("done", 1.0)
    return {
        "run_id": run_id,
        "reused": False,
        "inference": stats.counts(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
