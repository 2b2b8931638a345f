"""taskcodec: a learned lossy image codec for classifiers, plus standard-codec baselines.

Plain PyTorch only: nothing here imports Lightning, Hydra or the datamodules.
"""

from taskcodec.errors import (
    BitstreamError,
    CheckpointError,
    CodecError,
    ConfigError,
    DataError,
    TaskcodecError,
)

__version__ = "0.1.0"

__all__ = [
    "BitstreamError",
    "CheckpointError",
    "CodecError",
    "ConfigError",
    "DataError",
    "TaskcodecError",
    "__version__",
]
