"""ImageNet weights through Keras' own loading code and cache, offline included.

`keras.applications.X(weights="imagenet")` looks for its checkpoint in
`$KERAS_HOME/models/` (default `~/.keras/models/`) and downloads it only when
it is missing. So whoever has the file there (copied from another machine, or
downloaded once) trains offline with the same code path as everyone else.

One wrinkle: MobileNetV2 has a separate checkpoint per input resolution (96,
128, 160, 192, 224 px; any other size loads the 224 one). Asking for 160 px
with only the 224 file cached would try a download. Convolution weights do not
depend on the input size, so when the exact checkpoint is not cached but
another resolution's is, we load that one through Keras at its own size and
copy the weights across, and say so: the run reports which checkpoint it used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import TrainerError

# Keras' file names for the no-top checkpoints that come in several resolutions
# (keras/src/applications/mobilenet_v2.py); the other backbones have one file.
MULTI_RESOLUTION = {
    "mobilenet_v2": ((96, 128, 160, 192, 224), "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"),
}


@dataclass
class LoadedWeights:
    source: str  # "imagenet", "none" or the path given
    checkpoint: str | None  # the file Keras loaded, when known
    resolution: int | None  # the input size that checkpoint was trained at, when known
    note: str | None = None  # said to the user when we did something they did not ask for


def cache_name(spec_name: str, alpha: float | None, rows: int) -> str:
    """Keras' file name for a multi-resolution backbone's no-top checkpoint."""
    return MULTI_RESOLUTION[spec_name][1].format(alpha=float(alpha if alpha is not None else 1.0), rows=rows)


def temporary_keras_home(weights_file: Path, name: str) -> Path:
    """A temporary KERAS_HOME, set in this process's environment (and so its children's), whose cache holds
    `weights_file` under Keras' own file `name` when that file exists (else the cache is empty): with it,
    weights="imagenet" loads offline through Keras' real code. Keras reads KERAS_HOME when it is first
    imported, so call this before that. Removed when the process exits."""
    import atexit
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="edgeport-keras-home-"))
    atexit.register(shutil.rmtree, home, True)
    (home / "models").mkdir()
    if Path(weights_file).is_file():
        shutil.copyfile(weights_file, home / "models" / name)
    os.environ["KERAS_HOME"] = str(home)
    return home


def keras_cache_dir() -> Path:
    """Where Keras looks for application weights (after it has been imported)."""
    from keras.src.backend import config

    return Path(os.path.expanduser(config.keras_home())) / "models"


def keras_resolution(spec_name: str, size: int) -> int | None:
    """The checkpoint resolution Keras picks for this input size, for multi-resolution backbones."""
    if spec_name not in MULTI_RESOLUTION:
        return None
    sizes, _ = MULTI_RESOLUTION[spec_name]
    return size if size in sizes else 224


def cached_resolutions(spec_name: str, alpha: float | None) -> list[int]:
    """Resolutions whose no-top checkpoint for this width is in Keras' cache."""
    if spec_name not in MULTI_RESOLUTION:
        return []
    cache = keras_cache_dir()
    return [r for r in MULTI_RESOLUTION[spec_name][0] if (cache / cache_name(spec_name, alpha, r)).is_file()]


def load_imagenet(spec, ctor, size: int, kwargs: dict):
    """(base, LoadedWeights): the ImageNet base at `size`, from Keras' cache or its download."""
    wanted = keras_resolution(spec.name, size)
    cached = cached_resolutions(spec.name, kwargs.get("alpha"))
    use = wanted
    note = None
    if wanted is not None and wanted not in cached and cached:
        # The nearest cached resolution at or above the one asked for, else the largest.
        use = min((r for r in cached if r >= wanted), default=max(cached))
        note = (f"the {wanted} px ImageNet checkpoint is not in Keras' cache ({keras_cache_dir()}); "
                f"using the cached {use} px one (convolution weights do not depend on input size)")
    try:
        with warnings.catch_warnings():
            # Keras warns that a size outside its list loads the 224 px checkpoint: known, and reported.
            warnings.filterwarnings("ignore", message=".*will be loaded as the default")
            if use == wanted:  # what Keras itself picks (or a single-file backbone)
                base = ctor(weights="imagenet", **kwargs)
            else:
                donor = ctor(weights="imagenet", **{**kwargs, "input_shape": (use, use, 3)})
                base = ctor(weights=None, **kwargs)
                base.set_weights(donor.get_weights())
    except Exception as e:  # offline, or no pretrained file for this alpha/size
        expected = ""
        if spec.name in MULTI_RESOLUTION:
            expected = f" (expected {keras_cache_dir() / cache_name(spec.name, kwargs.get('alpha'), wanted)})"
        raise TrainerError(
            f"Could not load ImageNet weights for {spec.name}{expected}: {type(e).__name__}: {str(e).splitlines()[0][:200]}. "
            "Put the Keras checkpoint in Keras' cache ($KERAS_HOME/models, default ~/.keras/models) once, "
            "pass --weights PATH to a saved weights file, or train from scratch with --weights none. "
            "Received: weights='imagenet'"
        ) from None
    checkpoint = cache_name(spec.name, kwargs.get("alpha"), use) if use is not None else None
    return base, LoadedWeights("imagenet", checkpoint, use, note)


def imagenet_available(spec, alpha: float | None) -> bool:
    """Can `weights="imagenet"` load without a download? (Only answerable for backbones
    whose cache file names we know; for the others we assume not.)"""
    return bool(cached_resolutions(spec.name, alpha))
