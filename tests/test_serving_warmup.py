"""TF Serving warm-up requests (issue 14): every export carries one PredictRequest per
signature; replayed through the loaded SavedModel in a fresh process, each gives the
outputs ``saved_model_cli show --all`` declares (names, dtypes, shapes)."""
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfssvae import export as export_lib
from tfssvae import models
from tfssvae.data import faces

DIGITS = (8, 8, 1)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")

# One tiny, untrained model of each family whose inputs need a different warm-up rule:
# M2 (images in [0, 1], labels in [0, K), latent codes unbounded), ML-VAE (group ids with
# no upper bound, in encode_group), faces (unit lights, in relight and generate).  M1,
# M1+M2, the SSDGMs and CascadeVAE (its code d is ranged like labels) go through the same
# export code with inputs of these kinds; three keep the test fast (each saved_model_cli
# run imports TensorFlow).
FAMILIES = {
    "m2": lambda: models.M2(DIGITS, 10, latent_dim=3, hidden_units=(16,), num_examples=100, num_labelled=20),
    "mlvae": lambda: models.MLVAE(DIGITS, 10, content_dim=3, style_dim=2, hidden_units=(16,)),
    "faces": lambda: models.FacesModel(faces.IMAGE_SHAPE, faces.NUM_TRAIN_IDENTITIES, style_dim=2,
                                       filters=(4, 8, 8, 8), dense_units=16, decoder_filters=(8, 8, 8)),
}

# Run in a fresh process: load each SavedModel, read its warm-up TFRecord, decode every
# request's inputs from the TensorProtos and call the named signature.  Errors are reported
# per request, not raised, so the test can tell which request failed and why.
REPLAY = r"""
import json, os, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

report = {}
for directory in sys.argv[1:]:
    loaded = tf.saved_model.load(directory)
    path = os.path.join(directory, "assets.extra", "tf_serving_warmup_requests")
    replies = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        reply = {"signature": signature, "model_name": request.model_spec.name,
                 "inputs": {name: [value.dtype.name, list(value.shape)] for name, value in inputs.items()}}
        try:
            outputs = loaded.signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
            reply["outputs"] = {name: [value.dtype.name, list(value.shape)] for name, value in outputs.items()}
        except Exception as error:  # reported to the test, which fails on it
            reply["error"] = f"{type(error).__name__}: {str(error).strip()[:300]}"
        replies.append(reply)
    report[directory] = replies
print(json.dumps(report))
"""


def parse_saved_model_cli(text):
    """``{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}}}`` from the text of
    ``saved_model_cli show --all``; shape is a tuple with None for -1, or None for unknown rank."""
    # The signatures come first; the op list and the concrete functions follow.
    text = re.split(r"^The MetaGraph with tag set|^Concrete Functions:", text, flags=re.M)[0]
    signatures = {}
    blocks = re.split(r"^signature_def\['([^']+)'\]:\s*$", text, flags=re.M)
    for name, body in zip(blocks[1::2], blocks[2::2]):
        entry = {"inputs": {}, "outputs": {}}
        for kind, tensor, dtype, shape in re.findall(
                r"(inputs|outputs)\['([^']+)'\] tensor_info:\s*dtype: (\w+)\s*shape: ([^\n]+)", body):
            dtype = tf.as_dtype(types_pb2.DataType.Value(dtype)) if dtype != "DT_INVALID" else None
            shape = shape.strip()
            if shape == "unknown_rank":
                dims = None
            else:
                inner = shape.strip("()").strip()
                dims = tuple(None if int(d) == -1 else int(d) for d in inner.split(",") if d.strip())
            entry[kind][tensor] = (dtype.name if dtype is not None else None, dims)
        signatures[name] = entry
    return signatures


