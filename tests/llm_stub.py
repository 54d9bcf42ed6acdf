"""A loopback OpenAI-compatible server for contract tests of the ``llm`` backend.

It speaks just enough of ``POST /v1/chat/completions`` for the openai client: it records every
request body and header, and answers from a queue of scripted ``Reply`` objects (or a responder
function once the queue is empty). A JSON reply is shaped to the output mode the request asked
for: a ``tool_calls`` message calling the tool the request offered, or plain JSON content for a
JSON-schema (native/prompted) request. That lets one script drive every output mode, as real
servers would be driven.

Use it as a context manager::

    with StubServer() as stub:
        stub.script(Reply.json({"label": "cat", "confidence": 0.9}))
        ... BackendConfig(options={"base_url": stub.base_url}) ...
        assert stub.requests[0].body["model"] == "m"
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Token counts a reply reports unless it says otherwise.
PROMPT_TOKENS = 120
COMPLETION_TOKENS = 12


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``data`` is the structured answer (sent as tool-call arguments or as JSON content, whichever
    the request asked for); ``text`` is raw assistant content sent as is (prose, fenced JSON);
    ``status`` other than 200 sends an OpenAI-style error; ``delay`` waits before answering, so a
    delay longer than the client timeout makes the client give up.
    """

    data: Any = None
    text: str | None = None
    status: int = 200
    delay: float = 0.0
    prompt_tokens: int = PROMPT_TOKENS
    completion_tokens: int = COMPLETION_TOKENS
    #: A reply body of this many bytes (JSON padded with spaces), streamed 1 MB at a time;
    #: with ``length`` False it has no Content-Length (read until the connection closes).
    huge: int = 0
    length: bool = True

    @classmethod
    def json(cls, data: Any) -> Reply:
        return cls(data=data)

    @classmethod
    def prose(cls, text: str) -> Reply:
        return cls(text=text)

    @classmethod
    def error(cls, status: int) -> Reply:
        return cls(status=status)

    @classmethod
    def slow(cls, seconds: float, data: Any = None) -> Reply:
        return cls(data=data, delay=seconds)


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: str

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools", [])]

    @property
    def text(self) -> str:
        """Every text part of every message, joined: what the model was told."""
        out: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(p["text"] for p in content if p.get("type") == "text")
        return "\n".join(out)

    @property
    def image_urls(self) -> list[str]:
        urls: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                urls.extend(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
        return urls


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    huge_sent: int = 0
    closing: threading.Event = field(default_factory=threading.Event)


def _completion(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    finish = "stop"
    if reply.text is not None:
        message["content"] = reply.text
    elif request.get("tools"):
        choice = request.get("tool_choice")
        name = request["tools"][0]["function"]["name"]
        if isinstance(choice, dict) and "function" in choice:
            name = choice["function"]["name"]
        message["tool_calls"] = [
            {
                "id": f"call_{len(json.dumps(reply.data))}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(reply.data)},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = json.dumps(reply.data)
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", "stub"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _send_huge(self, reply: Reply) -> None:
        """Stream ``reply.huge`` bytes; ``huge_sent`` says how many the client took."""
        state = self.server.stub.state
        chunk = b" " * 2**20
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if reply.length:
                self.send_header("Content-Length", str(reply.huge))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            left = reply.huge
            while left > 0:
                part = chunk[: min(left, len(chunk))]
                self.wfile.write(part)
                left -= len(part)
                with state.lock:
                    state.huge_sent += len(part)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
            pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":  # what `models check` asks
            self._send(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
            return
        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        stub = self.server.stub
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        body = json.loads(raw) if raw else {}
        state = stub.state
        with state.lock:
            state.requests.append(Recorded(self.path, dict(self.headers), body, raw))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            reply = state.replies.popleft() if state.replies else None
        try:
            if reply is None:
                reply = stub.responder(body) if stub.responder else Reply.error(500)
            if reply.delay:
                state.closing.wait(reply.delay)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
            elif reply.huge:
                self._send_huge(reply)
            elif reply.status != 200:
                error = {
                    "message": f"stub error {reply.status}",
                    "type": "invalid_request_error" if reply.status < 500 else "server_error",
                    "code": {401: "invalid_api_key", 404: "model_not_found"}.get(reply.status),
                }
                self._send(reply.status, {"error": error})
            else:
                self._send(200, _completion(body, reply))
        finally:
            with state.lock:
                state.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    stub: StubServer


class StubServer:
    """The stub server; a context manager that serves on ``127.0.0.1`` at a free port."""

    def __init__(self, responder: Callable[[dict[str, Any]], Reply] | None = None) -> None:
        self.state = _State()
        #: Answers requests once the scripted queue is empty; without it they get a 500.
        self.responder = responder
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StubServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub server is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next one."""
        with self.state.lock:
            self.state.replies.extend(replies)

    @property
    def requests(self) -> list[Recorded]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def max_in_flight(self) -> int:
        return self.state.max_in_flight
