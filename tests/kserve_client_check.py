"""kserve's own REST client (InferenceRESTClient) against a running edgeport server.

Run with a Python that has `kserve` installed (not this project's .venv: kserve
would replace the protobuf 7 that TensorFlow, ONNX and LiteRT use there with 6):

    python tests/kserve_client_check.py http://127.0.0.1:8080 HELDOUT_DIR

tests/test_clients.py runs it when EDGEPORT_KSERVE_PYTHON names such a Python.
Exits non-zero, with the failing assertion, if a call does not work.
"""

import asyncio
import base64
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput


async def main(url: str, heldout: Path) -> None:
    images = [sorted((heldout / label).glob("*.jpg"))[0].read_bytes() for label in ("circle", "square", "triangle")]
    b64 = [base64.b64encode(d).decode() for d in images]
    with urllib.request.urlopen(url + "/v2/models/shapes") as r:
        out_name = json.load(r)["outputs"][0]["name"]

    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    assert await v1.is_model_ready(url, "shapes") is True  # reads "ready" from GET /v1/models/shapes
    reference = np.array((await v1.infer(url, {"instances": [{"b64": s} for s in b64]}, model_name="shapes"))["predictions"])
    assert reference.shape == (3, 3)
    await v1.close()

    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    assert await v2.is_server_live(url) and await v2.is_server_ready(url) and await v2.is_model_ready(url, "shapes")
    for binary_in in (False, True):
        for binary_out in (False, True):
            inp = InferInput("image", [3], "BYTES")
            inp.set_data_from_numpy(np.array(images if binary_in else b64, dtype=np.object_), binary_data=binary_in)
            outputs = [RequestedOutput(out_name, parameters={"binary_data": True})] if binary_out else None
            res = await v2.infer(url, InferRequest(model_name="shapes", infer_inputs=[inp], request_id="k",
                                                   request_outputs=outputs), model_name="shapes")
            got = res.outputs[0].as_numpy()
            assert got.shape == (3, 3) and np.allclose(got, reference, atol=1e-6), (binary_in, binary_out, got)
    await v2.close()
    print("kserve v1 and v2 REST clients: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
