"""The SavedModel's `inspect` and `explain_sampling` signatures, served over REST and gRPC by `keras-chargen serve`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import keras_step_logits
from serving_support import MODEL, request

from keras_chargen.inspection import inspect_text

PREDICT = f"/v1/models/{MODEL}:predict"
TEXT = "ROMEO:\nThe king§ is bright."  # § is not in the vocabulary: scored as the unknown id
WHOLE = {"signature_name": "inspect", "inputs": {"text": [TEXT], "layer": [0], "cell": [-1]}}  # every cell


def predict(server, body: dict) -> dict:
    status, answer, _ = request("POST", server.url + PREDICT, body)
    assert status == 200, answer
    return answer


def test_inspect_over_rest_equals_the_python_api(server, generator):
    expected = inspect_text(generator, TEXT)
    out = predict(server, {"signature_name": "inspect", "inputs": {"text": [TEXT], "layer": [0], "cell": [-1]}})[
        "outputs"
    ]
    n = out["lengths"][0]
    assert n == len(TEXT) == expected.total and out["tokens"][0][:n] == expected.tokens == list(TEXT)
    assert out["ids"][0][:n] == expected.ids.tolist() and out["ids"][0][TEXT.index("§")] == 0
    assert out["prob"][0][0] == 0  # the first position has no prediction
    np.testing.assert_allclose(out["prob"][0][1:n], expected.prob[1:], rtol=1e-5)
    np.testing.assert_array_equal(np.array(out["top_ids"][0])[1:n], expected.top_ids[1:])
    np.testing.assert_allclose(np.array(out["top_probs"][0])[1:n], expected.top_probs[1:], rtol=1e-5, atol=1e-8)
    assert out["top_tokens"][0][1:n] == expected.top_tokens[1:]
    np.testing.assert_allclose(np.array(out["activations"][0]), expected.activations[:, 0], atol=1e-5)
    assert out["activation_names"][0] == ["h", "c", "i", "f", "o"] and out["num_layers"] == [1]
    assert out["num_cells"] == [expected.units]


def test_inspect_rows_of_different_lengths_and_one_cell_each(server, generator):
    body = {
        "signature_name": "inspect",
        "instances": [{"text": "ANNA:\n", "layer": 0, "cell": 3}, {"text": TEXT, "layer": 0, "cell": 7}],
    }
    rows = predict(server, body)["predictions"]
    assert [r["lengths"] for r in rows] == [6, len(TEXT)]
    expected = inspect_text(generator, TEXT)
    width = len(TEXT)
    assert np.array(rows[1]["activations"]).shape == (width, 5, 1)  # the row's cell alone
    np.testing.assert_allclose(np.array(rows[1]["activations"])[:, :, 0], expected.activations[:, 0, :, 7], atol=1e-5)
    first = np.array(rows[0]["activations"])
    assert first.shape == (width, 5, 1) and not first[6:].any() and rows[0]["prob"][6:] == [0] * (width - 6)


def test_inspect_over_grpc_equals_rest(server):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name, req.model_spec.signature_name = MODEL, "inspect"
    for name, value in {"text": tf.constant([TEXT]), "layer": tf.constant([0]), "cell": tf.constant([-1])}.items():
        req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=60)
    rest = predict(server, WHOLE)
    assert answer.model_spec.signature_name == "inspect"
    for name in ("prob", "top_probs", "activations"):
        np.testing.assert_allclose(tf.make_ndarray(answer.outputs[name]), rest["outputs"][name], rtol=1e-6, atol=1e-7)
    assert tf.make_ndarray(answer.outputs["top_ids"]).tolist() == rest["outputs"]["top_ids"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"text": ["abc"], "layer": [1], "cell": [-1]}, "layer must be an integer in 0..0"),
        ({"text": ["abc"], "layer": [0], "cell": [48]}, "cell must be -1 (every cell) or an integer in 0..47"),
        ({"text": ["x" * 501], "layer": [0], "cell": [0]}, "cap is 500"),
        ({"text": ["abc"], "layer": [0]}, "missing input cell"),
    ],
)
def test_bad_inspect_requests_are_400s_naming_the_problem(server, inputs, message):
    status, answer, _ = request("POST", server.url + PREDICT, {"signature_name": "inspect", "inputs": inputs})
    assert status == 400 and message in answer["error"], answer


def test_explain_sampling_shows_each_setting_on_the_keras_distribution(server, generator):
    prompt = "ROMEO:\nThe ki"
    inputs = {"prompt": [prompt, ""], "temperature": [0.5, 0.0], "top_k": [3, 0], "top_p": [1.0, 1.0]}
    out = predict(
        server, {"signature_name": "explain_sampling", "inputs": {**inputs, "repetition_penalty": [1.0, 1.0]}}
    )
    out = out["outputs"]
    assert out["stages"][0] == ["model", "repetition_penalty", "temperature", "top_k", "top_p"]
    ids, probs = np.array(out["ids"][0]), np.array(out["probs"][0])  # (shown,), (stages, shown)
    logits = keras_step_logits(generator, [generator.vocabulary.index(c) + 1 for c in prompt])[-1]
    logits[0] = -1e9  # the unknown id is never generated
    model = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(probs[0], model[ids], rtol=1e-4, atol=1e-7)
    assert out["tokens"][0] == [generator.vocabulary[i - 1] for i in ids]
    np.testing.assert_allclose(probs[1], probs[0], rtol=1e-6)  # penalty off
    tempered = model**2 / (model**2).sum()  # T = 0.5
    np.testing.assert_allclose(probs[2], tempered[ids], rtol=1e-3, atol=1e-6)
    best3 = np.argsort(-model)[:3]
    np.testing.assert_allclose(probs[3], np.where(np.isin(ids, best3), tempered[ids], 0) / tempered[best3].sum(), 1e-3)
    assert np.count_nonzero(probs[3]) == 3 and out["other"][0][3] == pytest.approx(0, abs=1e-6)
    greedy = np.array(out["probs"][1])  # temperature 0: the argmax only, from the temperature on
    assert greedy[2:].max(axis=1).tolist() == [1, 1, 1] and greedy[2:].sum(axis=1) == pytest.approx([1, 1, 1])
    status, answer, _ = request(
        "POST",
        server.url + PREDICT,
        {"signature_name": "explain_sampling", "inputs": {**inputs, "repetition_penalty": [0.0, 1.0]}},
    )
    assert status == 400 and "repetition_penalty must be a finite number > 0" in answer["error"]
