"""taskcodec: a learned lossy image codec for classifiers, plus standard-codec baselines.

Plain PyTorch only: nothing here imports Lightning, Hydra or the datamodules. ``load_client`` and
``load_server`` (:mod:`taskcodec.api`) are the Python API; importing this package stays cheap
(torch is imported when they are first called).
"""

from taskcodec.errors import (
    BitstreamError,
    CheckpointError,
    CodecError,
    ConfigError,
    DataError,
    OverloadedError,
    TaskcodecError,
)

__version__ = "0.1.0"


def load_client(path, native_size: bool = False):
    """An exported encoder as a client: ``.compress(images) -> bytes`` (see :mod:`taskcodec.api`)."""
    from taskcodec.api import load_client as load

    return load(path, native_size)


def load_server(path):
    """An exported decoder as a server: ``.classify(data) -> labels`` (see :mod:`taskcodec.api`)."""
    from taskcodec.api import load_server as load

    return load(path)


__all__ = [
    "BitstreamError",
    "CheckpointError",
    "CodecError",
    "ConfigError",
    "DataError",
    "OverloadedError",
    "TaskcodecError",
    "__version__",
    "load_client",
    "load_server",
]
