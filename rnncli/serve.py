"""``rnncli serve``: a model directory as an HTTP service (Starlette on uvicorn).

Two APIs over one engine (the ONNX engine when the model has it, as ``predict``):
- rnncli's own: ``POST /predict`` and ``POST /explain`` (``{"texts": [...]}`` -> the
  records ``predict`` / ``explain --format json`` print), ``GET /health``, ``GET /info``
  and ``GET /openapi.json``;
- TF Serving's REST API, so its clients work unchanged: ``POST
  /v1/models/<name>[/versions/1]:predict`` (``instances`` -> ``predictions``, or
  ``inputs`` -> ``outputs``), ``GET /v1/models/<name>`` and ``.../metadata``.

Concurrent requests' texts are scored together (:class:`Batcher`): the requests that
queued while the engine was busy go to it in one call (up to ``max_batch`` texts), which
runs them in parallel batches on the cores, and each request gets its own rows back, in
order. So a lone request waits for nothing, and under load the batches grow by
themselves; ``batch_window`` > 0 also waits that long for more. Errors are ``{"error": ...}``
with a 4xx status, and never stop the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import reprlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rnncli import artifacts, jsontext
from rnncli.terminal import visible
from rnncli.predict import Predictor, capped_text, decode_input, to_score

SETTINGS_ENV = "RNNCLI_SERVE_SETTINGS"  # how --workers processes get the settings
INPUT_NAME = "text"  # the exported signature's one input
PUBLIC_KEYS = ("format_version", "rnncli_version", "created", "settings", "labels",
               "threshold", "calibration", "validation", "test")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServeSettings:
    """What ``rnncli serve`` was told (its options hold the defaults)."""

    model_dir: str
    name: str  # the model's name in TF Serving's paths
    max_texts: int  # per request
    max_body_bytes: int
    batch_window: float  # seconds the first waiting request also waits for others
    max_batch: int  # texts above which no further request joins a batch


class Batcher:
    """Scores the texts of concurrent requests together, one engine call at a time."""

    def __init__(self, score, *, window: float, max_batch: int):
        self._score = score  # list[str] -> scores, in order
        self._window = window
        self._max_batch = max_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # a thread of its own: other work in the loop's executor (explain) never delays it
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rnncli-batcher")
        self.calls = 0  # engine calls so far, and the texts they scored (GET /health)
        self.texts = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._thread.shutdown(wait=False)

    async def score(self, texts: list[str]):
        """The scores of ``texts`` (possibly scored beside other requests' texts)."""
        if not texts:
            return []
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self._queue.get()]
            count = len(waiting[0][0])
            # what queued while the engine was busy goes together at once; a window waits
            # for more
            while count < self._max_batch and not self._queue.empty():
                waiting.append(self._queue.get_nowait())
                count += len(waiting[-1][0])
            deadline = loop.time() + self._window
            while count < self._max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    waiting.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
                count += len(waiting[-1][0])
            waiting = [(chunk, f) for chunk, f in waiting if not f.done()]  # gone: cancelled
            texts = [t for chunk, _ in waiting for t in chunk]
            if not texts:
                continue
            try:
                scores = await loop.run_in_executor(self._thread, self._score, texts)
            except Exception as exc:  # noqa: BLE001  (handed to each waiting request)
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            self.texts += len(texts)
            at = 0
            for chunk, future in waiting:
                if not future.done():  # cancelled meanwhile (the server stopping)
                    future.set_result(scores[at:at + len(chunk)])
                at += len(chunk)


# --------------------------------------------------------------------------- requests


async def read_json(request, limit: int) -> Any:
    """The request's JSON body, refused (413) past ``limit`` bytes, (400) when it is not
    UTF-8 JSON."""
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise RequestError(400, "Content-Length is not a number")
    if length is not None and int(length) > limit:
        raise RequestError(413, f"the body is over the limit of {limit:,} bytes "
                                "(--max-body-bytes); send fewer or shorter texts")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"the body is over the limit of {limit:,} bytes "
                                        "(--max-body-bytes); send fewer or shorter texts")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(499, "the client closed the connection") from None
    body = b"".join(chunks)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not valid UTF-8 (byte {exc.start}); send "
                                "UTF-8 JSON") from None
    if not text.strip():
        raise RequestError(400, "the body is empty; send JSON such as {\"texts\": [\"great "
                                "movie\"]}")
    try:
        return jsontext.loads(text)
    except jsontext.BadJSON as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc.reason})") from None


