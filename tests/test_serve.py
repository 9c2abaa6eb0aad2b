"""rnncli serve: the real server in a subprocess on a free localhost port, talked to over
real HTTP: both APIs, the bad requests, batching under concurrency, graceful shutdown."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from conftest import positive_probability

from rnncli.cli.main import cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``rnncli serve`` in a process of its own; ``command``: what runs rnncli's CLI."""

    def __init__(self, model_dir, *extra: str, command=(sys.executable, "-m", "rnncli")):
        self.name = model_dir.name
        self.model_dir = model_dir
        for _ in range(3):  # a port found free may be taken by another process meanwhile
            self.port = free_port()
            self.proc = subprocess.Popen(
                [*command, "serve", "-m", str(model_dir), "--port",
                 str(self.port), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**os.environ, "NO_COLOR": "1"})
            stderr = self._wait_until_serving()
            if stderr is None:
                return
            if "choose another --port" not in stderr:
                raise AssertionError(stderr)
        raise AssertionError(stderr)

    def _wait_until_serving(self) -> str | None:
        """None once our process answers /health, else its stderr when it has exited."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.stderr.read().decode()
            try:
                if self.request("GET", "/health")[0] == 200:
                    return None
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else None)
        finally:
            conn.close()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        return code, self.proc.stderr.read().decode()


@pytest.fixture(scope="module")
def server(gru_model):
    running = Server(gru_model, "--max-texts", "50", "--max-body-bytes", "200000")
    yield running
    if running.proc.poll() is None:
        running.stop()


def predicted(model_dir, texts):
    result = CliRunner().invoke(cli, ["predict", "-m", str(model_dir), "-f", "json", *texts])
    return json.loads(result.stdout)


TEXTS = ["great movie", "a dull, boring film", "Ça n'était pas terrible", "这家酒店很好"]


def test_rnncli_api_gives_predicts_records(server, gru_model):
    status, records = server.request("POST", "/predict", {"texts": TEXTS + ["  "]})
    assert status == 200
    assert records[:4] == predicted(gru_model, TEXTS)
    assert records[4]["status"] == "empty" and records[4]["score"] is None
    status, explained = server.request("POST", "/explain", {"texts": TEXTS[:2]})
    assert status == 200 and [r["label"] for r in explained] == [r["label"] for r in records[:2]]
    assert explained[0]["tokens"][0]["token"] == "great"
    status, health = server.request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["name"] == server.name
    status, info = server.request("GET", "/info")
    assert status == 200 and info["classes"] == ["negative", "positive"]
    assert "files" not in info and "data" not in info
    status, spec = server.request("GET", "/openapi.json")
    assert spec["openapi"].startswith("3.") and "/predict" in spec["paths"]


def test_tf_serving_api(server, gru_model):
    scores = [positive_probability(r) for r in predicted(gru_model, TEXTS)]
    name = server.name
    status, body = server.request("POST", f"/v1/models/{name}:predict", {"instances": TEXTS})
    assert status == 200
    assert [round(p[0], 6) for p in body["predictions"]] == scores
    status, body = server.request("POST", f"/v1/models/{name}/versions/1:predict",
                                  {"signature_name": "serving_default",
                                   "inputs": {"text": TEXTS}})
    assert status == 200 and [round(p[0], 6) for p in body["outputs"]] == scores
    status, body = server.request("POST", f"/v1/models/{name}:predict",
                                  {"instances": [{"text": t} for t in TEXTS]})
    assert [round(p[0], 6) for p in body["predictions"]] == scores
    for path in (f"/V1/MODELS/{name}/VERSIONS/01:predict",  # TF Serving's path rules
                 f"/v1/Models/{name}/versions/1:predict"):
        status, body = server.request("POST", path, {"instances": TEXTS})
        assert status == 200 and [round(p[0], 6) for p in body["predictions"]] == scores
    for path in (f"/v1/models/{name}", f"/v1/models/{name}/versions/1"):
        status, body = server.request("GET", path)
        assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = server.request("GET", f"/v1/models/{name}/metadata")
    assert status == 200 and "serving_default" in json.dumps(body)
    b64 = [{"text": {"b64": base64.b64encode(t.encode()).decode()}} for t in TEXTS]
    status, body = server.request("POST", f"/v1/models/{name}:predict", {"instances": b64})
    assert status == 200 and [round(p[0], 6) for p in body["predictions"]] == scores


@pytest.mark.parametrize("method, path, body, status, words", [
    ("POST", "/predict", b"{not json", 400, "not valid JSON"),
    ("POST", "/predict", b'{"texts": ["ok"], "n": ' + b"9" * 5000 + b"}", 400,
     "a number too long to read"),
    ("POST", "/predict", b"", 400, "body is empty"),
    ("POST", "/predict", b'{"texts": ["\xff\xfe"]}', 400, "not valid UTF-8"),
    ("POST", "/predict", {"texts": "great"}, 400, "must be a list of strings"),
    ("POST", "/predict", {"texts": []}, 400, "is empty"),
    ("POST", "/predict", {"texts": ["ok", 3]}, 400, "texts[1] is a number"),
    ("POST", "/predict", {"text": ["ok"]}, 400, "\"texts\""),
    ("POST", "/predict", ["ok"], 400, "\"texts\""),
    ("POST", "/predict", {"texts": ["ok"] * 51}, 413,
     "the limit is 50 per request: split it, or start the server with a larger --max-texts"),
    ("POST", "/predict", {"texts": ["x" * 300000]}, 413, "200,000 bytes"),
    ("GET", "/predict", None, 405, "GET is not allowed"),
    ("DELETE", "/health", None, 405, "not allowed"),
    ("GET", "/nowhere", None, 404, "no such endpoint"),
    ("POST", "/v1/models/other:predict", {"instances": ["x"]}, 404, "no model named 'other'"),
    ("POST", "/v1/models/{name}/versions/2:predict", {"instances": ["x"]}, 404, "version"),
    ("POST", "/v1/models/{name}:classify", {"examples": [{"text": "x"}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("POST", "/v1/models/{name}/versions/1:regress", {"examples": [{"text": "x"}]}, 400,
     "Expected regression signature method_name to be tensorflow/serving/regress"),
    ("POST", "/v1/models/{name}/labels/stable:predict", {"instances": ["x"]}, 400,
     "Unrecognized servable version label: stable"),
    ("POST", "/v1/models/{name}:PREDICT", {"instances": ["x"]}, 400, "Malformed request"),
    ("POST", "/v1/models/{name}/versions/x:predict", {"instances": ["x"]}, 404,
     "no such endpoint"),
    ("POST", "/v1/models/{name}/versions/002:predict", {"instances": ["x"]}, 404,
     "no version 2"),
    ("POST", "/v1/models/{name}/versions/1/labels/a:predict", {"instances": ["x"]}, 404,
     "no such endpoint"),  # a version or a label, not both (TF Serving: 400)
    ("GET", "/v1/models/{name}/labels/stable", None, 400, "Unrecognized servable version"),
    ("POST", "/v1/models/{name}:predict", {"instances": ["x"], "signature_name": 3}, 400,
     "'signature_name' key must be a string value."),
    ("POST", "/v1/models/{name}:predict", {"instances": ["x"], "inputs": ["x"]}, 400,
     "exactly one"),
    ("POST", "/v1/models/{name}:predict", {"instances": [1]}, 400, "instances[0] is a number"),
    ("POST", "/v1/models/{name}:predict", {"instances": [{"nope": "x"}]}, 400,
     "names inputs 'nope'"),
    ("POST", "/v1/models/{name}:predict", {"instances": [{"b64": "%%%"}]}, 400,
     "not base64"),
    ("POST", "/v1/models/{name}:predict", {"instances": ["x"], "signature_name": "s"}, 400,
     "Serving signature name: 's' not found in signature def; this model has serve, "
     "serving_default"),
    ("GET", "/v1/models/{name}:predict", None, 405, "not allowed"),
])
def test_bad_requests_get_a_json_error_and_the_server_stays_up(server, method, path, body,
                                                               status, words):
    got, answer = server.request(method, path.format(name=server.name), body)
    assert got == status and words in answer["error"], answer
    assert server.request("GET", "/health")[0] == 200


def test_odd_texts_get_one_record_each(server):
    texts = ["\ud800 lone surrogate", "ok", "\x00nul", "😀"]
    body = json.dumps({"texts": texts}).encode()  # \ud800 travels as a JSON escape
    status, records = server.request("POST", "/predict", body)
    assert status == 200 and [r["status"] for r in records] == ["invalid_utf8", "ok", "ok",
                                                               "ok"]
    assert all(r["score"] is not None for r in records)


def test_text_that_is_not_utf8_is_scored_with_replacement_characters_everywhere(server):
    """One rule (predict.utf8_text): U+FFFD for each bad byte or lone surrogate, scored;
    rnncli's records say invalid_utf8, TF Serving's answers have no status."""
    replaced = "\ufffd great film \ufffd"
    _, (want,) = server.request("POST", "/predict", {"texts": [replaced]})
    assert want["status"] == "ok"
    status, records = server.request("POST", "/predict", json.dumps(
        {"texts": ["\ud800 great film \udfff"]}).encode())
    assert status == 200 and records[0]["status"] == "invalid_utf8"
    assert records[0]["text"] == replaced and records[0]["scores"] == want["scores"]
    raw = base64.b64encode(b"\xff great film \xc3").decode()
    path = f"/v1/models/{server.name}:predict"
    for body in ({"instances": [{"b64": raw}, "\ud800 great film \udfff"]},
                 {"inputs": {"text": [{"b64": raw}, "\ud800 great film \udfff"]}}):
        status, answer = server.request("POST", path, json.dumps(body).encode())
        assert status == 200, answer
        values = answer.get("predictions") or answer["outputs"]
        assert [round(v[0], 6) for v in values] == [want["scores"]["positive"]] * 2
    with subprocess.Popen([sys.executable, "-m", "rnncli", "predict", "-m",
                           str(server.model_dir), "-f", "jsonl"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        out, err = proc.communicate(b"\xff great film \xc3\n")
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 3 and b"U+FFFD" in err
    assert (record["text"], record["scores"], record["status"]) == (
        replaced, want["scores"], "invalid_utf8")


def test_a_very_long_text_is_truncated_like_predict(gru_model):
    running = Server(gru_model)
    try:
        status, records = running.request("POST", "/predict",
                                          {"texts": ["great " * 150_000, "fine"]})
        assert status == 200
        assert [r["status"] for r in records] == ["truncated", "ok"]
        assert len(records[0]["text"].encode()) == 800_000
        status, body = running.request("POST", f"/v1/models/{running.name}:predict",
                                       {"instances": ["fine"] * 5000})  # a batch client's
        assert status == 200 and len(body["predictions"]) == 5000
    finally:
        assert running.stop()[0] == 0


def test_concurrent_requests_are_batched_and_answered_in_order(gru_model):
    """40 concurrent requests of 3 texts share engine calls of at most --max-batch 12
    texts (4 requests): at least 10 calls, and well under one a request (30: the bound
    leaves room for a busy machine, where a client's thread may start after a window of
    0.5 s has closed; unmerged, it would be 40)."""
    texts = [f"review {i}: " + ("great " if i % 3 else "boring ") * (i % 7 + 1)
             for i in range(120)]
    expected = {r["text"]: r for r in predicted(gru_model, texts)}
    requests = [texts[i:i + 3] for i in range(0, len(texts), 3)]  # 40 requests of 3
    running = Server(gru_model, "--max-batch", "12", "--batch-window-ms", "500")
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(
                lambda chunk: running.request("POST", "/predict", {"texts": chunk}), requests))
        health = running.request("GET", "/health")[1]
    finally:
        assert running.stop()[0] == 0
    assert health["texts_scored"] == 120
    assert 120 // 12 <= health["engine_calls"] <= 30, health  # merged, never past 12
    for chunk, (status, records) in zip(requests, answers):
        assert status == 200 and [r["text"] for r in records] == chunk
        assert records == [expected[t] for t in chunk]


def test_sigterm_answers_requests_in_flight_then_exits_0(gru_model):
    running = Server(gru_model, "--batch-window-ms", "1000")  # a request waits 1 s
    pending = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    pending.request("POST", "/predict", body=json.dumps({"texts": ["great movie"]}).encode())
    # Its bytes reached the server before this request's connection was made: once this
    # one is answered, the server has read ours, which now waits in the batch window.
    # (A fixed pause did not ensure that: on a busy machine the request could come after
    # SIGTERM, be refused, and the test failed.)
    assert running.request("GET", "/health")[0] == 200
    code, stderr = running.stop()
    response = pending.getresponse()  # sent before the server exited, read from the socket
    status, data = response.status, response.read()
    pending.close()
    assert code == 0, stderr
    assert status == 200 and json.loads(data)[0]["label"], (status, data, stderr)
    lines = [line for line in stderr.splitlines() if "\"POST /predict\" 200" in line]
    assert len(lines) == 1 and "stopped" in stderr and "Traceback" not in stderr


def test_a_bad_model_or_a_taken_port_fail_before_serving(tmp_path, gru_model):
    result = CliRunner().invoke(cli, ["serve", "-m", str(tmp_path / "none"), "--port",
                                      str(free_port())])
    assert result.exit_code == 4
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "-m", str(gru_model), "--port", str(port)])
    assert result.exit_code == 2 and "choose another --port" in result.output


def test_several_workers_serve_and_stop(gru_model):
    running = Server(gru_model, "--workers", "2")
    try:
        with ThreadPoolExecutor(8) as pool:  # busy workers: both take connections
            answers = list(pool.map(lambda _: running.request("POST", "/predict",
                                                              {"texts": ["fine " * 400]}),
                                    range(40)))
        assert {status for status, _ in answers} == {200}
        pids = {running.request("GET", "/health")[1]["pid"] for _ in range(20)}
        with ThreadPoolExecutor(8) as pool:
            pids |= {h["pid"] for _, h in pool.map(lambda _: running.request("GET", "/health"),
                                                   range(40))}
        assert len(pids) == 2
    finally:
        code, stderr = running.stop()
    assert code == 0, stderr


def test_the_log_has_one_safe_line_per_request_and_no_traceback(gru_model):
    running = Server(gru_model)
    try:
        raw = socket.create_connection(("127.0.0.1", running.port))  # gone mid-body
        raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                    b'{"texts":')
        # answered after the half request was sent: the server has read it (no sleep)
        status, body = running.request("GET", "/x%0a2026-01-01T00:00:00Z%20forged%1b[31m")
        assert status == 404
        raw.close()
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        conn.request("GET", "/predict")
        response = conn.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "POST"
        response.read()
        conn.request("HEAD", f"/v1/models/{running.name}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:  # SIGTERM: uvicorn lets every request it has read finish (and log) first
        code, stderr = running.stop()
    assert code == 0 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("20")]
    assert len(lines) == 1 + 4  # the /health probe that saw the server start, then ours
    assert '"POST /predict" 499' in stderr  # the client that went away
    assert "%0a2026" in stderr and "\x1b" not in stderr  # as sent, percent-encoded
    assert not any(line.startswith("2026-01-01") for line in stderr.splitlines())


# --------------------------------------------------------------------------- bodies


def test_gzip_and_deflate_bodies_are_inflated_and_bounded_once_inflated(server):
    body = json.dumps({"texts": TEXTS}).encode()
    status, plain = server.request("POST", "/predict", body)
    assert status == 200
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                             ("GZip", gzip.compress(body)), ("identity", body)):
        status, got = server.request("POST", "/predict", packed,
                                     {"Content-Encoding": encoding})
        assert (status, got) == (200, plain), encoding
    status, got = server.request("POST", f"/v1/models/{server.name}:predict",
                                 gzip.compress(json.dumps({"instances": TEXTS}).encode()),
                                 {"Content-Encoding": "gzip"})
    assert status == 200 and len(got["predictions"]) == len(TEXTS)
    status, got = server.request("POST", "/predict", gzip.compress(b" " * 300_000),
                                 {"Content-Encoding": "gzip"})
    assert status == 413 and "200,000 bytes once inflated (gzip)" in got["error"]
    for bad, code, words in ((b"x" * 100, 400, "not valid gzip"),
                             (gzip.compress(body)[:-12], 400, "ends too early")):
        status, got = server.request("POST", "/predict", bad, {"Content-Encoding": "gzip"})
        assert status == code and words in got["error"], got
    status, got = server.request("POST", "/predict", body, {"Content-Encoding": "br"})
    assert status == 415 and "'br' is not supported" in got["error"]
    assert server.request("GET", "/health")[0] == 200


def peak_memory_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_a_small_body_that_inflates_to_200_mb_is_refused_without_holding_it(gru_model):
    running = Server(gru_model)  # the default limit, 16 MB
    try:
        bomb = gzip.compress(b" " * (200 * 2**20), 9)
        assert len(bomb) < 16 * 2**20 // 50  # far under the limit as sent
        before = peak_memory_mb(running.proc.pid)
        status, got = running.request("POST", "/predict", bomb, {"Content-Encoding": "gzip"})
        assert status == 413 and "16,777,216 bytes once inflated" in got["error"]
        assert peak_memory_mb(running.proc.pid) - before < 100  # not the 200 MB
    finally:
        running.stop()


# --------------------------------------------------------------------------- explain


def raw_post(port: int, path: str, body) -> socket.socket:
    """A POST sent whole on a socket the caller closes (a client that leaves)."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_explain_has_a_token_budget_per_request(gru_model):
    running = Server(gru_model, "--max-explain-tokens", "42")
    try:
        status, records = running.request("POST", "/explain",
                                          {"texts": ["great movie " * 10, "fine " * 20]})
        assert status == 200 and [len(r["tokens"]) for r in records] == [20, 20]
        status, body = running.request("POST", "/explain", {"texts": ["great movie " * 10,
                                                                      "fine " * 21]})
        assert status == 413, body
        assert "more than 42 tokens (the limit per request; 43 in" in body["error"]
        assert "--max-explain-tokens" in body["error"]
        # texts without words still cost their scoring: they cannot slip past the budget
        status, body = running.request("POST", "/explain", {"texts": ["!!!"] * 43})
        assert status == 413 and "more than 42 tokens" in body["error"], body
        status, records = running.request("POST", "/predict", {"texts": ["fine " * 21]})
        assert status == 200  # the budget is explain's
    finally:
        running.stop()


