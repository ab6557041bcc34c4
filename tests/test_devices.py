"""Device profiles and `edgeport deploy`: offline and fast.

The deploy tests use a small hand-made bundle (write_bundle with stand-in
model bytes): deploy checks the bundle's schema and sha256, never runs the
model, so nothing here needs a trained model. The one test that installs a
deploy folder for real (venv + PyPI wheels + serve + predict) is opt-in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import devices
from devices import deploy as dp
from edge_core.bundle import sha256_file, write_bundle

ALL_DEVICES = ["jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "x86-64"]
INSTALLABLE = [d for d in ALL_DEVICES if d != "jetson-nano"]


def make_bundle(dest: Path, fmt: str = "tflite", name: str = "shapes") -> Path:
    model = dest.parent / f"{name}.{fmt}.src"
    model.write_bytes(b"stand-in model bytes " * 100)
    meta = {
        "name": name, "version": "1", "format": fmt, "precision": "int8",
        "labels": ["circle", "square", "triangle"],
        "input": {"name": "x", "shape": [-1, 64, 64, 3], "dtype": "uint8"},
        "output": {"name": "y", "shape": [-1, 3], "dtype": "uint8"},
    }
    return write_bundle(dest, model, meta)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_server.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "shapes.tflite-int8")


# --------------------------------------------------------------------------- profiles

def test_every_profile_loads_with_the_required_fields():
    assert devices.list_profiles() == ALL_DEVICES
    pins = dp.load_pins()
    for name in ALL_DEVICES:
        profile = devices.load_profile(name)
        assert devices.missing_fields(profile) == [], name
        assert profile["name"] == name
        for fmt, runtimes in profile["install"]["runtimes"].items():
            assert fmt in dp.RUNTIME_CHECKS
            assert all(r in pins["runtime"] for r in runtimes), (name, runtimes)


def test_jetson_profiles_prefer_tensorrt_then_cuda_then_cpu():
    for name in ("jetson-orin-nano", "jetson-nano"):
        providers = devices.load_profile(name)["serve"]["onnx_providers"]
        assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_unknown_device_names_expected_and_received():
    with pytest.raises(devices.DeviceError, match=r"expected one of \[.*raspberry-pi-4.*\]\. Received: device='pi9'"):
        devices.load_profile("pi9")


@pytest.mark.parametrize("device", INSTALLABLE)
def test_requirements_are_pinned_and_free_of_tensorflow(device):
    profile = devices.load_profile(device)
    for fmt in profile["install"]["runtimes"]:
        text = dp.requirements_for(profile, fmt)
        lines = [l for l in text.splitlines() if l and not l.startswith(("#", "--"))]
        assert lines and all("==" in l.split(";")[0] for l in lines)
        names = {l.split("==")[0] for l in lines}
        assert not any("tensorflow" in n or n in ("keras", "tf2onnx") for n in names), names
        assert {"flask", "waitress", "pillow", "numpy"} <= names


def test_requirements_pick_the_runtime_per_device_and_format():
    pi = dp.requirements_for(devices.load_profile("raspberry-pi-4"), "tflite")
    assert "ai-edge-litert==2.3.0; platform_machine == 'aarch64'" in pi
    assert "tflite-runtime==2.14.0; platform_machine == 'armv7l'" in pi  # 32-bit OS fallback
    assert "numpy==1.26.4; platform_machine == 'armv7l'" in pi  # ... with numpy < 2
    assert "onnxruntime" not in pi  # a tflite bundle does not need ONNX Runtime
    jetson = dp.requirements_for(devices.load_profile("jetson-orin-nano"), "onnx")
    assert "--extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126" in jetson
    assert "onnxruntime-gpu==" in jetson and "\nonnxruntime==" not in jetson
    assert "tomli==" in jetson  # JetPack 6's Python is 3.10
    # a line with its own marker keeps it, combined with the block's
    x86 = dp.requirements_for(devices.load_profile("x86-64"), "onnx")
    assert "onnxruntime==1.32.0; (python_version >= '3.11') and (platform_machine == 'aarch64' or platform_machine == 'x86_64')" in x86


def test_check_requirements_rejects_floating_and_tensorflow_lines():
    with pytest.raises(devices.DeviceError, match=r"Expected every requirement pinned with ==\. Received: 'flask>=3'"):
        dp.check_requirements("flask>=3\n")
    with pytest.raises(devices.DeviceError, match=r"Expected no TensorFlow on a device\. Received: 'tensorflow==2.21.0'"):
        dp.check_requirements("# ok\ntensorflow==2.21.0\n")


# --------------------------------------------------------------------------- deploy

def test_deploy_writes_a_self_contained_folder(bundle, tmp_path):
    out = tmp_path / "pi4"
    r = run_cli("deploy", str(bundle), "--device", "raspberry-pi-4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "bundle", "deploy.env", "deploy.json", "edgeport.service", "install.sh", "requirements.txt", "wheels"]
    # the bundle copy is whole and hashes right
    meta = json.loads((out / "bundle" / "bundle.json").read_text())
    assert sha256_file(out / "bundle" / "model.tflite") == meta["sha256"] == sha256_file(bundle / "model.tflite")
    manifest = json.loads((out / "deploy.json").read_text())
    assert manifest["device"] == "raspberry-pi-4" and manifest["bundle"]["sha256"] == meta["sha256"]
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest, rel
    # the unit carries the device's settings and the hardening
    unit = (out / "edgeport.service").read_text()
    assert "--device raspberry-pi-4 --host 127.0.0.1 --port 8080 --workers 2 --threads 2" in unit
    for line in ("User=edgeport", "Restart=on-failure", "MemoryMax=600M", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateDevices=yes", "CapabilityBoundingSet="):
        assert line in unit.splitlines(), line
    assert "$" not in unit  # every placeholder was filled
    assert subprocess.run(["bash", "-n", str(out / "install.sh")]).returncode == 0
    assert subprocess.run(["bash", "-n", str(out / "deploy.env")]).returncode == 0
    assert os.access(out / "install.sh", os.X_OK)
    readme = (out / "README.md").read_text()
    assert "sudo bash pi4/install.sh" in readme and "/v2/health/ready" in readme
    reqs = [l for l in (out / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert reqs and not any("tensorflow" in l.lower() for l in reqs)


def test_deploy_wheel_carries_only_the_device_code(bundle, tmp_path):
    out = dp.deploy(dp.DeployOptions(bundle, "x86-64", tmp_path / "x86"), log=lambda m: None).out
    (wheel,) = (out / "wheels").glob("edgeport-*-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        record = zf.read(next(n for n in names if n.endswith("RECORD"))).decode()
    assert "edge_server/cli.py" in names and "devices/profiles/raspberry-pi-4.toml" in names
    assert "devices/install/install.sh" in names and "edge_core/bundle.py" in names
    assert not any(n.startswith(("trainer/", "exporter/", "tests/")) or "__pycache__" in n for n in names)
    assert "edgeport = edge_server.cli:main" in entry and "devices = devices.cli:register" in entry
    assert all(n in record for n in names)


def test_deploy_flags_override_the_profile_and_jetson_gets_the_gpu(tmp_path):
    onnx = make_bundle(tmp_path / "shapes.onnx-fp16", fmt="onnx")
    out = dp.deploy(dp.DeployOptions(onnx, "jetson-orin-nano", tmp_path / "orin", port=9000, workers=3, threads=4), log=lambda m: None).out
    unit = (out / "edgeport.service").read_text()
    assert "--port 9000 --workers 3 --threads 4" in unit
    assert "PrivateDevices=no" in unit and "SupplementaryGroups=video render" in unit
    assert "TimeoutStartSec=900" in unit
    env = (out / "deploy.env").read_text()
    assert "TensorrtExecutionProvider" in env  # install.sh fails if the wheel lacks the provider
    assert "onnxruntime-gpu==" in (out / "requirements.txt").read_text()


@pytest.mark.parametrize("case", ["no_bundle_json", "tampered", "bare_file", "missing"])
def test_a_bad_bundle_is_a_one_line_error_and_leaves_nothing(bundle, tmp_path, case):
    target = bundle
    if case == "no_bundle_json":
        (bundle / "bundle.json").unlink()
    elif case == "tampered":
        (bundle / "model.tflite").write_bytes(b"changed")
    elif case == "bare_file":
        target = bundle / "model.tflite"
    else:
        target = tmp_path / "nope"
    out = tmp_path / "out"
    r = run_cli("deploy", str(target), "--device", "raspberry-pi-4", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeport deploy: error: Expected"), r.stderr
    assert "Received" in lines[0] or "received" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_unknown_or_unsupported_device_is_a_one_line_error(bundle, tmp_path):
    r = run_cli("deploy", str(bundle), "--device", "pi9", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Received: device='pi9'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("deploy", str(bundle), "--device", "jetson-nano", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Received: device='jetson-nano'" in r.stderr and "Python 3.6" in r.stderr
    assert not (tmp_path / "o").exists()


def test_bad_options_are_refused(bundle, tmp_path):
    with pytest.raises(devices.DeviceError, match=r"Expected --port in 1024-65535 .*Received: 80"):
        dp.deploy(dp.DeployOptions(bundle, "x86-64", tmp_path / "o", port=80))
    with pytest.raises(devices.DeviceError, match=r"Expected --threads >= 1\. Received: 0"):
        dp.deploy(dp.DeployOptions(bundle, "x86-64", tmp_path / "o", threads=0))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious.txt").write_text("mine")
    with pytest.raises(devices.DeviceError, match=r"Expected --out to be a new folder or an earlier deploy folder\. Received: .*busy"):
        dp.deploy(dp.DeployOptions(bundle, "x86-64", busy))
    assert (busy / "precious.txt").read_text() == "mine"


def test_deploy_is_atomic_and_replaces_only_a_whole_earlier_deploy(bundle, tmp_path, monkeypatch):
    out = tmp_path / "pi5"
    first = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-5", out), log=lambda m: None)
    before = json.loads((out / "deploy.json").read_text())

    def boom(dest):
        (dest / "half-written.whl").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(dp, "build_device_wheel", boom)
    with pytest.raises(OSError, match="disk full"):
        dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-5", out, port=9001), log=lambda m: None)
    assert json.loads((out / "deploy.json").read_text()) == before  # the earlier deploy is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no partial folder
    with pytest.raises(OSError):
        dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-5", tmp_path / "fresh"), log=lambda m: None)
    assert not (tmp_path / "fresh").exists()
    monkeypatch.undo()
    dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-5", out, port=9002), log=lambda m: None)  # a re-deploy replaces it
    assert "--port 9002" in (out / "edgeport.service").read_text() and first.out == out


# --------------------------------------------------------------------------- API key, --host beyond loopback

KEY = "k3y-for-the-device-tests"


def test_deploy_with_a_key_installs_it_0600_and_the_unit_passes_it(bundle, tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    out = tmp_path / "pi4"
    r = run_cli("deploy", str(bundle), "--device", "raspberry-pi-4", "--out", str(out), "--host", "0.0.0.0", "--api-key-file", str(key))
    assert r.returncode == 0, r.stderr
    assert (out / "api-key").read_text() == KEY + "\n"
    assert (out / "api-key").stat().st_mode & 0o777 == 0o600
    unit = (out / "edgeport.service").read_text()
    assert "--host 0.0.0.0 --port 8080 --workers 2 --threads 2 --api-key-file /opt/edgeport/api-key\n" in unit
    assert "API_KEY_FILE=api-key" in (out / "deploy.env").read_text()
    manifest = json.loads((out / "deploy.json").read_text())
    assert manifest["api_key"] == "api-key" and "api-key" not in manifest["files"]  # no digest of the key
    assert KEY not in (out / "deploy.json").read_text() + (out / "README.md").read_text() + r.stdout + r.stderr
    # without a key: no key file, nothing passed
    plain = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", tmp_path / "plain"), log=lambda m: None).out
    exec_start = next(l for l in (plain / "edgeport.service").read_text().splitlines() if l.startswith("ExecStart="))
    assert not (plain / "api-key").exists() and "--api-key-file" not in exec_start


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "pi.local"])
def test_deploy_beyond_loopback_needs_a_key_or_insecure_public(bundle, tmp_path, host):
    r = run_cli("deploy", str(bundle), "--device", "raspberry-pi-4", "--out", str(tmp_path / "o"), "--host", host)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"edgeport deploy: error: Expected --api-key-file with --host {host}") and "--insecure-public" in lines[0]
    assert not (tmp_path / "o").exists()
    out = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", tmp_path / "o", host=host, insecure_public=True), log=lambda m: None).out
    assert "INSECURE_PUBLIC=yes" in (out / "deploy.env").read_text()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_needs_no_key(bundle, tmp_path, host):
    out = dp.deploy(dp.DeployOptions(bundle, "x86-64", tmp_path / "o", host=host), log=lambda m: None).out
    assert "INSECURE_PUBLIC=no" in (out / "deploy.env").read_text()


@pytest.mark.parametrize("content, word", [(None, "No such file"), (b"", "empty file"), (b"\xff\xfe\x00", "UTF-8"),
                                           (b"two words\n", "one word"), (b"k" * 5000, "at most 4096 bytes")])
def test_a_bad_key_file_is_one_line_and_no_folder(bundle, tmp_path, content, word):
    key = tmp_path / "key"
    if content is not None:
        key.write_bytes(content)
    out = tmp_path / "o"
    r = run_cli("deploy", str(bundle), "--device", "raspberry-pi-4", "--out", str(out), "--api-key-file", str(key))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgeport deploy: error: Expected"), r.stderr
    assert word in lines[0] and "Received" in lines[0]
    assert not out.exists()


# install.sh with the commands it calls faked: python (venv, pip, checks), install, useradd/usermod,
# getent, systemctl and id. The fakes log their arguments; `install` copies and sets the mode only
# inside the test's folder (a unit for /etc is logged, not written). Nothing needs root or systemd.
FAKES = {
    "python3": """case "$1" in
  -V) echo "Python 3.11.2" ;;
  -m) [ "$2" = venv ] && mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
