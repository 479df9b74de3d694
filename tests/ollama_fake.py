"""A loopback stand-in for an Ollama server, speaking Ollama's HTTP API (a real Ollama cannot run here).

Real clients (`ollama.Client`, langchain-ollama's `ChatOllama`) talk to it over HTTP exactly as
they talk to `ollama serve`:

- `GET /` and `HEAD /`: "Ollama is running" (the health check);
- `GET /api/version`, `GET /api/tags` (the configured models), `POST /api/show`;
- `POST /api/chat`: streaming NDJSON (the default; chunked, one JSON object per line, the last
  one with `"done": true`, `done_reason` and the eval counters) or one JSON object with
  `"stream": false`. A `format` JSON schema is honoured: each property with an `enum` gets one of
  its values (the `choose` hook picks which; default the first), so a constrained router always
  gets a valid label. `"logprobs": true` adds per-token log-probs, with `top_logprobs`
  alternatives (the other enum values at an enum position). `"think": true` adds a `thinking` part.
- a model that is not in `models` gets 404 `{"error": "model 'x' not found"}` like the real server;
  unknown paths get 404 "404 page not found".

Every request body is recorded in `requests` (path, JSON body), so a test can check what a client
sent (`think: false`, `options.temperature`, the chat history). `stop()` takes the server down:
new connections are refused, as when Ollama is not running.

    with OllamaFake(models=["qwen3:4b-instruct"]) as fake:
        ChatOllama(model="qwen3:4b-instruct", base_url=fake.url).invoke("hi")
        assert fake.chats()[-1]["messages"][-1]["content"] == "hi"
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], str]
Choose = Callable[[list[Any], dict[str, Any]], Any]
FAKE_VERSION = "0.12.6"
_TOKEN = re.compile(r"\s*\S+|\s+")  # a word with its leading space: roughly how BPE pieces look


def echo_reply(request: dict[str, Any]) -> str:
    """The default reply: the last line of the last user message, echoed."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    last = (users[-1].get("content") or "").strip().splitlines() if users else []
    return f"You said: {last[-1] if last else ''}"


def first_choice(values: list[Any], request: dict[str, Any]) -> Any:
    """The default enum choice: the first allowed value."""
    return values[0]


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    body: dict[str, Any]


class OllamaFake:
    """A threaded Ollama-protocol HTTP server on 127.0.0.1 at a free port (`url`)."""

    def __init__(
        self,
        models: list[str] | None = None,
        reply: Reply = echo_reply,
        choose: Choose = first_choice,
    ) -> None:
        self.models = list(models if models is not None else ["qwen3:4b-instruct"])
        self.reply, self.choose = reply, choose
        self.model_info: dict[str, Any] = {}  # extra GGUF key/values `/api/show` reports
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> OllamaFake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the server down: the port is closed, so clients get "connection refused"."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def chats(self) -> list[dict[str, Any]]:
        """The bodies of every `POST /api/chat` so far, oldest first."""
        with self._lock:
            return [r.body for r in self.requests if r.path == "/api/chat"]

    def has_model(self, name: str) -> bool:
        """Whether `name` is served (a name without a tag means `:latest`, as in Ollama)."""
        wanted = name if ":" in name else f"{name}:latest"
        return any(wanted == (m if ":" in m else f"{m}:latest") for m in self.models)

    def record(self, method: str, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, body))

    # -- responses ------------------------------------------------------------------------------

    def tags(self) -> dict[str, Any]:
        return {"models": [_model_entry(m) for m in self.models]}

    def show(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str(body.get("model") or body.get("name") or "")
        if not self.has_model(name):
            return 404, {"error": f"model '{name}' not found"}
        return 200, {
            "modelfile": f"FROM {name}\n",
            "parameters": "temperature 0",
            "template": "{{ .Prompt }}",
            "details": _model_entry(name)["details"],
            "model_info": {"general.architecture": "qwen3", **self.model_info},
            "capabilities": ["completion"],
        }

    def chat_parts(self, body: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]] | None]]:
        """The answer as (token text, top-log-probs or None) pieces, in order."""
        schema = body.get("format")
        if isinstance(schema, dict):
            return self._schema_parts(schema, body)
        if schema == "json":
            return [(json.dumps({"answer": self.reply(body)}), None)]
        return [(token, None) for token in _TOKEN.findall(self.reply(body))]

    def _schema_parts(
        self, schema: dict[str, Any], body: dict[str, Any]
    ) -> list[tuple[str, list[dict[str, Any]] | None]]:
        """A JSON object valid for `schema`, cut so that every enum value is a token of its own."""
        parts: list[tuple[str, list[dict[str, Any]] | None]] = [("{", None)]
        properties = schema.get("properties", {})
        for i, (name, spec) in enumerate(properties.items()):
            parts.append((("" if i == 0 else ", ") + json.dumps(name) + ": ", None))
            enum = spec.get("enum")
            if enum:
                value = self.choose(list(enum), body)
                alternatives = [value] + [v for v in enum if v != value]
                top = [
                    {"token": str(v), "logprob": math.log(0.9) if j == 0 else -3.0 - j}
                    for j, v in enumerate(alternatives)
                ]
                if isinstance(value, str):
                    parts += [('"', None), (value, top), ('"', None)]
                else:
                    parts.append((json.dumps(value), top))
            else:
                parts.append((json.dumps(_empty_value(spec.get("type"))), None))
        parts.append(("}", None))
        return parts