def test_explain_queue_is_bounded_and_work_for_gone_clients_is_dropped(gru_model):
    running = Server(gru_model, "--explain-queue", "1", "--max-explain-tokens", "10000000",
                     "--max-texts", "100000")
    long = {"texts": [f"review {i}: " + "a great and moving film " * 20
                      for i in range(1500)]}  # about 2 s of explaining, or more
    short = {"texts": ["great movie"]}
    answers = {}

    def health_until(condition) -> dict:
        """GET /health until ``condition`` holds of it (no sleeps guessed at)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health = running.request("GET", "/health")[1]
            if condition(health):
                return health
            time.sleep(0.02)
        raise AssertionError(f"/health never showed that: {health}")

    try:
        first = threading.Thread(target=lambda: answers.update(
            a=running.request("POST", "/explain", long)))
        first.start()
        health_until(lambda h: h["explain_running"] == 1)
        waiting = raw_post(running.port, "/explain", short)  # queued behind it
        health_until(lambda h: h["explain_waiting"] == 1)
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
        conn.request("POST", "/explain", json.dumps(short))
        response = conn.getresponse()
        full = json.loads(response.read())
        assert response.status == 503 and "--explain-queue" in full["error"]
        assert response.getheader("Retry-After") == "5"
        conn.close()
        waiting.close()  # its client leaves: the queued request is dropped
        health_until(lambda h: h["explain_waiting"] == 0)
        status, records = running.request("POST", "/explain", short)  # room again: waits
        assert status == 200 and records[0]["tokens"]
        first.join(120)
        assert answers["a"][0] == 200 and len(answers["a"][1]) == 1500
        before = running.request("GET", "/health")[1]["texts_explained"]
        leaving = raw_post(running.port, "/explain", long)
        health_until(lambda h: h["texts_explained"] > before)
        leaving.close()  # mid-way: the rest of its texts are never explained
        health_until(lambda h: h["explain_running"] == 0)
        assert running.request("POST", "/explain", short)[0] == 200
        explained = running.request("GET", "/health")[1]["texts_explained"] - before
        assert 1 <= explained < 1500
    finally:
        code, stderr = running.stop()
    posts = [line for line in stderr.splitlines() if '"POST /explain"' in line]
    assert [line.split('"')[2].split()[0] for line in posts] == [
        "503", "499", "200", "200", "499", "200"], stderr


# --------------------------------------------------------------------------- 500


FAILING_SERVER = """
import sys
import threading
from rnncli.inference import onnx_engine as engine
def broken(self, *args, **kwargs):
    raise OSError("/srv/secret/model/core.onnx: the disk went away")