def text_list(value: Any, field: str, max_texts: int) -> list[str]:
    """A non-empty list of at most ``max_texts`` strings, or a 400/413 naming the fault."""
    if not isinstance(value, list):
        raise RequestError(400, f"{field} must be a list of strings, not {_kind(value)}")
    if not value:
        raise RequestError(400, f"{field} is empty; send at least one text")
    if len(value) > max_texts:
        raise RequestError(413, f"{field} holds {len(value):,} texts; the limit is "
                                f"{max_texts:,} per request (--max-texts): split it")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestError(400, f"{field}[{i}] is {_kind(item)}, not a string")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def texts_field(body: Any, settings: ServeSettings) -> list[str]:
    if not isinstance(body, dict) or "texts" not in body:
        raise RequestError(400, "send a JSON object with a list of strings under \"texts\", "
                                "such as {\"texts\": [\"great movie\"]}")
    unknown = sorted(set(body) - {"texts"})
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; only "
                                "\"texts\" is read")
    return text_list(body["texts"], "texts", settings.max_texts)


async def predict_records(predictor: Predictor, batcher: Batcher,
                          texts: list[str]) -> list[dict[str, Any]]:
    """``rnncli predict``'s records for ``texts``: a text over MAX_LINE_BYTES is cut as a
    stdin line is (status "truncated"), blank ones are "empty", and only the rest are
    scored."""
    decoded = [decode_input(capped_text(t)) for t in texts]
    todo = to_score(decoded)
    scores = await batcher.score([decoded[i][0] for i in todo])
    return predictor.assemble(decoded, dict(zip(todo, scores)))


def tf_serving_inputs(body: Any, settings: ServeSettings) -> tuple[list[str], bool]:
    """(texts, row format?) of a TF Serving predict request: ``instances`` (row format:
    strings, or objects holding one string) or ``inputs`` (columnar: a list of strings,
    or an object holding one)."""
    if not isinstance(body, dict):
        raise RequestError(400, "send a JSON object with \"instances\" (or \"inputs\")")
    signature = body.get("signature_name", "serving_default")
    if signature not in ("serving_default", "serve"):
        raise RequestError(400, f"unknown signature_name {reprlib.repr(signature)}; this "
                                "model has 'serving_default'")
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
    return text_list(value, field, settings.max_texts), rows


def _named_input(value: dict, where: str) -> Any:
    """The signature's one input, "text", from an object naming its inputs."""
    if set(value) != {INPUT_NAME}:
        keys = ", ".join(map(repr, list(value)[:5])) or "none"
        raise RequestError(400, f"{where} names inputs {keys}; this model's signature has "
                                f"one, {INPUT_NAME!r}")
    return value[INPUT_NAME]


def _string(value: Any, where: str) -> Any:
    """A text as TF Serving takes a string: as is, or {"b64": base64 of its UTF-8}."""
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            value = base64.b64decode(value["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RequestError(400, f"{where}: b64 is not base64 of UTF-8 text") from None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(400, f"{where} holds a lone surrogate (such as \\ud800): not "
                                    "valid Unicode; send valid text") from None
    return value


def tf_serving_output(scores, rows: bool) -> dict[str, Any]:
    """``predictions`` (one row per instance) or ``outputs`` (the columnar batch): [p] per
    text for a two-class model (the SavedModel's [n, 1]), every class's probability for
    more."""
    values = [[float(s)] if getattr(s, "ndim", 0) == 0 else [float(v) for v in s]
              for s in scores]
    return {"predictions": values} if rows else {"outputs": values}


def public_info(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """What ``GET /info`` shows: the manifest without file hashes, data paths and the
    training history."""
    info = {key: manifest.get(key) for key in PUBLIC_KEYS if key in manifest}
    info["name"] = name
    info["classes"] = list(artifacts.label_names(manifest))
    blend = manifest.get("blend") or {}
    info["rnn_weight"] = blend.get("rnn_weight", 1.0)
    return info


def model_status() -> dict[str, Any]:
    """TF Serving's GetModelStatus answer for the one version this server holds."""
    return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def settings_from_env() -> ServeSettings:
    """The settings ``rnncli serve`` handed its worker processes."""
    return ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))


def settings_to_env(settings: ServeSettings) -> None:
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))


def load_predictor(settings: ServeSettings) -> Predictor:
    return Predictor.load(Path(settings.model_dir), device="cpu")


def log_line(client: str, method: str, path: str, status: int, seconds: float) -> None:
    """One line per request on stderr (UTC time; ``path`` as sent, still percent-encoded,
    with control characters and quotes escaped: a request cannot forge a line)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    shown = visible(path).replace('"', "\\x22")
    sys.stderr.write(f"{stamp} {client} \"{visible(method)} {shown}\" {status} "
                     f"{seconds * 1000:.1f} ms\n")
