"""The Starlette application and the uvicorn server of ``rnncli serve`` (``service.py``
holds the request handling that needs neither)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import time
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rnncli.core.errors import RnnCliError, UsageError
from rnncli.inference.predict import capped_text
from rnncli.render.output import to_json
from rnncli.serve import service, tf_api
from rnncli.serve.service import RequestError, ServeSettings

TF_PREFIX = "/v1/models/"


def json_response(value: Any, status: int = 200) -> Response:
    return Response(to_json(value), status_code=status, media_type="application/json")


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    response = json_response({"error": message}, status)
    response.headers.update(headers or {})
    return response


def create_app(settings: ServeSettings | None = None, predictor=None) -> Starlette:
    """The application (a factory for uvicorn: with no arguments, the settings come from
    the environment ``rnncli serve`` set)."""
    settings = settings or service.settings_from_env()
    endpoints = Endpoints(settings, predictor or service.load_predictor(settings))
    handlers = {
        RequestError: lambda request, exc: error_response(exc.status, exc.message,
                                                          exc.headers),
        RnnCliError: _unexpected,  # a model's fault while serving: a 500 like any other
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    return RequestLog(Starlette(routes=endpoints.routes(), lifespan=endpoints.lifespan,
                                exception_handlers=handlers))


class Endpoints:
    """The routes of one application, with what they share: the settings, the predictor,
    the batcher that scores for it and the queue that explains with it."""

    def __init__(self, settings: ServeSettings, predictor):
        self.settings = settings
        self.predictor = predictor
        self.batcher = service.Batcher(predictor.scores, window=settings.batch_window,
                                       max_batch=settings.max_batch)
        self.info = service.public_info(predictor.manifest, settings.name)
        self.explainer = service.ExplainQueue(self.explain_texts,
                                              size=settings.explain_queue)

    def explain_texts(self, items: list) -> list:
        from rnncli.inference.explain import explain_records

        return explain_records(self.predictor, items)

    def routes(self) -> list[Route]:
        routes = [
            Route("/predict", self.predict, methods=["POST"]),
            Route("/explain", self.explain, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/info", self.show_info, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route(TF_PREFIX + "{spec:path}", self.tf_serving, methods=["GET", "POST"]),
        ]
        # TF Serving's paths are case-insensitive (/V1/MODELS/...)
        routes[-1].path_regex = re.compile(f"^{TF_PREFIX}(?P<spec>.*)$", re.IGNORECASE)
        return routes

    @asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        try:
            yield
        finally:
            await self.batcher.stop()
            self.explainer.stop()
            self.predictor.close()

    async def predict(self, request: Request) -> Response:
        body = await service.read_json(request, self.settings.max_body_bytes)
        texts = service.texts_field(body, self.settings)
        return json_response(await service.predict_records(self.predictor, self.batcher,
                                                           texts))

    async def explain(self, request: Request) -> Response:
        if getattr(self.predictor.engine, "name", "") != "onnx":
            raise RequestError(501, "explain runs on the ONNX engine, which this model "
                                    "lacks (trained by an older rnncli); retrain it")
        body = await service.read_json(request, self.settings.max_body_bytes)
        items = [capped_text(t) for t in service.texts_field(body, self.settings)]
        service.check_explain_budget(self.predictor, items,
                                     self.settings.max_explain_tokens)
        return json_response(await self.explainer.run(items, request.is_disconnected))

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "name": self.settings.name,
                              "pid": os.getpid(), "engine_calls": self.batcher.calls,
                              "texts_scored": self.batcher.texts,
                              **self.explainer.state()})

    async def show_info(self, request: Request) -> Response:
        return json_response(self.info)

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(self.settings))

    async def tf_serving(self, request: Request) -> Response:
        name, labels = self.settings.name, self.predictor.label_names
        target = tf_api.parse_path(request.path_params["spec"], request.method, name)
        if target.verb is None:
            if target.metadata:
                return json_response(tf_api.metadata(name, labels))
            return json_response(tf_api.model_status())
        if target.verb != "predict":
            raise tf_api.not_predict(target.verb)
        body = await service.read_json(request, self.settings.max_body_bytes)
        asked = tf_api.predict_request(body, labels, self.settings.max_texts)
        scores = await self.batcher.score(asked.texts)
        return json_response(tf_api.predict_answer(scores, asked, labels))


def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:
        response = error_response(405, f"{request.method} is not allowed on "
                                       f"{request.url.path}")
        response.headers.update(exc.headers or {})
        return response
    if exc.status_code == 404:
        return error_response(404, f"no such endpoint: {request.url.path} (see "
                                   "/openapi.json)")
    return error_response(exc.status_code, str(exc.detail))


def _unexpected(request: Request, exc: Exception) -> Response:
    """A 500 that tells the client nothing of the server (no paths, no exception text):
    an id that the server's log repeats with the details."""
    ident = secrets.token_hex(6)
    service.log_error(ident, request.method, request.url.path, exc)
    return error_response(500, f"internal error (id {ident}); the server's log has the "
                               "details")


