"""TF Serving's REST API (its api_rest.md) over rnncli's engine: paths, the predict
request and answer, model status and metadata. No Starlette here (``app.py``
routes to it).

The signatures are those ``rnncli export`` writes (:func:`signatures`): ``serving_default``
and ``serve`` take a flat batch of strings, ``text``; both give ``output_0``, the positive
class's probability [n, 1] (two classes) or every class's [n, k]; a model of more than
two classes also gives ``classes`` in ``serving_default``, the class names [n, k] in the
order of ``output_0``'s columns (as TF Serving's classify API pairs classes with scores).
"""

from __future__ import annotations

import base64
import binascii
import re
import reprlib
from dataclasses import dataclass
from typing import Any

from rnncli.inference.predict import utf8_text
from rnncli.modeldir import artifacts
from rnncli.serve.service import RequestError, text_list

INPUT_NAME = artifacts.SAVED_MODEL_INPUT
OUTPUT_NAME = artifacts.SAVED_MODEL_OUTPUT
CLASSES_NAME = artifacts.SAVED_MODEL_CLASSES
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
VERSION = 1  # the one version this server holds
VERBS = ("classify", "regress", "predict")
# TF Serving's path rules (http_rest_api_util.cc): case-insensitive, the version a number
_PREDICT_PATH = re.compile(r"([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress"
                           r"|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(r"([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """What a path under /v1/models/ asks for: a verb (POST) or the status or metadata
    (GET)."""

    verb: str | None
    metadata: bool = False


def parse_path(spec: str, method: str, served: str) -> Target:
    """The request behind ``/v1/models/<spec>``: 404 for another model or version, 400
    for a version label (this server has none), 405 for the wrong method."""
    post = _PREDICT_PATH.fullmatch(spec)
    get = None if post else _STATUS_PATH.fullmatch(spec)
    match = post or get
    if match is None:
        raise RequestError(404, f"no such endpoint: /v1/models/{reprlib.repr(spec)[1:-1]} "
                                "(see /openapi.json)")
    allowed = ("POST",) if post else ("GET", "HEAD")
    if method not in allowed:
        raise RequestError(405, f"{method} is not allowed on /v1/models/"
                                f"{reprlib.repr(spec)[1:-1]}",
                           headers={"Allow": ", ".join(allowed)})
    name, version, label = match.group(1), match.group(2), match.group(3)
    if name != served:
        raise RequestError(404, f"Servable not found for request: no model named "
                                f"{reprlib.repr(name)}; this server has {served!r}")
    if label is not None:
        raise RequestError(400, f"Unrecognized servable version label: {label} (this "
                                f"server has no labels; use /versions/{VERSION} or no "
                                "version)")
    if version is not None and int(version) != VERSION:
        raise RequestError(404, f"Servable not found for request: no version {int(version)} "
                                f"of {name!r}; this server has version {VERSION}")
    if post:
        verb = match.group(4)
        if verb not in VERBS:  # TF Serving's regex matches any case, its dispatch does not
            raise RequestError(400, f"Malformed request: POST /v1/models/{spec} (write "
                                    f"':{verb.lower()}')")
        return Target(verb)
    return Target(None, metadata=match.group(4) is not None)


def not_predict(verb: str) -> RequestError:
    """TF Serving's answer to :classify / :regress on a predict signature."""
    kind = {"classify": "classification", "regress": "regression"}[verb]
    return RequestError(400, f"Expected {kind} signature method_name to be "
                             f"tensorflow/serving/{verb}. Was: {PREDICT_METHOD} (this "
                             "model has predict signatures only: use ':predict')")


def signatures(class_names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The SavedModel's serving signatures as GetModelMetadata shows them (tensor names
    as ``rnncli export`` writes them)."""
    width = 1 if len(class_names) == 2 else len(class_names)

    def tensor(dtype: str, dims: list[int], name: str) -> dict[str, Any]:
        return {"dtype": dtype, "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
            "name": name}

    def signature(key: str, outputs: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": {INPUT_NAME: tensor("DT_STRING", [-1], f"{key}_{INPUT_NAME}:0")},
                "outputs": outputs, "method_name": PREDICT_METHOD, "defaults": {}}

    if width == 1:
        default = {OUTPUT_NAME: tensor("DT_FLOAT", [-1, 1], "StatefulPartitionedCall_1:0")}
    else:  # several outputs of one call: sorted by name
        default = {CLASSES_NAME: tensor("DT_STRING", [-1, width],
                                        "StatefulPartitionedCall_1:0"),
                   OUTPUT_NAME: tensor("DT_FLOAT", [-1, width],
                                       "StatefulPartitionedCall_1:1")}
    serve = {OUTPUT_NAME: tensor("DT_FLOAT", [-1, width], "StatefulPartitionedCall:0")}
    return {"serve": signature("serve", serve),
            DEFAULT_SIGNATURE: signature(DEFAULT_SIGNATURE, default)}


def metadata(name: str, class_names: tuple[str, ...]) -> dict[str, Any]:
    """TF Serving's GetModelMetadata answer."""
    return {"model_spec": {"name": name, "signature_name": "", "version": str(VERSION)},
            "metadata": {"signature_def": {"signature_def": signatures(class_names)}}}


def model_status() -> dict[str, Any]:
    """TF Serving's GetModelStatus answer for the one version this server holds."""
    return {"model_version_status": [{"version": str(VERSION), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


@dataclass(frozen=True)
class PredictRequest:
    texts: list[str]
    rows: bool  # row format (instances -> predictions) or columnar (inputs -> outputs)
    outputs: tuple[str, ...]  # the signature's outputs, in the order they are answered


def predict_request(body: Any, class_names: tuple[str, ...], max_texts: int) -> PredictRequest:
    """A TF Serving predict request: ``instances`` (row format: strings, or objects
    holding one string) or ``inputs`` (columnar: a list of strings, or an object holding
    one); a string may be ``{"b64": ...}``."""
    if not isinstance(body, dict):
        raise RequestError(400, "send a JSON object with \"instances\" (or \"inputs\")")
    signature = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise RequestError(400, "'signature_name' key must be a string value.")
    known = signatures(class_names)
    signature = signature or DEFAULT_SIGNATURE
    if signature not in known:
        raise RequestError(400, f"Serving signature name: {reprlib.repr(signature)} not found "
                                f"in signature def; this model has {', '.join(known)}")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError(400, "send exactly one of \"instances\" (row format) and "
                                "\"inputs\" (columnar format)")
    rows = "instances" in body
    field = "instances" if rows else "inputs"
    value = body[field]
    if rows and isinstance(value, list):
        value = [_named_input(v, f"instances[{i}]") if isinstance(v, dict) and "b64" not in v
                 else v for i, v in enumerate(value)]
    elif not rows and isinstance(value, dict):
        value = _named_input(value, "inputs")
    if isinstance(value, list):
        value = [_string(v, f"{field}[{i}]") for i, v in enumerate(value)]
    texts = text_list(value, field, max_texts)
    return PredictRequest(texts, rows, tuple(sorted(known[signature]["outputs"])))


def _named_input(value: dict, where: str) -> Any:
    """The signature's one input, "text", from an object naming its inputs."""
    if set(value) != {INPUT_NAME}:
        keys = ", ".join(map(repr, list(value)[:5])) or "none"
        raise RequestError(400, f"{where} names inputs {keys}; this model's signature has "
                                f"one, {INPUT_NAME!r}")
    return value[INPUT_NAME]


def _string(value: Any, where: str) -> Any:
    """A text as TF Serving takes a string: as is, or {"b64": base64 of its bytes}; text
    that is not valid UTF-8 is read as everywhere in rnncli (predict.utf8_text: U+FFFD
    for the bad bytes) and scored, as the SavedModel scores it."""
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            value = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{where}: b64 is not base64") from None
    return utf8_text(value)[0] if isinstance(value, (str, bytes)) else value


def predict_answer(scores, request: PredictRequest, class_names: tuple[str, ...]) -> dict:
    """``predictions`` (row format: per text, the one output, or an object of outputs) or
    ``outputs`` (columnar: the one output's batch, or an object of batches)."""
    probabilities = [[float(s)] if getattr(s, "ndim", 0) == 0 else [float(v) for v in s]
                     for s in scores]
    columns = {OUTPUT_NAME: probabilities}
    if CLASSES_NAME in request.outputs:
        columns[CLASSES_NAME] = [list(class_names) for _ in probabilities]
    columns = {name: columns[name] for name in request.outputs}
    if len(columns) == 1:
        (only,) = columns.values()
        return {"predictions": only} if request.rows else {"outputs": only}
    if not request.rows:
        return {"outputs": columns}
    return {"predictions": [{name: column[i] for name, column in columns.items()}
                            for i in range(len(probabilities))]}
