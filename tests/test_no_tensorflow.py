"""A device has no TensorFlow: serving, predicting and the CLI's help must never import it."""

import subprocess
import sys
import textwrap

HEAVY = ("tensorflow", "keras", "tf2onnx", "sklearn", "matplotlib")


def run_and_list_modules(code: str) -> set[str]:
    probe = code + textwrap.dedent(
        """
        import sys
        print("MODULES", " ".join(sorted({m.split(".")[0] for m in sys.modules})))
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if l.startswith("MODULES ")][-1]
    return set(line.split()[1:])


def test_help_does_not_import_tensorflow():
    mods = run_and_list_modules(textwrap.dedent(
        """
        from edge_server.cli import build_parser
        for argv in (["--help"], ["serve", "--help"], ["train", "--help"], ["export", "--help"]):
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pass
        """
    ))
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_serving_a_bundle_does_not_import_tensorflow(int8_bundle, heldout_dir):
    image = sorted((heldout_dir / "circle").glob("*.jpg"))[0]
    mods = run_and_list_modules(textwrap.dedent(
        f"""
        from edge_server.app import create_app
        from edge_server.serve import load_service
        from edge_server.settings import ServerSettings
        settings = ServerSettings(bundle={str(int8_bundle)!r})
        app = create_app(load_service(settings), settings)
        r = app.test_client().post("/predict", data=open({str(image)!r}, "rb").read(), content_type="image/jpeg")
        assert r.status_code == 200, r.json
        import waitress
        """
    ))
    assert "edge_server" in mods and "ai_edge_litert" in mods
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_workstation_commands_on_an_edge_only_install_name_the_extra(small_demo_dir):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["keras"] = None  # as on a device: importing keras fails
        from edge_server.cli import main
        sys.exit(main(["train", {str(small_demo_dir)!r}, "--weights", "none", "--image-size", "32", "--alpha", "0.35"]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "pip install 'edgeport[train]'" in last and "Traceback" not in out.stderr, out.stderr