class RequestLog:
    """ASGI middleware: one line per request on stderr (client, method, path, status,
    time)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, answered = time.perf_counter(), [500], [False]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0], answered[0] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # noqa: BLE001
            if not answered[0]:  # uvicorn reports it
                raise
            # answered by _unexpected, which logged it under its id: Starlette raises it
            # again only for the server's own log
        finally:
            client = scope.get("client") or ("-", 0)
            path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
            service.log_line(f"{client[0]}:{client[1]}", scope["method"],
                           path.decode("latin-1"), status[0], time.perf_counter() - started)


def openapi_document(settings: ServeSettings) -> dict[str, Any]:
    """The API in OpenAPI 3.1."""
    texts = {"type": "object", "required": ["texts"], "additionalProperties": False,
             "properties": {"texts": {"type": "array", "minItems": 1,
                                      "maxItems": settings.max_texts,
                                      "items": {"type": "string"}}}}
    error = {"description": "refused", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    errors = {str(code): error for code in (400, 404, 405, 413, 415, 500)}

    def post(summary, request, answer, more=None):
        return {"post": {"summary": summary, "requestBody": {"required": True, "content": {
            "application/json": {"schema": request}}}, "responses": {
            "200": {"description": answer}, **errors, **(more or {})}}}

    def get(summary, answer):
        return {"get": {"summary": summary, "responses": {"200": {"description": answer}}}}

    tf_request = {"type": "object", "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array", "items": {"type": ["string", "object"]}},
        "inputs": {"type": ["array", "object"]}}}
    name = settings.name
    return {"openapi": "3.1.0",
            "info": {"title": f"rnncli serve: {name}", "version": "1"},
            "paths": {
                "/predict": post("Label texts (the records of rnncli predict --format json)",
                                 texts, "one record per text: text, label, score, status, "
                                        "scores"),
                "/explain": post("Explain texts (the records of rnncli explain --format "
                                 "json)", texts, "one record per text, with tokens",
                                 {"501": {"description": "the model has no ONNX files"},
                                  "503": {"description": "too many explain requests "
                                                         "waiting (Retry-After)"}}),
                "/health": get("Liveness", "{\"status\": \"ok\"}"),
                "/info": get("The model (the manifest's public part)", "the model"),
                f"/v1/models/{name}:predict": post(
                    "TF Serving's predict (row or columnar format)", tf_request,
                    "{\"predictions\": [...]} or {\"outputs\": [...]}"),
                f"/v1/models/{name}/versions/1:predict": post(
                    "The same, for the one version", tf_request, "as above"),
                f"/v1/models/{name}": get("TF Serving's model status", "the status"),
                f"/v1/models/{name}/versions/1": get("The same, for the one version",
                                                     "the status"),
                f"/v1/models/{name}/metadata": get("TF Serving's model metadata",
                                                   "the SavedModel's signatures"),
            }}


# --------------------------------------------------------------------------- server


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (uvicorn would log it and exit 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); choose "
                             "another --port or --host") from None


def run_server(settings: ServeSettings, *, host: str, port: int, workers: int,
               grace: float, on_ready=None) -> None:
    """Serve until SIGINT or SIGTERM, then answer the requests in flight (for at most
    ``grace`` seconds) and return; a second SIGINT stops at once (KeyboardInterrupt)."""
    import uvicorn

    service.settings_to_env(settings)
    config = dict(host=host, port=port, access_log=False, log_level="warning",
                  timeout_graceful_shutdown=grace, lifespan="on")
    if workers > 1:
        service.load_predictor(settings).close()  # a bad model fails here, not in each worker
    else:
        app = create_app(settings)
    check_port(host, port)
    if on_ready:
        on_ready()
    # uvicorn answers SIGINT/SIGTERM by a graceful shutdown, then raises the signal again
    # under the handlers it found: these make that a plain return (exit 0).
    previous = {sig: signal.signal(sig, lambda *_: None)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if workers > 1:
            uvicorn.run("rnncli.serve.app:create_app", factory=True, workers=workers,
                        **config)
        else:
            server = uvicorn.Server(uvicorn.Config(app, **config))
            server.run()
            if server.force_exit:  # a second Ctrl-C: requests in flight were dropped
                raise KeyboardInterrupt
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
