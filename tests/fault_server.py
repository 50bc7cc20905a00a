"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on cue, for reliability tests.

    with FaultServer() as server:                       # free port, background thread
        server.script(status(500), status(429, retry_after=1), invalid_json(), ok({"answer": "25 days"}))
        opts = llm.LLMOptions(base_url=server.url, model="fault", max_retries=2, request_timeout=2)
        ...                                             # each request takes the next behaviour
        server.requests                                 # the JSON bodies it received, in order
        server.headers                                  # their HTTP headers (lower-case names), in order

Behaviours (queued with `script`, one per request; when the queue is empty `server.default` runs):
`ok(obj)` a chat completion whose content is json.dumps(obj) (obj may be a callable of the request
body), `invalid_json()`, `schema_mismatch()` (valid JSON, wrong fields), `length_cut()` (cut JSON with
finish_reason "length"), `status(code, retry_after=None)`, `hang(seconds)` (answers nothing for that
long, then closes), `raw(body, content_type, code)` (any reply: a web page, JSON of another shape).
The default behaviour is `ok(schema_filler)`: an object that fits the request's
json_schema. `server.delay` adds seconds before every answer. For "connection refused" use
`refused_url()`: a URL on a port where nothing listens.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Behaviour = tuple  # (kind, argument...)


def ok(obj: Any) -> Behaviour:
    """A normal completion with JSON content: a dict, or a callable(request_body) -> dict."""
    return ("ok", obj)


def invalid_json() -> Behaviour:
    return ("invalid_json",)


def schema_mismatch() -> Behaviour:
    return ("ok", {"unexpected": True})


def length_cut() -> Behaviour:
    return ("length_cut",)


def status(code: int, retry_after: float | None = None) -> Behaviour:
    return ("status", code, retry_after)


def hang(seconds: float) -> Behaviour:
    return ("hang", seconds)


def raw(body: str, content_type: str = "application/json", code: int = 200) -> Behaviour:
    """Any reply at all: a web page where the API should be, or JSON of another shape."""
    return ("raw", body, content_type, code)


def schema_filler(body: dict) -> dict:
    """An object matching the request's json_schema: every string property gets a short sentence."""
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    out = {}
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type")
        out[name] = 1 if kind == "integer" else True if kind == "boolean" else f"What is the {name} here?"
    return out


def refused_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def completion(content: str, finish_reason: str = "stop", model: str = "fault") -> dict:
    return {"id": "chatcmpl-fault", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FaultServer:
    """The server; use as a context manager. `url` is the base URL for the openai client."""

    def __init__(self, default: Behaviour | None = None, delay: float = 0.0):
        self.default = default or ok(schema_filler)
        self.delay = delay
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def script(self, *behaviours: Behaviour) -> "FaultServer":
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def _next(self, body: dict, headers: dict | None = None) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers or {})
            return self._queue.popleft() if self._queue else self.default

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, payload: bytes, headers: dict | None = None,
                      content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                behaviour = server._next(body, {k.lower(): v for k, v in self.headers.items()})
                if server.delay:
                    time.sleep(server.delay)
                kind = behaviour[0]
                model = body.get("model", "fault")
                if kind == "ok":
                    obj = behaviour[1](body) if callable(behaviour[1]) else behaviour[1]
                    self._send(200, json.dumps(completion(json.dumps(obj), model=model)).encode())
                elif kind == "invalid_json":
                    self._send(200, json.dumps(completion('{"question": "What is', model=model)).encode())
                elif kind == "length_cut":
                    self._send(200, json.dumps(completion('{"question": "How many days of le', "length", model)).encode())
                elif kind == "status":
                    _, code, retry_after = behaviour
                    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                    self._send(code, json.dumps({"error": {"message": f"fault server: HTTP {code}"}}).encode(), headers)
                elif kind == "raw":
                    _, text, content_type, code = behaviour
                    self._send(code, text.encode(), content_type=content_type)
                elif kind == "hang":
                    time.sleep(behaviour[1])
                    self.close_connection = True
                else:
                    raise ValueError(f"unknown behaviour {behaviour!r}")

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": "fault", "object": "model"}]}).encode())

        return Handler

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def main() -> None:
    """Serve from the command line (for a subprocess test): python tests/fault_server.py [delay]."""
    import sys

    with FaultServer(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