esac
exit 0""",
    "install": """mode=; args=()
while [ $# -gt 0 ]; do case "$1" in -m) mode=$2; shift 2 ;; -o|-g) shift 2 ;; *) args+=("$1"); shift ;; esac; done
case "${args[1]}" in "$FAKE_ROOT"/*) cp "${args[0]}" "${args[1]}" && chmod "$mode" "${args[1]}" ;; esac""",
    "id": """case "$*" in -u) echo 0 ;; -un|-gn) echo tester ;; esac""",
    "useradd": "", "usermod": "", "getent": "", "systemctl": "",
}


def run_install(folder: Path, root: Path, *args: str, systemd: str = "yes") -> tuple[subprocess.CompletedProcess, list[str]]:
    fakebin = root / "fakebin"
    if not fakebin.exists():
        fakebin.mkdir()
        for name, body in FAKES.items():
            (fakebin / name).write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "$FAKE_LOG"\n{body}\n')
            (fakebin / name).chmod(0o755)
    log = root / "calls.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{fakebin}:{os.environ['PATH']}", "FAKE_LOG": str(log), "FAKE_ROOT": str(root),
           "EDGEPORT_PREFIX": str(root / "prefix"), "EDGEPORT_PYTHON": str(fakebin / "python3"), "EDGEPORT_SYSTEMD": systemd}
    r = subprocess.run(["bash", str(folder / "install.sh"), *args], env=env, capture_output=True, text=True, timeout=60)
    return r, log.read_text().splitlines()


def test_install_refuses_a_public_host_without_a_key_in_one_line(bundle, tmp_path):
    out = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", tmp_path / "pi4"), log=lambda m: None).out
    env_file = out / "deploy.env"
    env_file.write_text(re.sub(r"(?m)^HOST=.*$", "HOST=0.0.0.0", env_file.read_text()))  # edited by hand on the device
    r, calls = run_install(out, tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("edgeport install: error: Expected an API key to serve on 0.0.0.0") and "--insecure-public" in lines[0]
    assert calls == [] and not (tmp_path / "prefix").exists()  # refused before anything ran
    r, calls = run_install(out, tmp_path, "--insecure-public")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: serving on 0.0.0.0 without an API key" in r.stdout
    assert any(c.startswith("systemctl restart edgeport.service") for c in calls)
    r, _ = run_install(out, tmp_path, "--bogus")
    assert r.returncode == 1 and "Received: --bogus" in r.stderr


def test_install_puts_the_key_in_0600_for_the_service_user(bundle, tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY)
    out = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", tmp_path / "pi4", host="0.0.0.0", api_key_file=key), log=lambda m: None).out
    r, calls = run_install(out, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = tmp_path / "prefix"
    assert f"install -m 0600 -o edgeport -g edgeport {out}/api-key {prefix}/api-key" in calls
    assert (prefix / "api-key").read_text() == KEY + "\n" and (prefix / "api-key").stat().st_mode & 0o777 == 0o600
    assert any(c.startswith("install -m 0644") and c.endswith("/etc/systemd/system/edgeport.service") for c in calls)
    assert (prefix / "bundle" / "bundle.json").is_file() and KEY not in r.stdout + r.stderr
    # a re-deploy without a key (loopback) removes the old key
    out = dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", tmp_path / "pi4"), log=lambda m: None).out
    r, _ = run_install(out, tmp_path)
    assert r.returncode == 0 and not (prefix / "api-key").exists()


def test_install_without_systemd_prints_the_start_command_with_the_key(bundle, tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY)
    out = dp.deploy(dp.DeployOptions(bundle, "x86-64", tmp_path / "x86", host="0.0.0.0", api_key_file=key), log=lambda m: None).out
    r, calls = run_install(out, tmp_path, systemd="no")
    assert r.returncode == 0, r.stdout + r.stderr
    prefix = tmp_path / "prefix"
    assert f"--host 0.0.0.0 --port 8080 --api-key-file {prefix}/api-key" in r.stdout
    assert (prefix / "api-key").stat().st_mode & 0o777 == 0o600 and not any(c.startswith("systemctl") for c in calls)


# --------------------------------------------------------------------------- --target

def test_remote_commands_with_rsync(tmp_path):
    out = tmp_path / "pi4-shapes"
    cmds = dp.remote_commands(out, "pi@raspberrypi.local", have_rsync=True)
    assert cmds == [
        ["ssh", "pi@raspberrypi.local", "mkdir -p edgeport-deploy/pi4-shapes"],
        ["rsync", "-az", "--delete", "-e", "ssh", f"{out}/", "pi@raspberrypi.local:edgeport-deploy/pi4-shapes/"],
        ["ssh", "-t", "pi@raspberrypi.local", "sudo bash edgeport-deploy/pi4-shapes/install.sh"],
    ]


def test_remote_commands_fall_back_to_scp(tmp_path):
    out = tmp_path / "orin"
    cmds = dp.remote_commands(out, "nvidia@orin", have_rsync=False, ssh_options=("-p", "2222"))
    assert cmds == [
        ["ssh", "-p", "2222", "nvidia@orin", "rm -rf edgeport-deploy/orin && mkdir -p edgeport-deploy"],
        ["scp", "-p", "2222", "-r", "-p", "-q", str(out), "nvidia@orin:edgeport-deploy/"],
        ["ssh", "-p", "2222", "-t", "nvidia@orin", "sudo bash edgeport-deploy/orin/install.sh"],
    ]


def test_remote_paths_are_quoted_and_bad_targets_refused(tmp_path):
    cmds = dp.remote_commands(tmp_path / "my deploy", "pi@host", have_rsync=True)
    assert cmds[0][-1] == "mkdir -p 'edgeport-deploy/my deploy'"
    assert cmds[2][-1] == "sudo bash 'edgeport-deploy/my deploy/install.sh'"
    for bad in ("", "-oProxyCommand=x", "pi@host extra"):
        with pytest.raises(devices.DeviceError, match=r"Expected --target as user@host.*Received"):
            dp.remote_commands(tmp_path / "d", bad, have_rsync=True)


# push picks rsync when the host has it, else scp. The test decides which branch runs
# (it must not depend on whether this machine happens to have rsync) and checks both.
PUSH_BRANCHES = {
    True: ("rsync", "ssh pi@host 'mkdir -p edgeport-deploy/d'"),
    False: ("scp", "ssh pi@host 'rm -rf edgeport-deploy/d && mkdir -p edgeport-deploy'"),
}


@pytest.mark.parametrize("have_rsync", [True, False], ids=["rsync", "scp"])
def test_push_runs_the_commands_in_order_and_stops_on_failure(tmp_path, monkeypatch, have_rsync):
    real_which = dp.shutil.which
    monkeypatch.setattr(dp.shutil, "which",
                        lambda name, *a, **k: ("/usr/bin/rsync" if have_rsync else None) if name == "rsync" else real_which(name, *a, **k))
    copier, first = PUSH_BRANCHES[have_rsync]
    ran = []
    dp.push(tmp_path / "d", "pi@host", run=lambda c: ran.append(c) or 0, log=lambda m: None)
    assert [c[0] for c in ran] == ["ssh", copier, "ssh"]
    ran.clear()
    with pytest.raises(devices.DeviceError, match=rf"Expected `{re.escape(first)}` to succeed\. Received: exit code 255"):
        dp.push(tmp_path / "d", "pi@host", run=lambda c: ran.append(c) or 255, log=lambda m: None)
    assert len(ran) == 1


def test_cli_target_dry_run_prints_the_commands(bundle, tmp_path):
    r = run_cli("deploy", str(bundle), "--device", "raspberry-pi-4", "--out", str(tmp_path / "pi4"),
                "--target", "pi@raspberrypi.local", "--dry-run")
    assert r.returncode == 0, r.stderr
    would = [l for l in r.stdout.splitlines() if l.startswith("would run: ")]
    assert len(would) == 3 and would[-1] == "would run: ssh -t pi@raspberrypi.local 'sudo bash edgeport-deploy/pi4/install.sh'"


# --------------------------------------------------------------------------- the real install (opt-in)

@pytest.mark.skipif(os.environ.get("EDGEPORT_SLOW_TESTS") != "1",
                    reason="installs PyPI wheels into a fresh venv (~1 min, needs the package registry); set EDGEPORT_SLOW_TESTS=1")
def test_deploy_folder_installs_and_serves_on_this_machine(int8_bundle, heldout_dir, tmp_path):
    from conftest import free_port, http

    port = free_port()
    out = dp.deploy(dp.DeployOptions(int8_bundle, "x86-64", tmp_path / "x86", port=port), log=lambda m: None).out
    prefix = tmp_path / "prefix"
    env = {**os.environ, "EDGEPORT_PREFIX": str(prefix), "EDGEPORT_SYSTEMD": "no"}
    r = subprocess.run(["bash", str(out / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    pkgs = subprocess.run([str(prefix / "venv/bin/python"), "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    assert "ai-edge-litert" in pkgs and "tensorflow" not in pkgs
    proc = subprocess.Popen([str(prefix / "venv/bin/edgeport"), "serve", str(prefix / "bundle"), "--device", "x86-64", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time
        for _ in range(120):
            try:
                if http("GET", f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.25)
        img = next((heldout_dir / "triangle").glob("*.jpg"))
        status, body, _ = http("POST", f"http://127.0.0.1:{port}/predict", img.read_bytes(), {"Content-Type": "image/jpeg"})
        assert status == 200 and body["predictions"][0]["label"] == "triangle"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_killed_deploy_is_repaired_by_the_next_one(bundle, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pi4"
    dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", out), log=lambda m: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # Killed mid-swap: the earlier deploy set aside, a half-built one staged, nothing at `out`.
    out.rename(tmp_path / f".pi4.old-{dead.pid}-1")
    (tmp_path / f".pi4.partial-{dead.pid}-2").mkdir()
    dp.deploy(dp.DeployOptions(bundle, "raspberry-pi-4", out, port=9002), log=lambda m: None)
    assert json.loads((out / "deploy.json").read_text())["service"]["port"] == 9002
    assert sorted(p.name for p in tmp_path.iterdir() if "pi4" in p.name) == ["pi4"]
