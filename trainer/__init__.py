"""Keras transfer learning: data, backbones, quadrant -> strategy, heads, fit, report.

`from trainer import TrainConfig, train` is the Python API the CLI mirrors.
TensorFlow is imported only when training starts.
"""

from .config import TrainConfig
from .errors import TrainerError


def train(config: TrainConfig, **kwargs):
    from .fit import train as _train  # TensorFlow loads here, not at import

    return _train(config, **kwargs)


__all__ = ["TrainConfig", "TrainerError", "train"]