engine.OnnxEngine.scores = broken
from rnncli.cli.main import cli
cli(sys.argv[1:])
"""


def test_a_500_tells_the_client_an_id_and_the_log_the_details(gru_model):
    server = Server(gru_model, command=(sys.executable, "-c", FAILING_SERVER))
    try:
        answers = [server.request("POST", "/predict", {"texts": ["great movie"]}),
                   server.request("POST", f"/v1/models/{server.name}:predict",
                                  {"instances": ["great movie"]})]
    finally:
        code, stderr = server.stop()
    ids = []
    for status, body in answers:
        assert status == 500 and set(body) == {"error"}
        words = body["error"].split()
        assert words[:3] == ["internal", "error", "(id"], body
        ids.append(words[3].rstrip(");"))
        assert "secret" not in body["error"] and "OSError" not in body["error"]
        assert "disk" not in body["error"] and "/" not in body["error"]
    assert code == 0 and len(set(ids)) == 2
    for ident in ids:  # the log has each id, with the exception and its traceback
        at = stderr.index(f"internal error {ident} in ")
        assert "Traceback" in stderr[at:]
        assert "OSError: /srv/secret/model/core.onnx: the disk went away" in stderr[at:]
    assert stderr.count("Traceback") == 2  # once each: not again from uvicorn
    assert stderr.count('" 500 ') == 2


# --------------------------------------------------------------------------- SavedModel


@pytest.fixture(scope="module")
def three_model(tmp_path_factory, train_model):
    from conftest import sample_rows, write_csv

    rows = [[text, "neutral" if i % 3 == 0 else label]
            for i, (text, label) in enumerate(sample_rows(240))]
    data = write_csv(tmp_path_factory.mktemp("data") / "three.csv", rows)
    return train_model(tmp_path_factory.mktemp("models") / "three", data)


def saved_signatures(path) -> dict:
    """The SavedModel's serving signatures as TF Serving's metadata shows them (the
    protos in JSON with their own field names and every field)."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.python.tools import saved_model_utils

    graph = saved_model_utils.get_meta_graph_def(str(path), "serve")
    return {key: MessageToDict(value, preserving_proto_field_name=True,
                               always_print_fields_with_no_presence=True)
            for key, value in graph.signature_def.items() if not key.startswith("__")}


