"""Training FLAG-TRADER, by its old address: the names now live in the modules of ``flagcore.training``.

- ``training.losses``: class weights, focal loss, the loss factory;
- ``training.loop``: ``TrainConfig``, ``TrainResult``, ``train_model`` and the shared epoch loop;
- ``training.walk_forward``: ``walk_forward`` and ``write_predictions``;
- ``training.cpcv``: ``RetrainCPCV`` and ``retrain_cpcv``.

Transitional: callers that still import from here move to those modules later.
"""

from __future__ import annotations

from flagcore.training.cpcv import RetrainCPCV, retrain_cpcv  # noqa: F401  (re-export: callers move later)
from flagcore.training.loop import TrainConfig, TrainResult, train_model  # noqa: F401  (re-export)
from flagcore.training.losses import class_weights, focal_loss, forward_return_target  # noqa: F401  (re-export)
from flagcore.training.walk_forward import walk_forward, write_predictions  # noqa: F401  (re-export)
from flagcore.vocab import LOSSES, SEED_CLASS_WEIGHTS  # noqa: F401  (re-export: callers move later)
