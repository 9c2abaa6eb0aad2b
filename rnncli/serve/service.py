"""``rnncli serve``: a model directory as an HTTP service (Starlette on uvicorn).

Two APIs over one engine (the ONNX engine when the model has it, as ``predict``):
- rnncli's own: ``POST /predict`` and ``POST /explain`` (``{"texts": [...]}`` -> the
  records ``predict`` / ``explain --format json`` print), ``GET /health``, ``GET /info``
  and ``GET /openapi.json``;
- TF Serving's REST API, so its clients work unchanged: ``POST
  /v1/models/<name>[/versions/1]:predict`` (``instances`` -> ``predictions``, or
  ``inputs`` -> ``outputs``), ``GET /v1/models/<name>`` and ``.../metadata``
  (``tf_api.py``).

Concurrent requests' texts are scored together (:class:`Batcher`): the requests that
queued while the engine was busy go to it in one call (up to ``max_batch`` texts), which
runs them in parallel batches on the cores, and each request gets its own rows back, in
order. So a lone request waits for nothing, and under load the batches grow by
themselves; ``batch_window`` > 0 also waits that long for more. Explanations go through
an :class:`ExplainQueue` (one at a time, a bounded queue) within a token budget per
request. Errors are ``{"error": ...}`` with a 4xx status (a 500 names only an id that
the log repeats with the details), and never stop the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rnncli.core import jsontext
from rnncli.core.terminal import visible
from rnncli.inference.predict import Predictor, capped_text, decode_input, to_score
from rnncli.modeldir import artifacts

SETTINGS_ENV = "RNNCLI_SERVE_SETTINGS"  # how --workers processes get the settings
# Content-Encoding of a request body -> zlib's wbits (None: as sent)
BODY_ENCODINGS = {"identity": None, "gzip": 16 + zlib.MAX_WBITS,
                  "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
PUBLIC_KEYS = ("format_version", "rnncli_version", "created", "settings", "labels",
               "threshold", "calibration", "validation", "test")


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class ServeSettings:
    """What ``rnncli serve`` was told (its options hold the defaults)."""

    model_dir: str
    name: str  # the model's name in TF Serving's paths
    max_texts: int  # per request
    max_body_bytes: int
    batch_window: float  # seconds the first waiting request also waits for others
    max_batch: int  # texts above which no further request joins a batch
    max_explain_tokens: int  # per /explain request (one network run each)
    explain_queue: int  # /explain requests that may wait for the one running


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


class ExplainQueue:
    """Explanations, one request at a time in a thread of its own (a burst of long texts
    cannot take the threads /predict's batches need), with at most ``size`` requests
    waiting (more: 503). A request whose client has gone is dropped while it waits, and
    between its texts once it runs."""

    def __init__(self, explain, *, size: int):
        self._explain = explain  # list of texts -> records
        self._size = size
        self._waiting = 0
        self._lock: asyncio.Lock | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rnncli-explain")
        self.texts = 0  # texts explained so far (GET /health)

    def state(self) -> dict[str, int]:
        """What GET /health says of it: texts explained, requests running and waiting."""
        running = int(self._lock is not None and self._lock.locked())
        return {"texts_explained": self.texts, "explain_running": running,
                "explain_waiting": self._waiting}

    def stop(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def run(self, items: list, gone) -> list:
        """The records of ``items``; ``gone()`` (async) tells whether the client left."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._lock.locked() and self._waiting >= self._size:
            raise RequestError(503, f"{self._waiting} explain requests are waiting already, "
                                    "the most this server queues (--explain-queue); retry "
                                    "in a few seconds", headers={"Retry-After": "5"})
        self._waiting += 1
        try:
            await self._acquire(gone)
        finally:
            self._waiting -= 1
        try:
            loop = asyncio.get_running_loop()
            records = []
            for item in items:
                if await gone():
                    raise _gone()
                records += await loop.run_in_executor(self._thread, self._explain, [item])
                self.texts += 1
            return records
        finally:
            self._lock.release()

    async def _acquire(self, gone) -> None:
        acquiring = asyncio.ensure_future(self._lock.acquire())
        while not acquiring.done():
            await asyncio.wait({acquiring}, timeout=0.25)
            if not acquiring.done() and await gone():
                acquiring.cancel()
                try:
                    await acquiring
                except asyncio.CancelledError:
                    pass
                else:  # it was acquired just before the cancel
                    self._lock.release()
                raise _gone()


def _gone() -> RequestError:
    return RequestError(499, "the client closed the connection")


def explain_tokens(predictor: Predictor, items: list, *, limit: int | None = None) -> int:
    """What explaining ``items`` costs, in runs of the network: one per token the
    explanation covers, plus the text's own scoring (``engine.tokens`` gives the start
    marker and the words: that many), so a text of punctuation alone still counts 1;
    over the texts that are scored. Counting stops once past ``limit`` (the server's loop
    does the counting: it stays short)."""
    total = 0
    for item in items:
        text, status = decode_input(item)
        if to_score([(text, status)]):
            total += max(len(predictor.engine.tokens(text)), 1)
            if limit is not None and total > limit:
                break
    return total


def check_explain_budget(predictor: Predictor, items: list, limit: int) -> None:
    """413 for a request whose explanations would cover more than ``limit`` tokens."""
    tokens = explain_tokens(predictor, items, limit=limit)
    if tokens > limit:
        raise RequestError(413, f"explaining these texts means more than {limit:,} tokens "
                                f"(the limit per request; {tokens:,} in the first "
                                "texts alone): send fewer or shorter texts, or start the "
                                "server with a larger --max-explain-tokens")


# --------------------------------------------------------------------------- requests


async def read_body(request, limit: int) -> bytes:
    """The request's body, inflated when its Content-Encoding is gzip or deflate; refused
    (413) once it passes ``limit`` bytes, sent or inflated: a small body that inflates
    to gigabytes is stopped there, never held whole (415: another encoding)."""
    from starlette.requests import ClientDisconnect

    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in BODY_ENCODINGS:
        raise RequestError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send "
                                "the body as is, gzip or deflate")
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise RequestError(400, "Content-Length is not a number")
    if length is not None and int(length) > limit:
        raise _too_large(limit, "")
    wbits = BODY_ENCODINGS[encoding]
    inflater = None if wbits is None else zlib.decompressobj(wbits)
    body, received = bytearray(), 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit, "")
            while chunk and inflater is not None:
                piece = inflater.decompress(chunk, limit + 1 - len(body))
                chunk = inflater.unconsumed_tail
                body += piece
                if len(body) > limit:
                    raise _too_large(limit, f" once inflated ({encoding})")
            if inflater is None:
                body += chunk
    except ClientDisconnect:
        raise _gone() from None
    except zlib.error as exc:
        raise RequestError(400, f"the body is not valid {encoding} ({exc})") from None
    if inflater is not None and not inflater.eof and received:
        raise RequestError(400, f"the {encoding} body ends too early; send all of it")
    return bytes(body)


def _too_large(limit: int, how: str) -> RequestError:
    return RequestError(413, f"the body is over the limit of {limit:,} bytes{how} "
                             "(--max-body-bytes); send fewer or shorter texts")


async def read_json(request, limit: int) -> Any:
    """The request's JSON body (:func:`read_body`), refused (400) when it is not UTF-8
    JSON."""
    body = await read_body(request, limit)
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
                                f"{max_texts:,} per request: split it, or start the server "
                                "with a larger --max-texts")
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


def public_info(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """What ``GET /info`` shows: the manifest without file hashes, data paths and the
    training history."""
    info = {key: manifest.get(key) for key in PUBLIC_KEYS if key in manifest}
    info["name"] = name
    info["classes"] = list(artifacts.label_names(manifest))
    blend = manifest.get("blend") or {}
    info["rnn_weight"] = blend.get("rnn_weight", 1.0)
    return info


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


def log_error(ident: str, method: str, path: str, exc: BaseException) -> None:
    """The details of a 500 on stderr, under the id its answer names."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    shown = visible(path).replace('"', "\\x22")
    sys.stderr.write(f"{stamp} internal error {ident} in \"{visible(method)} {shown}\":\n"
                     f"{details}")
