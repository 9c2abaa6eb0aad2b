"""Load test of `rnncli serve` on localhost, beside a plain server around the Keras model.

    python benchmarks/serve.py MODEL_DIR [--seconds 10] [--clients 1 8 64] [--sizes 1 32]
    python benchmarks/serve.py MODEL_DIR --explain-load [--seconds 10]

Starts `rnncli serve` (ONNX engine, batching) and, as the reference, a plain
one-request-at-a-time HTTP server (Python's http.server, single-threaded) around the saved
Keras model in TensorFlow, each in a process of its own. For each number of concurrent
clients and texts per request, every client sends POST requests (texts from the model's
test split, a new connection per request for both servers) for `--seconds`; printed:
requests/s, texts/s and p50/p99 latency. Also printed: the streaming predict's texts/s
(the ONNX engine in batches of 256, in-process), which many small requests should
approach. The clients run in this process (threads), on the same cores as the servers.

--explain-load: `/predict` latency (one client, one text per request) alone, then while
two clients keep sending `/explain` requests as large as the server takes (long reviews
up to `--max-explain-tokens`), then while twelve do (more than `--explain-queue` lets
wait); printed: /predict's p50/p99 and the explain answers by status.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--explain-load", action="store_true")
    parser.add_argument("--reference-server", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_server is not None:
        return reference_server(args.model_dir, args.reference_server)
    if args.explain_load:
        return explain_load(args.model_dir, args.seconds)
    texts = test_texts(args.model_dir)
    print(f"model {args.model_dir}; {len(texts)} test texts, {os.cpu_count()} cores; "
          f"{args.seconds:g} s per run")
    rate = stream_rate(args.model_dir, texts)
    print(f"streaming predict (ONNX engine, batches of 256): {rate:,.0f} texts/s")
    servers = {"rnncli serve": start([sys.executable, "-m", "rnncli", "serve", "-m",
                                      args.model_dir, "--port", "{port}"]),
               "plain Keras server": start([sys.executable, __file__, args.model_dir,
                                            "--reference-server", "{port}"])}
    try:
        print("| server | clients | texts/request | requests/s | texts/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for size in args.sizes:
            for clients in args.clients:
                for name, (_, port) in servers.items():
                    got = load(port, texts, clients=clients, size=size, seconds=args.seconds)
                    print(f"| {name} | {clients} | {size} | {got['rps']:.1f} | "
                          f"{got['tps']:.0f} | {got['p50']:.1f} | {got['p99']:.1f} |",
                          flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)


def test_texts(model_dir: str) -> list[str]:
    with gzip.open(Path(model_dir) / "test.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def stream_rate(model_dir: str, texts: list[str]) -> float:
    from rnncli.inference.predict import Predictor

    many = (texts * (3000 // len(texts) + 1))[:3000]
    with Predictor.load(model_dir) as predictor:
        predictor.scores(many[:256])
        start = time.perf_counter()
        for i in range(0, len(many), 256):
            predictor.scores(many[i:i + 256])
        return len(many) / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str]):
    port = free_port()
    proc = subprocess.Popen([c.replace("{port}", str(port)) for c in command],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            post(port, "/predict", {"texts": ["warm up"]})
            return proc, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server {command} did not start")


def post(port: int, path: str, body) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={
            "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def load(port: int, texts: list[str], *, clients: int, size: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = [0]
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        mine, failed = [], 0
        while time.perf_counter() < stop_at:
            chunk = [texts[i] for i in rng.integers(0, len(texts), size)]
            started = time.perf_counter()
            try:
                status, _ = post(port, "/predict", {"texts": chunk})
            except OSError:
                status = None
            failed += status != 200
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    assert not failures[0], f"{failures[0]} failed requests"
    ms = np.array(latencies) * 1000
    return {"rps": len(ms) / elapsed, "tps": len(ms) * size / elapsed,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def explain_load(model_dir: str, seconds: float) -> None:
    from rnncli.cli.serve import EXPLAIN_TOKENS
    from rnncli.inference.predict import Predictor
    from rnncli.serve.service import explain_tokens

    texts = test_texts(model_dir)
    with Predictor.load(model_dir) as predictor:  # as many long reviews as one request takes
        longest = sorted(texts, key=len, reverse=True)
        big, used = [], 0
        for text in longest:
            cost = explain_tokens(predictor, [text])
            if used + cost > EXPLAIN_TOKENS:
                break
            big.append(text)
            used += cost
    print(f"model {model_dir}; {os.cpu_count()} cores; {seconds:g} s per row; each /explain "
          f"request: {len(big)} reviews, {used:,} tokens (limit {EXPLAIN_TOKENS:,})")
    proc, port = start([sys.executable, "-m", "rnncli", "serve", "-m", model_dir, "--port",
                        "{port}"])
    try:
        print("| /explain clients | /predict p50 ms | p99 ms | /predict requests/s | "
              "/explain answers |")
        print("|---|---|---|---|---|")
        for explainers in (0, 2, 12):
            answers: dict[int, int] = {}
            stop = threading.Event()

            def explain_client(stop=stop, answers=answers) -> None:
                while not stop.is_set():
                    status, _ = post(port, "/explain", {"texts": big})
                    answers[status] = answers.get(status, 0) + 1
                    if status == 503:
                        time.sleep(1)

            threads = [threading.Thread(target=explain_client) for _ in range(explainers)]
            for t in threads:
                t.start()
            time.sleep(1 if explainers else 0)
            got = load(port, texts, clients=1, size=1, seconds=seconds)
            stop.set()
            for t in threads:
                t.join()
            shown = ", ".join(f"{n} x {code}" for code, n in sorted(answers.items())) or "-"
            print(f"| {explainers} | {got['p50']:.1f} | {got['p99']:.1f} | {got['rps']:.0f} | "
                  f"{shown} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)


def reference_server(model_dir: str, port: int) -> None:
    """POST /predict {"texts": [...]} -> positive-class probabilities, one request at a
    time, the saved Keras model in TensorFlow (what a hand-written wrapper does)."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import tensorflow as tf

    from rnncli.network import loading

    model = loading.load_keras_model(model_dir)
    serve = tf.function(lambda x: model(x, training=False),
                        input_signature=[tf.TensorSpec([None], tf.string)])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            scores = serve(tf.constant(body["texts"])).numpy()
            out = json.dumps({"scores": scores.tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    HTTPServer.request_queue_size = 128
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
