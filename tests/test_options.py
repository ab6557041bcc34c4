"""One declaration per option: the parsers are built from the config dataclasses, and a device
profile fills only what no flag gave."""

import argparse

from edge_core.options import add_arguments, layered, values
from edge_core.service import ServiceOptions
from edge_server.settings import ServerSettings
from trainer.config import TrainConfig


def test_train_flags_and_config_are_one_declaration():
    p = argparse.ArgumentParser()
    add_arguments(p, TrainConfig)
    cfg = TrainConfig(**values(TrainConfig, p.parse_args(["data", "--out", "o", "--no-augment", "--strategy", "2"])))
    assert cfg.out_dir.name == "o" and cfg.augment is False and cfg.strategy == 2
    defaults = TrainConfig(**values(TrainConfig, p.parse_args(["data"])))
    assert defaults == TrainConfig(data_dir="data")  # argparse's defaults are the dataclass's


def test_serve_layers_flag_then_profile_then_default():
    p = argparse.ArgumentParser()
    add_arguments(p, ServerSettings)
    add_arguments(p, ServiceOptions, layered=True)
    profile = {"workers": 2, "threads": 2, "solo_threads": 0, "onnx_providers": ["CUDAExecutionProvider"]}
    opts = ServiceOptions(**layered(ServiceOptions, p.parse_args(["b", "--threads", "3"]), profile))
    assert (opts.pool_size, opts.threads, opts.solo_threads) == (2, 3, 0)  # 0 is a setting, not "unset"
    assert opts.onnx_providers == ("CUDAExecutionProvider",) and opts.decode == "auto"
    settings = ServerSettings(**values(ServerSettings, p.parse_args(["b", "--max-body-mb", "0.5", "--no-access-log"])))
    assert settings.max_body_bytes == 512 * 1024 and settings.access_log is False and settings.port == 8080
