"""``rnncli serve``: the command (registered on the group in main.py); the server is in
rnncli/serve/ (service.py and app.py)."""

from __future__ import annotations

import click

from rnncli.cli.context import RnnCliCommand
from rnncli.cli.options import model_option
from rnncli.core.errors import UsageError

EXPLAIN_TOKENS = 50_000  # per /explain request: 1 to 2 s on 2 cores (docs/serve.md)


@click.command(cls=RnnCliCommand)
@model_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the server has no authentication, so keep it on "
                   "localhost or a private network (see docs/serve.md).")
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True,
              help="Port (8501 is TF Serving's REST port).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes, each with its own copy of the model.")
@click.option("--name", default=None, metavar="NAME",
              help="The model's name in TF Serving paths (/v1/models/NAME:predict) "
                   "[default: the model directory's name].")
@click.option("--max-texts", type=click.IntRange(1), default=100_000, show_default=True,
              help="Most texts in one request (more: HTTP 413); --max-body-bytes bounds "
                   "memory anyway.")
@click.option("--max-body-bytes", type=click.IntRange(1024), default=16 * 2**20,
              show_default=True, help="Largest request body (larger: HTTP 413).")
@click.option("--batch-window-ms", type=click.FloatRange(0, 1000), default=0.0,
              show_default=True, help="How long a request waits for others to be scored "
                                      "with it (requests that arrive while the engine is "
                                      "busy are scored together anyway).")
@click.option("--max-batch", type=click.IntRange(1), default=512, show_default=True,
              help="Texts above which no further request joins a batch (a request is "
                   "never split).")
@click.option("--max-explain-tokens", type=click.IntRange(1), default=EXPLAIN_TOKENS,
              show_default=True, help="Most tokens one POST /explain may cover, over all "
                                      "its texts (each token is a run of the network, "
                                      "and each text one more; more: HTTP 413).")
@click.option("--explain-queue", type=click.IntRange(0), default=8, show_default=True,
              help="POST /explain requests that may wait while one runs (more: HTTP 503 "
                   "with Retry-After).")
@click.option("--shutdown-timeout", type=click.FloatRange(0), default=30.0,
              show_default=True, help="Seconds the requests in flight get to finish after "
                                      "SIGINT or SIGTERM.")
def serve(model_dir, host, port, workers, name, max_texts, max_body_bytes, batch_window_ms,
          max_batch, max_explain_tokens, explain_queue, shutdown_timeout):
    """Serve the model over HTTP: rnncli's API (POST /predict, POST /explain, GET /health,
    GET /info, GET /openapi.json) and TF Serving's REST API (POST
    /v1/models/NAME:predict, GET /v1/models/NAME).

    One line per request goes to stderr; Ctrl-C or SIGTERM stops it after the requests
    in flight are answered (exit 0); a second Ctrl-C stops it at once (exit 130).
    """
    from rnncli.render import output
    from rnncli.serve.app import run_server
    from rnncli.serve.service import ServeSettings

    if name is None:
        from pathlib import Path  # here: pathlib (and urllib.parse) would cost --help 4 ms

        name = Path(model_dir).resolve().name
        if not name or ":" in name:
            raise UsageError(f"the model directory's name ({name!r}) cannot be a name in "
                             "TF Serving's paths; give --name")
    elif not name or "/" in name or ":" in name:
        raise UsageError(f"--name {name!r}: give a name without '/' or ':'")
    settings = ServeSettings(model_dir=str(model_dir), name=name, max_texts=max_texts,
                             max_body_bytes=max_body_bytes,
                             batch_window=batch_window_ms / 1000, max_batch=max_batch,
                             max_explain_tokens=max_explain_tokens,
                             explain_queue=explain_queue)
    shown = f"[{host}]" if ":" in host else host
    console = output.err_console()

    def ready():
        if host not in ("127.0.0.1", "localhost", "::1"):
            output.tell(console, f"warning: listening on {host} with no authentication: "
                        "anyone who can reach this port can use the model; see docs/serve.md "
                        "for a reverse proxy")
        output.tell(console, f"serving {model_dir} as {name!r} on http://{shown}:{port} "
                    f"({workers} worker{'s' if workers > 1 else ''}); try: curl "
                    f"-d '{{\"texts\": [\"great movie\"]}}' http://{shown}:{port}/predict")

    run_server(settings, host=host, port=port, workers=workers, grace=shutdown_timeout,
               on_ready=ready)
    console.print("stopped", markup=False)