def mismatches(replies, shown, model_name):
    """Every way the replayed warm-up ``replies`` (from REPLAY) disagree with the signatures
    ``shown`` by saved_model_cli; an empty list when they agree."""
    problems = []
    serving = {name for name in shown if not name.startswith("__")}  # __saved_model_init_op is no signature
    requested = [reply["signature"] for reply in replies]
    if sorted(requested) != sorted(serving):
        problems.append(f"warm-up requests for {sorted(requested)}, signatures {sorted(serving)}")
    for reply in replies:
        signature = reply["signature"]
        if reply["model_name"] != model_name:
            problems.append(f"{signature}: model_spec.name {reply['model_name']!r}, expected {model_name!r}")
        if "error" in reply:
            problems.append(f"{signature}: the request failed: {reply['error']}")
        if signature not in shown:
            continue
        declared = shown[signature]
        if sorted(reply["inputs"]) != sorted(declared["inputs"]):
            problems.append(f"{signature}: request inputs {sorted(reply['inputs'])}, "
                            f"declared {sorted(declared['inputs'])}")
        for name, (dtype, shape) in reply["inputs"].items():
            if name in declared["inputs"] and declared["inputs"][name][0] != dtype:
                problems.append(f"{signature}: input {name} sent as {dtype}, declared {declared['inputs'][name][0]}")
        if "outputs" not in reply:
            continue
        if sorted(reply["outputs"]) != sorted(declared["outputs"]):
            problems.append(f"{signature}: outputs {sorted(reply['outputs'])}, declared {sorted(declared['outputs'])}")
        for name, (dtype, shape) in reply["outputs"].items():
            if name not in declared["outputs"]:
                continue
            want_dtype, want_shape = declared["outputs"][name]
            if dtype != want_dtype:
                problems.append(f"{signature}: output {name} is {dtype}, declared {want_dtype}")
            if want_shape is not None and (len(shape) != len(want_shape) or any(
                    d is not None and d != got for d, got in zip(want_shape, shape))):
                problems.append(f"{signature}: output {name} has shape {shape}, declared {want_shape}")
    return problems


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``{family: export directory}``; ``saved_model_cli`` starts on each as soon as it is
    written (each run imports TensorFlow: a few seconds that overlap the next export)."""
    root = tmp_path_factory.mktemp("exports")
    paths, shows = {}, {}
    for family, build in FAMILIES.items():
        keras.utils.set_random_seed(0)
        model = build()
        model.build_variables()
        paths[family] = export_lib.export(model, str(root / family))
        shows[family] = run_saved_model_cli(paths[family])
    yield paths, shows
    for process in shows.values():
        if process is not None and process.poll() is None:
            process.kill()
            process.communicate()


def read_requests(directory):
    path = os.path.join(directory, "assets.extra", export_lib.WARMUP_FILE)
    return [prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def test_every_export_has_one_valid_request_per_signature(exports):
    exports, _ = exports
    for family, directory in exports.items():
        requests = read_requests(directory)
        declared = json.load(open(os.path.join(directory, "assets.extra", "tfssvae.json")))["inputs"]
        assert sorted(r.model_spec.signature_name for r in requests) == sorted(declared), family
        for request in requests:
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            assert sorted(inputs) == sorted(declared[request.model_spec.signature_name]), family
            for name, value in inputs.items():
                spec = declared[request.model_spec.signature_name][name]
                assert value.dtype == np.dtype(spec["dtype"]) and value.shape[1:] == tuple(spec["shape"][1:])
                assert value.shape[0] == export_lib.WARMUP_BATCH_SIZE
                low, high = spec.get("range", (None, None))
                # The ranges are the signatures' own in-graph checks: [low, high] for floats, [low, high) for ints.
                assert low is None or value.min() >= low, (family, name)
                assert high is None or (value.max() <= high if value.dtype.kind == "f" else value.max() < high)
                if name == "lights":  # faces: unit vectors toward the camera (checked in the graph too)
                    np.testing.assert_allclose(np.linalg.norm(value, axis=1), 1.0, atol=1e-6)  # float32 rounding
                    assert (value[:, 2] > 0).all()


def run_saved_model_cli(directory):
    """``saved_model_cli show --all --dir directory``, started (None if the tool is missing)."""
    cli = shutil.which("saved_model_cli")
    if cli is None:
        return None
    return subprocess.Popen([cli, "show", "--all", "--dir", directory], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def tamper(source, destination):
    """A copy of the export ``source`` whose warm-up file asks for a signature it lacks and
    sends the images of another as float64: what a broken warm-up writer would produce."""
    shutil.copytree(source, destination)
    images = np.full((2, *DIGITS), 0.5)
    bad = []
    for signature, value in (("no_such_signature", images.astype(np.float32)), ("encode", images)):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m2", signature_name=signature))
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(value))
        bad.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    # Keep the valid requests of the other signatures, so only the two bad ones differ.
    kept = [r for r in read_requests(source) if r.model_spec.signature_name != "encode"]
    logs = [prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=r)) for r in kept]
    with tf.io.TFRecordWriter(os.path.join(destination, "assets.extra", export_lib.WARMUP_FILE)) as writer:
        for log in logs + bad:
            writer.write(log.SerializeToString())
    return destination


def test_warmup_replays_in_a_fresh_process_as_saved_model_cli_declares(exports, tmp_path):
    exports, shows = exports
    if any(process is None for process in shows.values()):
        pytest.skip("saved_model_cli is not on PATH")
    tampered = tamper(exports["m2"], str(tmp_path / "tampered"))
    replay = subprocess.run([sys.executable, "-c", REPLAY, *exports.values(), tampered], capture_output=True,
                            text=True, env=ENV, timeout=300)
    assert replay.returncode == 0, replay.stderr[-3000:]
    replies = json.loads(replay.stdout.strip().splitlines()[-1])
    shown = {}
    for family, process in shows.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-2000:]
        shown[exports[family]] = parse_saved_model_cli(stdout)
    for family, directory in exports.items():
        assert shown[directory].get("serving_default", {}).get("outputs"), (family, "parsing found no outputs")
        assert len(replies[directory]) >= 4, family
        assert mismatches(replies[directory], shown[directory], family) == [], family
    # The comparison can fail: the tampered copy (same SavedModel) gets both bad requests reported.
    problems = mismatches(replies[tampered], shown[exports["m2"]], "m2")
    assert any("no_such_signature" in p and "failed" in p for p in problems), problems
    assert any("input images sent as float64, declared float32" in p for p in problems), problems


def test_parse_saved_model_cli_reads_shapes_and_dtypes():
    text = """signature_def['classify']:
  The given SavedModel SignatureDef contains the following input(s):
    inputs['images'] tensor_info:
        dtype: DT_FLOAT
        shape: unknown_rank
        name: classify_images:0
  The given SavedModel SignatureDef contains the following output(s):
    outputs['class'] tensor_info:
        dtype: DT_INT64
        shape: (-1)
        name: StatefulPartitionedCall:0
    outputs['probabilities'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, 38)
        name: StatefulPartitionedCall:1
  Method name is: tensorflow/serving/predict
