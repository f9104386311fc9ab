"""TF Serving's gRPC API of `keras-chargen serve`, through the official `tensorflow-serving-api` stubs.

The shared test server listens for gRPC on a free port (never 8500). Every answer is checked against
the REST answer of the same server, or against TF Serving's own messages and status codes.
"""

from __future__ import annotations

import grpc
import pytest
import tensorflow as tf
from serving_support import MODEL, generate_body, request
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(
    prompts=("ROMEO:",), temperature=0.7, length=40, seed=5, name=MODEL, version=None, **extra
) -> predict_pb2.PredictRequest:
    """The request a TF Serving Python client builds: `predict_pb2` + `tf.make_tensor_proto`."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    rows = len(prompts)
    tensors = {
        "prompt": tf.make_tensor_proto(list(prompts)),
        "temperature": tf.make_tensor_proto([temperature] * rows, tf.float32),
        "max_new_chars": tf.make_tensor_proto([length] * rows, tf.int32),
        "seed": tf.make_tensor_proto([seed] * rows, tf.int32),
        **extra,
    }
    for key, tensor in tensors.items():
        if tensor is not None:
            req.inputs[key].CopyFrom(tensor)
    return req


def strings(tensor) -> list[str]:
    return [s.decode("utf-8") for s in tf.make_ndarray(tensor).tolist()]


def test_grpc_predict_equals_rest_for_the_same_seed(server, stub):
    answer = stub.Predict(predict_request(("ROMEO:", "ANNA:"), 0.7, 40, seed=5), timeout=60)
    rest = request(
        "POST",
        server.url + PREDICT,
        {"inputs": {"prompt": ["ROMEO:", "ANNA:"], "temperature": [0.7], "max_new_chars": [40], "seed": [5, 5]}},
    )[1]["outputs"]
    assert strings(answer.outputs["generated"]) == rest["generated"] and len(rest["generated"][0]) == 40
    assert strings(answer.outputs["text"]) == rest["text"]
    assert (answer.model_spec.name, answer.model_spec.version.value) == (MODEL, 2)
    assert answer.model_spec.signature_name == "serving_default"


def test_grpc_predict_by_version_signature_and_output_filter(server, stub):
    req = predict_request(("A",), 0.0, 25, seed=1, version=1)
    req.output_filter.append("generated")
    answer = stub.Predict(req, timeout=60)
    rest = request("POST", f"{server.url}/v1/models/{MODEL}/versions/1:predict", generate_body("A", 0.0, 25, seed=1))
    assert list(answer.outputs) == ["generated"] and answer.model_spec.version.value == 1
    assert strings(answer.outputs["generated"]) == [rest[1]["predictions"][0]["generated"]]
    encode = predict_pb2.PredictRequest()
    encode.model_spec.name, encode.model_spec.signature_name = MODEL, "encode"
    encode.inputs["prompt"].CopyFrom(tf.make_tensor_proto(["ab"]))
    lengths = tf.make_ndarray(stub.Predict(encode, timeout=60).outputs["lengths"])
    assert lengths.tolist() == [2]


def test_grpc_zero_new_characters_return_the_prompt(stub):
    answer = stub.Predict(predict_request(("ROMEO:",), 0.8, 0), timeout=60)
    assert strings(answer.outputs["generated"]) == [""] and strings(answer.outputs["text"]) == ["ROMEO:"]


def test_grpc_metadata_lists_the_signatures(server, stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = MODEL
    req.metadata_field.append("signature_def")
    answer = stub.GetModelMetadata(req, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    answer.metadata["signature_def"].Unpack(signatures)
    rest = request("GET", f"{server.url}/v1/models/{MODEL}/metadata")[1]["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures.signature_def) == sorted(rest)
    assert {"serving_default", "step", "encode", "decode"} <= set(signatures.signature_def)
    default = signatures.signature_def["serving_default"]
    assert default.inputs["prompt"].dtype == tf.string.as_datatype_enum
    assert set(default.outputs) == {"generated", "seed", "text"} and answer.model_spec.version.value == 2


def test_grpc_status_reports_every_version(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = MODEL
    answer = stub.GetModelStatus(req, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code, s.status.error_message) for s in answer.model_version_status] == [
        (2, available, 0, ""),
        (1, available, 0, ""),
    ]
    req.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelStatus(req, timeout=30)
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.NOT_FOUND,
        f"Could not find version 9 of model {MODEL}",
    )


def _rest_error(server, body) -> str:
    status, answer, _ = request("POST", server.url + PREDICT, body)
    assert status == 400
    return answer["error"]


@pytest.mark.parametrize(
    "change, code, rest_body",
    [
        (dict(length=20001), grpc.StatusCode.INVALID_ARGUMENT, generate_body("A", 0.7, 20001, seed=5)),
        (dict(temperature=-1.0), grpc.StatusCode.INVALID_ARGUMENT, generate_body("A", -1.0, 40, seed=5)),
        (dict(prompts=("A",) * 17), grpc.StatusCode.INVALID_ARGUMENT, generate_body("A", 0.7, 40, seed=5, rows=17)),
        (dict(top_k=tf.make_tensor_proto([-1], tf.int32)), grpc.StatusCode.INVALID_ARGUMENT, None),
        (dict(name="nope"), grpc.StatusCode.NOT_FOUND, None),
        (dict(version=9), grpc.StatusCode.NOT_FOUND, None),
    ],
    ids=[
        "length-above-cap",
        "negative-temperature",
        "too-many-rows",
        "negative-top-k",
        "unknown-model",
        "unknown-version",
    ],
)
def test_grpc_errors_have_the_rest_message_and_a_grpc_code(server, stub, change, code, rest_body):
    extra = {k: v for k, v in change.items() if k == "top_k"}
    plain = {k: v for k, v in change.items() if k != "top_k"}
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(predict_request(**{"prompts": ("A",), **plain}, **extra), timeout=30)
    assert info.value.code() == code
    if rest_body is not None:
        assert info.value.details() == _rest_error(server, rest_body)
    elif code == grpc.StatusCode.NOT_FOUND:
        name = change.get("name", MODEL)
        path = f"/v1/models/{name}" + (f"/versions/{change['version']}" if "version" in change else "") + ":predict"
        assert info.value.details() == request("POST", server.url + path, generate_body())[1]["error"]
    else:
        assert info.value.details() == "top_k must be an integer >= 0 (0 = off); got -1"


def test_grpc_checks_dtypes_inputs_and_sizes(stub):
    cases = [
        (dict(seed=tf.make_tensor_proto([5], tf.int64)), "input seed has dtype int64; the signature expects int32"),
        (dict(seed=None), "missing input seed"),
        (dict(top_q=tf.make_tensor_proto([1])), "unknown input 'top_q'"),
        (dict(prompt=tf.make_tensor_proto([["A"]])), "input prompt has shape [1, 1]; the signature expects [-1]"),
    ]
    for extra, fragment in cases:
        req = predict_request(("A",))
        for key, tensor in extra.items():
            if tensor is None:
                del req.inputs[key]
            else:
                req.inputs[key].CopyFrom(tensor)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in info.value.details()
    huge = predict_request(("A" * 70_000,))  # above --max-body-bytes 65536: grpc refuses the message
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(huge, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = MODEL
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(metadata, timeout=30)
    assert info.value.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    metadata.metadata_field.append("graph")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(metadata, timeout=30)
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )
