"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks, with fault injection.

```python
with FakeOpenAIServer(responder=lambda payload: "The answer is 4.", fault_rate=0.3, seed=0) as srv:
    client = openai.OpenAI(base_url=srv.base_url, api_key="x")
    ...
    srv.request_counts   # Counter: stable request key -> attempts that reached the server
    srv.success_counts   # Counter: stable request key -> valid completions sent back
    srv.auth_headers     # Counter: Authorization header value -> requests that carried it
```

It serves `/v1/chat/completions`, `/v1/completions`, `/v1/models`, and TGI's `/generate` (and `/`).
`echo_key_401=p` answers that fraction of completion requests (1.0: all) with a 401 whose JSON body
echoes the caller's Authorization header and bare key, as some gateways do: no key may be stored.
Faults, drawn with probability `fault_rate` from a seeded RNG: 429 with Retry-After, 500, a hang past
the client timeout, a dropped connection, malformed JSON. The key of a request is the
`X-Lema-Request-Key` header when present (our engine sends it), else a hash of the JSON body.
It runs an asyncio HTTP/1.1 server (keep-alive) in a background thread, so hundreds of concurrent
connections cost no threads; `python -m tests.fake_openai_server --port 8000` runs it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

FAULTS = ("429", "500", "hang", "drop", "malformed")
DEFAULT_ANSWER = (
    "Natalia sold 48 / 2 = 24 clips in May. In total she sold 48 + 24 = 72 clips. The answer is 72."
)


def default_responder(payload: dict[str, Any]) -> str:
    return DEFAULT_ANSWER


def payload_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class FakeOpenAIServer:
    """Context manager: starts on enter (`base_url` ends in /v1), stops on exit."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str] | None = None,
        fault_rate: float = 0.0,
        latency_s: float = 0.0,
        seed: int = 0,
        *,
        faults: tuple[str, ...] = FAULTS,
        retry_after_s: float = 0.05,
        hang_s: float = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        echo_key_401: float = 0.0,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"Unknown fault kinds {sorted(unknown)}; known: {FAULTS}.")
        if not 0 <= fault_rate <= 1:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}.")
        self.responder = responder or default_responder
        self.fault_rate = fault_rate
        self.latency_s = latency_s
        self.faults = tuple(faults)
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.host, self.port, self.model = host, port, model
        # A careless auth layer: this fraction of completion requests gets a 401 echoing the key.
        self.echo_key_401 = echo_key_401
        self.echo_counts = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.success_counts: collections.Counter[str] = collections.Counter()
        self.fault_counts: collections.Counter[str] = collections.Counter()
        self.payloads: list[dict[str, Any]] = []  # the successful requests' bodies, in order
        self.auth_headers: collections.Counter[str] = collections.Counter()  # Authorization values seen
        self.not_found = 0  # requests to unknown paths (answered 404)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def total_requests(self) -> int:
        return sum(self.request_counts.values())

    def __enter__(self) -> FakeOpenAIServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in pending:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeOpenAIServer did not start within 10 s.")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def reset_counts(self) -> None:
        with self._lock:
            self.request_counts.clear()
            self.success_counts.clear()
            self.fault_counts.clear()
            self.payloads.clear()
            self.auth_headers.clear()
            self.not_found = 0
            self.echo_counts = 0

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._respond(method, path.split("?")[0], headers, body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            ValueError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass

    @staticmethod
    def _send(
        writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        reason = {
            200: "OK",
            404: "Not Found",
            400: "Bad Request",
            401: "Unauthorized",
            429: "Too Many Requests",
            500: "Internal Server Error",
        }.get(status, "Status")
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    async def _respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET" and path.rstrip("/") == "/v1/models":
            self._send(
                writer,
                200,
                json.dumps(
                    {
                        "object": "list",
                        "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}],
                    }
                ).encode(),
            )
            await writer.drain()
            return True
        kinds = {
            "/v1/chat/completions": "chat",
            "/v1/completions": "completion",
            "/generate": "tgi",
            "/": "tgi-list",
        }
        kind = kinds.get(path.rstrip("/") or "/")
        if method != "POST" or kind is None:
            with self._lock:
                self.not_found += 1
            self._send(writer, 404, b'{"error": {"message": "not found"}}')
            await writer.drain()
            return True
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            self._send(writer, 400, b'{"error": {"message": "invalid JSON body"}}')
            await writer.drain()
            return True
        key = headers.get("x-lema-request-key") or payload_key(payload)
        with self._lock:
            self.request_counts[key] += 1
            self.auth_headers[headers.get("authorization", "")] += 1
            fault = self._rng.choice(self.faults) if self._rng.random() < self.fault_rate else None
            if fault:
                self.fault_counts[fault] += 1
            echo = bool(self.echo_key_401) and self._rng.random() < self.echo_key_401
            self.echo_counts += echo
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if echo:
            header = headers.get("authorization", "")
            bare = header.split(" ", 1)[-1]
            message = f"Incorrect API key provided: {bare}. You sent 'Authorization: {header}' ({bare=})."
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "key": bare}})
            self._send(writer, 401, body.encode())
            await writer.drain()
            return True
        if fault == "429":
            self._send(
                writer,
                429,
                b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                {"Retry-After": f"{self.retry_after_s:g}"},
            )
        elif fault == "500":
            self._send(writer, 500, b'{"error": {"message": "internal error"}}')
        elif fault == "hang":
            await asyncio.sleep(self.hang_s)
            return False  # close without an answer
        elif fault == "drop":
            transport = writer.transport
            transport.abort()
            return False
        elif fault == "malformed":
            self._send(writer, 200, b'{"id": "cmpl-x", "object": "chat.completion", "choices": [{"ind')
        else:
            text = self.responder(payload)
            # Counted before the write: once written, the client thread may read the answer and
            # its test check the counts before this thread gets the GIL back.
            with self._lock:
                self.success_counts[key] += 1
                self.payloads.append(payload)
            self._send(writer, 200, json.dumps(self._completion(kind, payload, text)).encode())
        await writer.drain()
        return True

    def _completion(self, kind: str, payload: dict[str, Any], text: str) -> Any:
        max_tokens = payload.get("max_tokens") or payload.get("parameters", {}).get("max_new_tokens") or 10**9
        words = text.split()
        finish = "stop"
        if len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        if kind == "chat":
            prompt = " ".join(str(m.get("content", "")) for m in payload.get("messages", []))
        else:
            prompt = str(payload.get("prompt", payload.get("inputs", "")))
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(text.split()),
            "total_tokens": len(prompt.split()) + len(text.split()),
        }
        created = int(time.time())
        if kind == "chat":
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": payload.get("model", self.model),
                "usage": usage,
                "choices": [
                    {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
                ],
            }
        if kind == "completion":
            return {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": created,
                "model": payload.get("model", self.model),
                "usage": usage,
                "choices": [{"index": 0, "finish_reason": finish, "text": text, "logprobs": None}],
            }
        details = {
            "finish_reason": "length" if finish == "length" else "eos_token",
            "generated_tokens": usage["completion_tokens"],
            "seed": None,
            "prefill": [],
            "tokens": [],
        }
        out = {"generated_text": text, "details": details}
        return out if kind == "tgi" else [out]


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (tests and benchmarks).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency_s", type=float, default=0.0)
    parser.add_argument("--fault_rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with FakeOpenAIServer(
        fault_rate=args.fault_rate, latency_s=args.latency_s, seed=args.seed, port=args.port
    ) as srv:
        print(f"serving on {srv.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
