"""`export(config)`: Keras model -> converted, verified, atomically published bundle.

Every converter is wrapped the same way: timed, the file checked to exist and
load in its runtime, one log line. Verification runs before publishing: an
export under the agreement floor never replaces anything.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge_core.atomic import process_alive
from edge_core.bundle import write_bundle
from edge_core.imageio import DEFAULT_MAX_PIXELS

from . import calibration as calib
from . import quant_recipe
from .console import import_tensorflow_quietly, tensorflow_lines_dropped
from .errors import ExportError, VerificationError
from .formats import AUTO, FORMATS, auto_precisions, lookup, resolve_io_dtype
from .graph import INPUT_NAME, OUTPUT_NAME, check_classifier, output_activation
from .run_images import part_items
from .source import resolve_source
from .verify import table, verify_export


@dataclass
class ExportConfig:
    source: Path
    format: str | None = None  # None: from --device, else tflite
    precision: str | None = None  # None: from --device, else int8; "auto": every precision that passes, in one bundle
    precisions: tuple[str, ...] | None = None  # with "auto": the precisions tried (None: every one of the format)
    labels: Path | None = None
    calibration: Path | None = None  # None: the run's training images
    images: Path | None = None  # verification images; None: the run's validation split
    data: Path | None = None  # the run's data folder where it has moved since training (split.json's images under it)
    device: str | None = None
    min_agreement: float | None = None  # None: the precision's default floor
    out: Path | None = None
    threads: int | None = None
    io_dtype: str | None = None  # tflite int8 only: uint8 (default) | int8 | float32
    calibration_size: int = 200
    verify_size: int = 200
    seed: int = 0
    # What the source model expects (edge_core.preprocessing.Preprocessing); folded into the exported graph.
    preprocessing: object | None = None
    image_size: int | None = None  # for a model built for any input size (None, None, 3)
    unsafe_deserialization: bool = False  # let Keras run a trusted file's Lambda code (safe_mode=False)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # calibration and verification images, as the server counts them


@dataclass
class ExportResult:
    bundle: Path
    meta: dict


def checked(fmt: str):
    """Ultralytics-style wrapper: time the converter, check its file exists and loads, log one line."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(model, precision, out_path: Path, calibration, workdir, log=print, **options):
            t = time.perf_counter()
            try:
                fn(model, precision, out_path, calibration, workdir, log=log, **options)
            except ExportError:
                raise
            except Exception as e:
                raise ExportError(f"{fmt}/{precision} conversion failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
            if not out_path.is_file() or out_path.stat().st_size == 0:
                raise ExportError(f"{fmt}/{precision} conversion reported success but wrote no model file")
            from edge_core.runtimes import RuntimeOptions, open_runtime

            open_runtime(fmt, out_path, RuntimeOptions(threads=1))  # loads, or raises a one-line error
            log(f"export: {fmt}/{precision} written ({out_path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t:.1f} s")
            return out_path

        return inner

    return wrap


def converter_function(fmt: str):
    from . import to_onnx, to_tflite

    return {"tflite": to_tflite.convert, "onnx": to_onnx.convert}[fmt]


def converter(fmt: str):
    return checked(fmt)(converter_function(fmt))


def _defaults(cfg: ExportConfig) -> tuple[str, str, int]:
    profile = {}
    if cfg.device:
        from devices import load_profile

        profile = load_profile(cfg.device)
    fmt = cfg.format or profile.get("export", {}).get("format", "tflite")
    precision = cfg.precision or profile.get("export", {}).get("precision", "int8")
    threads = cfg.threads or profile.get("serve", {}).get("threads") or min(4, os.cpu_count() or 1)
    return fmt, precision, threads


def _items(source, part: str, data: Path | None = None):
    """The run's images of one part (split.json), found wherever the export runs; None for a bare model."""
    if source.split is None or source.run_dir is None:
        return None
    return part_items(source.split, part, source.run_dir, data)


WORKDIR_PREFIX = "edgeport-export-"
# edgeport-export-PID-RANDOM: the pid says whose it is, so a later export can remove folders whose
# exporter was killed (they held a converted model each, forever) and leave a running one's alone.
_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}(\d+)-")


