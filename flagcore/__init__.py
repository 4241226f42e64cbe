"""flagcore: validation review for trading models that look fine on paper and do nothing in a backtest.

Heavy modules (torch, peft) load on first use, so ``import flagcore`` and ``flagcore --help`` stay fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "FlagcoreError": "flagcore.errors",
    "FlagTraderConfig": "flagcore.models.flag_trader_config",
    "PRESETS": "flagcore.models.flag_trader_config",
    "build_model": "flagcore.models.flag_trader",
    "count_parameters": "flagcore.models.flag_trader",
    "load_checkpoint": "flagcore.models.checkpoint",
    "save_checkpoint": "flagcore.models.checkpoint",
    "import_checkpoint": "flagcore.models.checkpoint",
    "load_dataset": "flagcore.data.dataset",
    "temporal_split": "flagcore.data.dataset",
    "predict": "flagcore.models.inference",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flagcore' has no attribute {name!r}")
