"""Meta-training of the hypernetwork: the loop (with validation, early stopping and calibration),
checkpoints, data-parallel training, initialisation and warm starts, and the fine-tune loss."""

from .distributed import distributed, init_distributed
from .finetune import finetune_heads
from .init import init_biases, warm_start
from .loop import TrainingData, TrainResult, batch_loss, train, validate

__all__ = ["distributed", "init_distributed", "finetune_heads", "init_biases", "warm_start", "TrainingData",
           "TrainResult", "batch_loss", "train", "validate"]