def _empty_value(kind: Any) -> Any:
    return {"string": "", "number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}.get(kind)


def _model_entry(name: str) -> dict[str, Any]:
    full = name if ":" in name else f"{name}:latest"
    return {
        "name": full,
        "model": full,
        "modified_at": "2025-01-01T00:00:00Z",
        "size": 0,
        "digest": "0" * 64,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "qwen3",
            "families": ["qwen3"],
            "parameter_size": "4.0B",
            "quantization_level": "Q4_K_M",
        },
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _logprob_entry(token: str, top: list[dict[str, Any]] | None, want_top: int) -> dict[str, Any]:
    """One entry of Ollama's `logprobs` list for a generated token."""
    alternatives = (top or [{"token": token, "logprob": 0.0}])[: max(want_top, 1)]
    for alt in alternatives:
        alt["bytes"] = list(alt["token"].encode())
    return {
        "token": token,
        "logprob": alternatives[0]["logprob"],
        "bytes": list(token.encode()),
        "top_logprobs": alternatives if want_top else [],
    }


def _handler_for(fake: OllamaFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        # -- plumbing ---------------------------------------------------------------------------

        def _send(self, status: int, payload: Any, content_type: str = "application/json; charset=utf-8") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")  # a stopped fake then refuses every new request
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            self.close_connection = True

        def _stream(self, lines: list[dict[str, Any]]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for line in lines:
                data = (json.dumps(line) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {}
            return body if isinstance(body, dict) else {}

        # -- routes -----------------------------------------------------------------------------

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            fake.record(self.command, self.path, {})
            if self.path == "/":
                self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
            elif self.path == "/api/version":
                self._send(200, {"version": FAKE_VERSION})
            elif self.path == "/api/tags":
                self._send(200, fake.tags())
            else:
                self._send(404, b"404 page not found", "text/plain")

        def do_POST(self) -> None:
            body = self._body()
            fake.record("POST", self.path, body)
            if self.path == "/api/show":
                self._send(*fake.show(body))
            elif self.path == "/api/chat":
                self._chat(body)
            else:
                self._send(404, b"404 page not found", "text/plain")

        def _chat(self, body: dict[str, Any]) -> None:
            model = str(body.get("model") or "")
            if not fake.has_model(model):
                self._send(404, {"error": f"model '{model}' not found"})
                return
            want_logprobs = bool(body.get("logprobs")) or bool(body.get("top_logprobs"))
            want_top = int(body.get("top_logprobs") or 0)
            parts = fake.chat_parts(body)
            thinking = "Let me look at the notes." if body.get("think") is True else None
            base = {"model": model}
            final = {
                **base,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "total_duration": 1_000_000 * (len(parts) + 1),
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])),
                "prompt_eval_duration": 1_000_000,
                "eval_count": len(parts),
                "eval_duration": 1_000_000 * len(parts),
            }
            if body.get("stream", True) is False:
                message: dict[str, Any] = {"role": "assistant", "content": "".join(text for text, _ in parts)}
                if thinking:
                    message["thinking"] = thinking
                response = {**final, "message": message}
                if want_logprobs:
                    response["logprobs"] = [_logprob_entry(text, top, want_top) for text, top in parts]
                self._send(200, response)
                return
            lines: list[dict[str, Any]] = []
            if thinking:
                lines.append(
                    {
                        **base,
                        "created_at": _now(),
                        "message": {"role": "assistant", "content": "", "thinking": thinking},
                        "done": False,
                    }
                )
            for text, top in parts:
                line: dict[str, Any] = {
                    **base,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": text},
                    "done": False,
                }
                if want_logprobs:
                    line["logprobs"] = [_logprob_entry(text, top, want_top)]
                lines.append(line)
            lines.append(final)
            self._stream(lines)

    return Handler