@pytest.mark.parametrize("model", ["gru_model", "three_model"])
def test_serve_shows_and_answers_as_the_exported_saved_model(request, model, tmp_path):
    import numpy as np
    import tensorflow as tf

    model_dir = request.getfixturevalue(model)
    result = CliRunner().invoke(cli, ["export", "-m", str(model_dir), "-o",
                                      str(tmp_path / "saved")])
    assert result.exit_code == 0, result.output
    expected = saved_signatures(tmp_path / "saved")
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # owns the variables: keep it
    running = Server(model_dir)
    try:
        status, metadata = running.request("GET", f"/v1/models/{running.name}/metadata")
        assert status == 200
        assert metadata["model_spec"] == {"name": running.name, "signature_name": "",
                                          "version": "1"}
        assert metadata["metadata"]["signature_def"]["signature_def"] == expected
        for signature, outputs in expected.items():
            want = loaded.signatures[signature](text=tf.constant(TEXTS))
            want = {name: (np.char.decode(value.numpy().astype(bytes), "utf-8").tolist()
                           if value.dtype == tf.string else value.numpy())
                    for name, value in want.items()}
            assert set(want) == set(outputs["outputs"])
            path = f"/v1/models/{running.name}:predict"
            _, rows = running.request("POST", path, {"signature_name": signature,
                                                     "instances": TEXTS})
            _, columns = running.request("POST", path, {"signature_name": signature,
                                                        "inputs": {"text": TEXTS}})
            odd = b"\xff a great film \xc3"  # not UTF-8: both score it, with U+FFFD
            _, answer = running.request("POST", path, {
                "signature_name": signature,
                "instances": [{"b64": base64.b64encode(odd).decode()}]})
            np.testing.assert_allclose(
                answer["predictions"][0] if len(want) == 1 else
                answer["predictions"][0]["output_0"],
                loaded.signatures[signature](text=tf.constant([odd]))["output_0"][0],
                atol=1e-4)
            if len(want) == 1:  # one output: its values, unnamed
                (only,) = want.values()
                np.testing.assert_allclose(rows["predictions"], only, atol=1e-4)
                np.testing.assert_allclose(columns["outputs"], only, atol=1e-4)
                continue
            assert [set(row) for row in rows["predictions"]] == [set(want)] * len(TEXTS)
            assert set(columns["outputs"]) == set(want)
            for name, value in want.items():
                by_rows = [row[name] for row in rows["predictions"]]
                if name == "classes":
                    assert by_rows == columns["outputs"][name] == value
                    assert value[0] == ["negative", "neutral", "positive"]
                else:
                    np.testing.assert_allclose(by_rows, value, atol=1e-4)
                    np.testing.assert_allclose(columns["outputs"][name], value, atol=1e-4)
    finally:
        running.stop()