def clean_orphaned_workdirs(tmp: str | Path | None = None) -> list[Path]:
    """Remove temporary export folders whose owning process is dead; returns what was removed."""
    removed = []
    root = Path(tmp or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _WORKDIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not process_alive(int(m[1])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_destination(out: Path, need_bytes: int) -> None:
    """Fail in a second, with one line, where the bundle cannot be written: not after ~27 s of work."""
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe-")
        probe.close()
    except OSError as e:
        raise ExportError(f"Expected a writable folder for the bundle. Received: {str(parent)!r} ({e.strerror})") from None
    free = shutil.disk_usage(parent).free
    if free < need_bytes:
        raise ExportError(f"Expected at least {need_bytes >> 20} MiB free for the bundle. Received: {free >> 20} MiB free in {str(parent)!r}")


def export(cfg: ExportConfig, log=print) -> ExportResult:
    fmt, precision, threads = _defaults(cfg)
    auto = precision == AUTO
    precisions = list(cfg.precisions or auto_precisions(fmt)) if auto else [precision]
    specs = {p: lookup(fmt, p)[1] for p in precisions}
    fmt_spec = FORMATS[fmt]
    # With auto, --io-dtype is for the rows that offer it (tflite/int8); the others keep their default.
    io_dtypes = {p: resolve_io_dtype(fmt, p, cfg.io_dtype if not auto or cfg.io_dtype in specs[p].io_dtypes else None)
                 for p in precisions}
    floors = {p: spec.min_agreement if cfg.min_agreement is None else cfg.min_agreement for p, spec in specs.items()}
    if not 0.0 <= (cfg.min_agreement or 0.0) <= 1.0:
        raise ExportError(f"--min-agreement must be between 0 and 1. Received: {cfg.min_agreement}")
    source = resolve_source(cfg.source, cfg.labels, unsafe_deserialization=cfg.unsafe_deserialization)
    out = Path(cfg.out) if cfg.out else Path("bundles") / f"{source.name}.{fmt}-{precision}"

    # Resolve every input before the slow steps, so a bad path fails in a second, not after conversion.
    verify_items = calib.folder_items(cfg.images, source.labels) if cfg.images else _items(source, "val", cfg.data)
    calib_items = None
    calibrated = [p for p in precisions if specs[p].calibrated]
    if calibrated:
        calib_items = calib.folder_items(cfg.calibration, source.labels) if cfg.calibration else _items(source, "train", cfg.data)
        if not calib_items and not auto:
            raise ExportError(f"{fmt}/{precision} needs calibration images: pass --calibration DIR (a few hundred real images)")
    left_out: dict[str, str] = {}
    if auto and not calib_items:
        for p in calibrated:  # auto goes on without them; the rows say why
            left_out[p] = "needs calibration images (--calibration DIR)"
            precisions.remove(p)
        if not precisions:
            raise ExportError(f"{fmt}/auto: every precision tried needs calibration images: pass --calibration DIR")
    if not verify_items:
        verify_items = calib_items or (calib.folder_items(cfg.calibration, source.labels) if cfg.calibration else None)
    if not verify_items:
        raise ExportError("Verification needs images: pass --images DIR (held-out images, ideally one subfolder per class)")
    # The bundle is at most about as large as the source model per precision (int8: a quarter), plus bundle.json.
    check_destination(out, len(precisions) * _size_of(source.model_path) + (1 << 20))
    clean_orphaned_workdirs()

    import_tensorflow_quietly()  # the first TensorFlow import: after the cheap checks

    model = source.load_model()
    size = check_classifier(model, cfg.image_size)  # before any image is decoded
    pre = cfg.preprocessing
    if pre is not None and not pre.identity:
        from .graph import with_preprocessing

        model = with_preprocessing(model, pre)  # the bundle takes raw 0-255 RGB like every other
        if source.reference is not None:
            source.reference.preprocessing = pre  # the source file expects preprocessed input
        log(f"preprocessing: {pre.describe()}, folded into the graph")
    activation = output_activation(model)
    x_cal = None
    if calib_items:
        log(f"calibration: decoding {min(len(calib_items), cfg.calibration_size)} images")
        x_cal, _ = calib.load_images(calib.spread(calib_items, cfg.calibration_size, cfg.seed), size, log, cfg.max_pixels)
    verify_items = calib.spread(verify_items, cfg.verify_size, cfg.seed)
    x_ver, y_ver = calib.load_images(verify_items, size, log, cfg.max_pixels)
    job = _Job(cfg, source, model, fmt, fmt_spec, size, activation, x_cal, x_ver, y_ver, verify_items, threads, out)

    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    try:
        passed = []  # (model file, meta) of each precision that passed its floor, the bundle's default first
        for p in precisions:
            try:
                passed.append(_export_precision(job, p, io_dtypes[p], floors[p], workdir / p, log))
            except ExportError as e:  # a failed floor or conversion: with auto, that row is left out
                if not auto:
                    raise
                left_out[p] = str(e)
                log(f"export: {fmt}/{p} left out of the bundle: {str(e).splitlines()[0]}")
        if auto:
            log(auto_table(fmt, passed, left_out, floors))
            if not passed:
                raise VerificationError(f"{fmt}/auto: no precision passed its floor, nothing was published: {out} is as it was. "
                                        + " ".join(f"{p}: {why}" for p, why in left_out.items()))
        (model_file, meta), rest = passed[0], passed[1:]
        if auto:
            meta["precisions_tried"] = [{"precision": m["precision"], "top1_agreement": m["verification"]["top1_agreement"],
                                         "min_agreement": floors[m["precision"]], "in_bundle": True} for _, m in passed] + [
                                        {"precision": p, "in_bundle": False, "why": why} for p, why in left_out.items()]
        write_bundle(out, model_file, meta, more_models=rest or None)  # also clears what a killed export left beside `out`
    except OSError as e:  # a full disk, a read-only folder: one line, not a traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise ExportError(f"Expected to write the export. Received: {e.strerror or e}{where}; {out} is as it was") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if source.workdir is not None:
            shutil.rmtree(source.workdir, ignore_errors=True)
    log(f"bundle saved: {out}")
    return ExportResult(out, meta)


@dataclass
class _Job:
    """What every precision of one export shares: the model, its images, where it goes."""
    cfg: ExportConfig
    source: object
    model: object
    fmt: str
    fmt_spec: object
    size: int
    activation: str
    x_cal: object
    x_ver: object
    y_ver: object
    verify_items: list
    threads: int
    out: Path


def _export_precision(job: _Job, precision: str, io_dtype: str, floor: float, workdir: Path, log) -> tuple[Path, dict]:
    """Convert and verify one precision; its model file and bundle meta, or VerificationError under the floor."""
    fmt, fmt_spec, model, out = job.fmt, job.fmt_spec, job.model, job.out
    workdir.mkdir()
    # int8 of a known backbone: all-int8 first; its float-island variant only when all-int8 falls
    # short of the goal (exporter/quant_recipe.py). Each is converted and verified; the table is kept.
    candidates = quant_recipe.variants(model) if precision == "int8" else [(precision, ())]
    tried = []
    for i, (variant, keep_float) in enumerate(candidates):
        vdir = workdir / f"variant-{i}"
        vdir.mkdir()
        model_file = vdir / f"model{fmt_spec.suffix}"
        try:
            correction = _convert(model, fmt, precision, model_file, job.x_cal, vdir, io_dtype, keep_float, job.threads, log)
            log(f"verify: {len(job.x_ver)} held-out images through {fmt_spec.runtime} vs "
                f"{'ONNX Runtime on the source file' if job.source.reference is not None else 'Keras'}"
                + (f" ({variant})" if len(candidates) > 1 else ""))
            figures = verify_export(model, model_file, fmt, job.x_ver, job.y_ver, job.activation, threads=job.threads,
                                    paths=[p for p, _ in job.verify_items], reference=job.source.reference,
                                    max_pixels=job.cfg.max_pixels)
        except ExportError as e:
            if not tried:  # the first variant is the export itself
                raise
            log(f"int8 variant {variant!r} skipped: {e}")  # a second try that fails leaves the first standing
            break
        tried.append({"variant": variant, "float_layers": list(keep_float), "model_file": model_file,
                      "figures": figures, "correction": correction})
        if figures["top1_agreement"] >= quant_recipe.AGREEMENT_GOAL:
            break
    chosen = quant_recipe.choose(tried)
    model_file, figures, correction = chosen["model_file"], chosen["figures"], chosen["correction"]
    if len(tried) > 1:
        log(variants_table(tried, chosen))
    log(table([{"format": fmt, "precision": precision, "verification": figures}]))
    fd = figures["fast_decode"]
    log("fast decoding: " + (fd["note"] if fd["top1_agreement"] is None else
        f"top-1 agreement with exact decoding {100 * fd['top1_agreement']:.1f}% on {fd['images']} images"))
    if not figures["dynamic_batch"]["ok"]:
        log(f"warning: {fmt_spec.runtime} did not run a batch of {figures['dynamic_batch']['batch']} like single images: "
            f"{figures['dynamic_batch']}; serve one image per call")
    figures["min_agreement"] = floor
    if figures["top1_agreement"] < floor:
        raise VerificationError(
            f"{fmt}/{precision} agrees with the Keras model on {100 * figures['top1_agreement']:.1f}% of "
            f"{figures['images']} images; the floor is {100 * floor:.1f}%. {changed_answers(figures)}"
            f"Nothing was published: {out} is as it was. "
            "Try more or more representative --calibration images, another precision, or lower --min-agreement."
        )
    n_cal = 0 if job.x_cal is None or not fmt_spec.precisions[precision].calibrated else len(job.x_cal)
    meta = _bundle_meta(job.source, fmt, precision, model_file, job.activation, job.size, figures, job.cfg.device, n_cal)
    meta["export"]["io_dtype"] = io_dtype
    if correction:
        meta["export"]["bias_correction"] = correction
    if precision == "int8":
        meta["export"]["float_layers"] = chosen["float_layers"]
        meta["export"]["int8_variants"] = [
            {"variant": t["variant"], "float_layers": t["float_layers"], "top1_agreement": t["figures"]["top1_agreement"],
             "exported_accuracy": t["figures"].get("exported_accuracy"), "latency_ms_p50": t["figures"]["latency_ms"]["p50"],
             "chosen": t is chosen} for t in tried]
    if job.cfg.preprocessing is not None:
        meta["source"]["preprocessing"] = job.cfg.preprocessing.to_dict() | {"folded_into_graph": True}
    return model_file, meta


def auto_table(fmt: str, passed: list[tuple[Path, dict]], left_out: dict[str, str], floors: dict[str, float]) -> str:
    """`--precision auto`: which precisions go into the bundle and which are left out, and why."""
    lines = [f"precision auto: {len(passed)} of {len(passed) + len(left_out)} {fmt} precisions pass their floor and go into "
             "the bundle; the server times them on the device and serves the fastest",
             f"  {'precision':<10} {'agreement':>9} {'floor':>6} {'p50 ms':>8}  bundle"]
    for i, (_, m) in enumerate(passed):
        v = m["verification"]
        lines.append(f"  {m['precision']:<10} {100 * v['top1_agreement']:>8.1f}% {100 * floors[m['precision']]:>5.1f}% "
                     f"{v['latency_ms']['p50']:>8.2f}  {'in (default entry: model' + FORMATS[fmt].suffix + ')' if i == 0 else 'in'}")
    for p, why in left_out.items():
        lines.append(f"  {p:<10} {'-':>9} {100 * floors[p]:>5.1f}% {'-':>8}  left out: {why.splitlines()[0][:160]}")
    return "\n".join(lines)


def _convert(model, fmt, precision, model_file: Path, x_cal, workdir: Path, io_dtype, keep_float, threads, log):
    """Convert once. int8 files get every layer's bias corrected inside the converter (exporter/layer_bias.py);
    returns that correction's record (None for other precisions)."""
    record: dict = {}
    extra = {"threads": threads, "record": record} if precision == "int8" else {}
    with tensorflow_lines_dropped():
        converter(fmt)(model, precision, model_file, x_cal, workdir, log=log, io_dtype=io_dtype, keep_float=keep_float, **extra)
    return record.get("bias_correction")


def variants_table(tried: list[dict], chosen: dict) -> str:
    """The int8 variants measured on the held-out images, and which one is published."""
    base = tried[0]["figures"]["latency_ms"]["p50"]
    lines = [f"int8 variants (the first to agree on {100 * quant_recipe.AGREEMENT_GOAL:.0f}% is published, else the best):",
             f"  {'variant':<20} {'agreement':>9} {'accuracy':>9} {'p50 ms':>8} {'vs all-int8':>11}"]
    for t in tried:
        f = t["figures"]
        acc = "-" if f.get("exported_accuracy") is None else f"{100 * f['exported_accuracy']:.1f}%"
        p50 = f["latency_ms"]["p50"]
        lines.append(f"  {t['variant']:<20} {100 * f['top1_agreement']:>8.1f}% {acc:>9} {p50:>8.2f} {p50 / base:>10.2f}x"
                     + ("  <- published" if t is chosen else ""))
    return "\n".join(lines)


def changed_answers(figures: dict) -> str:
    """What the changed answers were: near-ties of an unsure model (accuracy holds) or real damage."""
    c = figures["changed"]
    text = (f"{c['count']} answers changed, {c['reference_unsure']} of them where the Keras model's top-1 was under "
            f"{100 * c['unsure_below']:.0f}% sure")
    ref, got = figures.get("reference_accuracy"), figures.get("exported_accuracy")
    if ref is not None and got is not None:
        text += f"; accuracy on the labelled images {100 * ref:.1f}% -> {100 * got:.1f}%"
    return text + ". "


def _size_of(path) -> int:
    p = Path(path)
    try:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    except OSError:
        return 0


def _bundle_meta(source, fmt, precision, model_file: Path, activation, size, figures, device, n_calibration) -> dict:
    from edge_core.runtimes import RuntimeOptions, open_runtime

    rt = open_runtime(fmt, model_file, RuntimeOptions(threads=1))
    rep = source.report
    return {
        "name": source.name,
        "version": "1",
        "format": fmt,
        "precision": precision,
        "input": rt.input.to_dict() | {"name": INPUT_NAME, "layout": "NHWC", "color_order": "RGB", "value_range": [0, 255], "size": size},
        "output": rt.output.to_dict() | {"name": OUTPUT_NAME, "activation": activation},
        "labels": source.labels,
        "source": {
            "model_sha256": source.sha256(),
            "model_file": str(source.model_path),
            "backbone": rep.get("backbone"),
            "strategy": rep.get("strategy"),
            "quadrant": rep.get("quadrant"),
            "head": rep.get("head"),
            "image_size": size,
        },
        "export": {"device": device, "calibration_images": n_calibration},
        "verification": figures,
    }
