"""The torch-free client: an ONNX analysis transform, numpy, onnxruntime, Pillow and the compiled coder.

    pip install "taskcodec[client]"
    python -m taskcodec.client compress photos/ -m client-<id>.onnx -o photos.tca

It writes the same container files as ``taskcodec compress`` (records of the same format, the same
model id), which the PyTorch server classifies unchanged. Nothing here imports torch
(``tests/test_onnx_client.py`` checks it in a fresh process).
"""

from taskcodec.client.runtime import OnnxClient, load_onnx_client

__all__ = ["OnnxClient", "load_onnx_client"]
