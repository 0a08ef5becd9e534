"""The packaged model over HTTP: MLflow's scoring server (the app `mlflow models serve` runs)
behind a guard, so that every request it accepts has a bounded cost and no answer shows a
stack trace. For POST /invocations the guard
- refuses any body but JSON with a 415 before reading it: MLflow decodes a CSV or Parquet
  body whole before anything can check it (a 763-byte Parquet body held 1 GB of rows);
- reads the body itself, answering a 413 once it passes serve.max_request_mb, and a 400 when
  it holds more than serve.max_json_values JSON values, before MLflow parses it (parsing
  costs per value: 16 MB of `[[]],` rows took 10 s and 1.1 GB);
- gives the request its deadline: MLflow answers a 504 at its timeout
  (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, as for `mlflow models serve -t`) but its worker
  thread goes on, so the model stops between batches once the time is up;
- takes MLflow's `stack_trace` out of error answers (it goes to the server's log instead).
The model checks its own per-request limits (rows, decoding work:
pipeline/model/request_limits.py), which scoring_app sets on the loaded model.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mlflow
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.pyfunc import scoring_server

from pipeline.core.errors import StagewiseError
from pipeline.model.request_limits import REQUEST_DEADLINE, RequestLimits, json_values

log = logging.getLogger("stagewise")
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
JSON_ONLY = (
    "POST /invocations takes Content-Type application/json only (got {got}): send MLflow's "
    "JSON `dataframe_split`, `dataframe_records` or `inputs` with one image per row, in a "
    "column `image` (the file, base64) or `pixels` (integers 0..255)"
)
TOO_MANY_VALUES = (
    "the request body holds more than serve.max_json_values={limit} JSON values (numbers, "
    "strings, arrays); send fewer rows per request, or images as files (column `image`) "
    "rather than pixel lists"
)


def scoring_app(model_uri: str, max_request_bytes: int, limits: RequestLimits) -> Any:
    """MLflow's scoring app (FastAPI) for model_uri behind Guarded; an ASGI app."""
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        python_model = model.unwrap_python_model()
    except (mlflow.exceptions.MlflowException, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StagewiseError(f"serve.model={model_uri}: cannot load it ({first})") from None
    if not hasattr(type(python_model), "limits"):
        log.warning(
            "serve.model=%s was logged by code without per-request limits (rows, pixels, time): "
            "only the server's limits apply; log it again to get them", model_uri,
        )  # fmt: skip
    python_model.limits = limits
    app = scoring_server.init(model)
    # Starlette's body limit, for any route; Guarded applies it to /invocations itself.
    app.max_body_size = max_request_bytes
    timeout_s = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()  # what init() gave MLflow's 504
    return Guarded(app, timeout_s, max_request_bytes, limits.max_json_values)


class Guarded:
    """ASGI middleware around MLflow's app (the module's docstring says what it does)."""

    def __init__(self, app: Any, timeout_s: float, max_bytes: int, max_values: int) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_values = max_values

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/invocations":
            got = header(scope, b"content-type")
            if got.split(";")[0].strip().lower() != "application/json":
                message = JSON_ONLY.format(got=got or "none")
                await respond(send, 415, json_error("BAD_REQUEST", message))
                return
            try:  # MLflow's timeout would have covered reading the body too
                async with asyncio.timeout(self.timeout_s):
                    body = await self.read_body(scope, receive, send)
            except TimeoutError:
                message = f"the request body took over {self.timeout_s} s to arrive"
                await respond(send, 408, json_error("REQUEST_TIMEOUT", message))
                return
            if body is None:  # answered, or the client went away
                return
            receive = replaying(body, receive)
        # The deadline MLflow's timeout middleware, called next, gives the request.
        token = REQUEST_DEADLINE.set(time.monotonic() + self.timeout_s)
        try:
            await self.app(scope, receive, without_trace(send))
        finally:
            REQUEST_DEADLINE.reset(token)

    async def read_body(self, scope: Message, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once it is refused (413 over the size limit, at once; 400
        over the JSON values limit, after the rest is read and dropped, so that the client,
        still sending, gets the answer rather than a closed connection)."""
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await respond(send, 413, b"Content Too Large", b"text/plain; charset=utf-8")
            return None
        chunks: list[bytes] = []
        size = values = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > self.max_bytes:
                await respond(send, 413, b"Content Too Large", b"text/plain; charset=utf-8")
                return None
            if values <= self.max_values:
                values += json_values(chunk)
                chunks.append(chunk)
            if values > self.max_values:
                chunks.clear()
        if values > self.max_values:
            message = TOO_MANY_VALUES.format(limit=self.max_values)
            await respond(send, 400, json_error("INVALID_PARAMETER_VALUE", message))
            return None
        return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """receive for the app behind: the body already read, then the client's own messages
    (a disconnect)."""
    sent = False

    async def receive_replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_replayed


def header(scope: Message, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), "")


def json_error(code: str, message: str) -> bytes:
    """An error answer in the form MLflow's are."""
    return json.dumps({"error_code": code, "message": message}).encode()


async def respond(
    send: Send, status: int, body: bytes, media_type: bytes = b"application/json"
) -> None:
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def without_trace(send: Send) -> Send:
    """send, with each error answer held back until whole and passed through public_error."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def send_public(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        said_json = (b"content-type", b"application/json") in start["headers"]
        body = public_error(b"".join(chunks), start["status"], said_json)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_public


def public_error(body: bytes, status: int, said_json: bool) -> bytes:
    """An error answer as a client may see it: MLflow's `stack_trace` (this machine's paths
    and code) goes to the server's log instead; an answer said to be JSON that is not (MLflow's
    504 text) becomes {"message": ...}; other bodies pass as they are."""
    try:
        answer = json.loads(body)
    except ValueError:
        return (
            json.dumps({"message": body.decode(errors="replace")}).encode() if said_json else body
        )
    if isinstance(answer, dict) and "stack_trace" in answer:
        log.error("error %d answered; its stack trace:\n%s", status, answer.pop("stack_trace"))
        return json.dumps(answer).encode()
    return body


def serve(app: Any, host: str, port: int) -> None:
    """Answer requests until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
