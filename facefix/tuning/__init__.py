"""Training and personalisation: the fast restorer now; dual-pivot stages and album adaptation later."""

from facefix.tuning.fast_train import StepInfo, TrainConfig, TrainResult, train_fast

__all__ = ["StepInfo", "TrainConfig", "TrainResult", "train_fast"]
