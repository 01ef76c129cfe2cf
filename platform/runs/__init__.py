"""What a run stands on and leaves behind, for training, evaluation and sweeps alike: the Ray
cluster it connects to (``cluster``), its MLflow run (``tracking``) and its checkpoints
(``checkpoints``).  Imports nothing from the other rooms of ``fovea.platform``."""
