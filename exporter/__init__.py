"""Keras -> TFLite / ONNX with quantization, calibration and post-export verification.

`from exporter import ExportConfig, export` is the Python API the CLI mirrors.
"""

from .errors import ExportError, VerificationError


def export(config, **kwargs):
    from .pipeline import export as _export

    return _export(config, **kwargs)


def __getattr__(name):
    if name == "ExportConfig":
        from .pipeline import ExportConfig

        return ExportConfig
    raise AttributeError(name)


__all__ = ["ExportConfig", "ExportError", "VerificationError", "export"]
