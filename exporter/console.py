"""What a long step shows on the terminal: a progress bar (tqdm) where someone watches, a line every so
often where output goes to a log, and none of TensorFlow's own start-up noise unless asked for.

The command line sets the switches in the environment (edge_server.cli: `--progress`, `--verbose`), so
they reach every package and subprocess without the server importing this one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator

from edge_core.progress import PROGRESS_ENV, VERBOSE_ENV, asked_progress  # noqa: F401 (PROGRESS_ENV: tests, callers)


_terminal: tuple = (None, None)  # (the sys.stderr it was made for, a stream on a copy of its fd)


def terminal():
    """Where bars go: stderr as it was before a step captured fd 2. TensorFlow's converters print to
    fd 2 directly, so conversions run with it captured (`tensorflow_lines_dropped`); a bar drawn
    meanwhile must still reach the screen, live."""
    global _terminal
    if _terminal[0] is not sys.stderr:
        try:
            stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
        except (AttributeError, OSError, ValueError):  # no real file behind stderr (a test's capture)
            stream = sys.stderr
        _terminal = (sys.stderr, stream)
    return _terminal[1]


def progress_enabled() -> bool:
    if (asked := asked_progress()) is not None:
        return asked
    try:
        return terminal().isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def _tqdm(**kwargs):
    from tqdm import tqdm  # tqdm.std: never the notebook or asyncio variants tqdm.auto may pick

    return tqdm(file=terminal(), dynamic_ncols=True, mininterval=0.3, **kwargs)


def steps(items: Iterable, desc: str, log: Callable[[str], None] | None = None, every: int = 100,
          total: int | None = None, unit: str = "img") -> Iterator:
    """`items`, shown as they go: a bar where progress is enabled, else "desc: i/N" through `log`
    every `every` items and at the end (nothing without `log`)."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if progress_enabled():
        with _tqdm(total=total, desc=desc, unit=unit, leave=False) as bar:
            for item in items:
                yield item
                bar.update(1)
        return
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        if log and (i % every == 0):
            log(f"{desc}: {i}/{total} {'images' if unit == 'img' else unit}")
    if log and i % every and i:
        log(f"{desc}: {i}/{total} {'images' if unit == 'img' else unit}")


def predict(model, x, batch_size: int, desc: str):
    """Keras `model.predict` with a bar over its batches where progress is enabled (Keras' own bar never)."""
    if not progress_enabled():
        return model.predict(x, batch_size=batch_size, verbose=0)
    import keras

    class Batches(keras.callbacks.Callback):
        def on_predict_begin(self, logs=None):
            self.bar = _tqdm(total=-(-len(x) // batch_size), desc=desc, unit="batch", leave=False)

        def on_predict_batch_end(self, batch, logs=None):
            self.bar.update(1)

        def on_predict_end(self, logs=None):
            self.bar.close()

    return model.predict(x, batch_size=batch_size, verbose=0, callbacks=[Batches()])


def fit_display() -> tuple[list, int]:
    """(callbacks, verbose) for Keras `fit`: tqdm's epoch and batch bars where progress is enabled, else
    Keras' one line per epoch (for logs). Never both, so no epoch is reported twice."""
    if not progress_enabled():
        return [], 2
    from tqdm import tqdm
    from tqdm.keras import TqdmCallback

    return [TqdmCallback(verbose=1, tqdm_class=tqdm, file=terminal(), dynamic_ncols=True)], 0


# TensorFlow's lines a user has no use for: absl's pre-initialisation notice, oneDNN and CPU-feature INFO.
TF_STARTUP_LINES = ("I0000 ", "WARNING: All log messages before absl::InitializeLog()", "To enable the following instructions")
# What TensorFlow's converters print to fd 2 as they go (the TFLite quantizer's settings).
TF_CONVERTER_LINES = ("fully_quantize:",) + TF_STARTUP_LINES


@contextlib.contextmanager
def tensorflow_lines_dropped(drop: tuple[str, ...] = TF_CONVERTER_LINES):
    """Around a conversion: the native lines TensorFlow prints meanwhile are dropped (unless verbose);
    every other line still shows, after the step."""
    if verbose():
        yield
        return
    terminal()  # made before fd 2 is captured, so bars drawn meanwhile still reach the screen
    from edge_core.runtimes import native_info_filtered

    with native_info_filtered(drop=drop):
        yield


# Python warnings from TensorFlow and Keras that say nothing about the user's model.
TF_WARNINGS = (r".*tf.lite.Interpreter is deprecated.*", r"The structure of `inputs` doesn't match the expected structure")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines dropped (unless verbose).

    TensorFlow 2.21 logs "oneDNN custom operations are on" through absl before it reads
    TF_CPP_MIN_LOG_LEVEL, straight to fd 2; a command's first line, or the one-line error
    that follows, should not be buried under it. Lines other than these pass through. Its
    Python logger then says only errors: tf2onnx's calls to deprecated TF1 functions are not news.
    """
    import warnings

    if verbose():
        import tensorflow  # noqa: F401

        return
    for pattern in TF_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if "tensorflow" not in sys.modules:
        with tensorflow_lines_dropped(TF_STARTUP_LINES):
            import tensorflow  # noqa: F401
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
