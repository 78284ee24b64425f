"""Meta-training of the hypernetwork: what it works on (:mod:`.data`), its objective
(:mod:`.objective`), the loop with early stopping (:mod:`.loop`), validation (:mod:`.validation`),
what is chosen on validation users after training (:mod:`.selection`), checkpoints,
data-parallel training, initialisation and warm starts, and the fine-tune loss. Imports point one
way: loop -> selection -> validation -> objective -> data."""

from .data import TrainingData, batch_user_feats
from .distributed import distributed, init_distributed
from .finetune import finetune_heads
from .init import init_biases, warm_start
from .loop import TrainResult, train
from .objective import batch_loss
from .validation import validate

__all__ = ["distributed", "init_distributed", "finetune_heads", "init_biases", "warm_start", "TrainingData",
           "TrainResult", "batch_loss", "batch_user_feats", "train", "validate"]
