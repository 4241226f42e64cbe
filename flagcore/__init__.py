"""flagcore: validation review for trading models that look fine on paper and do nothing in a backtest.

Heavy modules (torch, peft) load on first use, so ``import flagcore`` and ``flagcore --help`` stay fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "FlagcoreError": "flagcore.errors",
    "FlagTraderConfig": "flagcore.model",
    "PRESETS": "flagcore.model",
    "build_model": "flagcore.model",
    "count_parameters": "flagcore.model",
    "load_checkpoint": "flagcore.checkpoint",
    "save_checkpoint": "flagcore.checkpoint",
    "import_checkpoint": "flagcore.checkpoint",
    "load_dataset": "flagcore.data",
    "temporal_split": "flagcore.data",
    "predict": "flagcore.inference",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'flagcore' has no attribute {name!r}")