"""
    assert parse_saved_model_cli(text) == {"classify": {
        "inputs": {"images": ("float32", None)},
        "outputs": {"class": ("int64", (None,)), "probabilities": ("float32", (None, 38))}}}


def test_warmup_inputs_refuses_what_it_cannot_fill():
    with pytest.raises(ValueError, match="batch_size"):
        export_lib.warmup_inputs({}, batch_size=0)
    with pytest.raises(ValueError, match="'x'"):
        export_lib.warmup_inputs({"x": {"shape": [None, None], "dtype": "float32"}})
    with pytest.raises(ValueError, match="'s'.*string"):
        export_lib.warmup_inputs({"s": {"shape": [None], "dtype": "string"}})


def test_an_input_the_rules_cannot_fill_fails_the_export(tmp_path, monkeypatch):
    model = FAMILIES["faces"]()
    model.build_variables()
    # Without the lights rule, Normal draws are no unit vectors: the signature refuses them at export.
    monkeypatch.setattr(export_lib, "_SPECIAL_INPUTS", {})
    with pytest.raises(ValueError, match="warm-up request for signature '(relight|generate)'.*lights"):
        export_lib.export(model, str(tmp_path / "faces"))
    assert os.listdir(tmp_path / "faces") == []  # nothing half-written is left
