"""Edge server: serve an edgeport bundle with LiteRT or ONNX Runtime over HTTP.

Never imports TensorFlow: a device installs only this package's [edge] extra.
"""

__version__ = "0.1.0"
