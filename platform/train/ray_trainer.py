"""The ``TorchTrainer`` runs use: Ray Train's, less its placement-group cleaner.

Ray Train starts a detached ``PlacementGroupCleaner`` beside every run's controller; it removes
the run's placement group once the State API says the controller is gone. It also takes a
missing State API answer for "gone" (``is_actor_alive`` returns false when the lookup comes back
empty; the review of ray-project/ray PR 65447 names it). On a loaded machine a live run then
loses both workers at once ("A worker health check failed ... Destroying worker since its
placement group was removed"), and the failure policy spends a restart on it, or, with
``cluster.max_failures=0``, the run fails.

Without the cleaner, the placement group of a controller that dies ungracefully (the controller
process itself killed, not a worker) is released when the job that owns it ends: for
``jobs/stage1.py`` and a sweep's trials, when the driver exits.
"""

from __future__ import annotations

import logging

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

log = logging.getLogger("fovea.trainer")


class RunTrainer(TorchTrainer):
    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        kept = [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]
        if len(kept) == len(callbacks):
            log.warning("Ray Train no longer adds a PlacementGroupCleanerCallback: "
                        "platform/train/ray_trainer.py has nothing left to remove")
        return kept
