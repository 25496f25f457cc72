"""The HTTP API of `vipa serve`: FastAPI routes over a :class:`~vipa.serving.batcher.Batcher`.

``GET /health``, ``POST /predict`` (multipart ``image`` + ``text`` fields, or
JSON ``{"image": base64, "texts": [...]}``), ``GET /metrics`` (Prometheus).
Every error is ``{"error": "<one line>"}`` with a 4xx / 5xx status; uploads
are decoded in memory and a request can never name a file on the server.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from vipa.data.images import decode_image
from vipa.errors import DataError, EmptyPhraseError, first_line
from vipa.inference.io import check_phrases, request_phrases
from vipa.inference.runtime import Runtime
from vipa.serving.batcher import Batcher, QueueFull
from vipa.serving.codec import result_json
from vipa.serving.metrics import ServerMetrics


@dataclass
class Settings:
    """What the server admits and how it batches (the `vipa serve` options)."""

    max_batch_size: int = 8
    batch_timeout_ms: float = 10.0
    api_key: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    max_phrases: int = 16
    max_queued: int = 256
    max_pixels: int | None = None  # None: the shared default (VIPA_MAX_IMAGE_PIXELS)
    threshold: float = 0.5
    retry_after_s: int = 1


class ServeError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def create_app(runtime: Runtime, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app serving ``runtime``; batching starts with the app and stops with it."""
    settings = settings or Settings()
    metrics = ServerMetrics()
    batcher = Batcher(runtime, max_batch_size=settings.max_batch_size,
                      timeout_s=settings.batch_timeout_ms / 1000, max_queued=settings.max_queued,
                      threshold=settings.threshold, on_batch=metrics.batch)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="vipa", lifespan=lifespan, docs_url=None, redoc_url=None)
    _error_handlers(app, metrics)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        _authorize(request, settings.api_key)
        image, texts = await _read_request(request, settings)
        try:
            found = await batcher.segment(image, texts)
        except QueueFull as error:
            raise ServeError(503, str(error), {"Retry-After": str(settings.retry_after_s)}) \
                from None
        include = request.query_params.get("include", "")
        results = [result_json(f, include_png="png" in include.split(",")) for f in found]
        metrics.request(time.perf_counter() - start)
        return {"results": results}

    return app


def _error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    def answer(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.error(status)
        return JSONResponse({"error": first_line(message)}, status_code=status, headers=headers)

    @app.exception_handler(ServeError)
    async def refused(_: Request, error: ServeError) -> JSONResponse:
        return answer(error.status, str(error), error.headers)

    @app.exception_handler(HTTPException)
    async def http(_: Request, error: HTTPException) -> JSONResponse:
        return answer(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return answer(422, str(error))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        return answer(500, f"internal error {type(error).__name__}: {first_line(error)}")


def _authorize(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), api_key):
        raise ServeError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                         {"WWW-Authenticate": "Bearer"})


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes whether or not it says its length."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"request body of {int(declared):,} bytes is over the limit of "
                              f"{limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"request body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    request._body = body = b"".join(chunks)  # starlette reads a cached body for form()
    return body


async def _read_request(request: Request, settings: Settings) -> tuple[Any, list[str]]:
    """(image array, phrases) from a multipart form or a JSON body; ServeError otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json"):
        raise ServeError(415, f"content type {kind or 'none'!r} is not accepted; send "
                              "multipart/form-data (image file + text fields) or "
                              "application/json ({\"image\": base64, \"texts\": [...]})")
    body = await _body(request, settings.max_body_bytes)
    if kind == "application/json":
        data, texts = _json_request(body)
    else:
        data, texts = await _form_request(request)
    if len(texts) > settings.max_phrases:
        raise ServeError(400, f"{len(texts)} phrases in one request; the limit is "
                              f"{settings.max_phrases}")
    try:
        texts = check_phrases(texts)
        image = decode_image(data, limit=settings.max_pixels)
    except EmptyPhraseError as error:
        raise ServeError(400, str(error)) from None
    except DataError as error:
        status = 413 if "over the limit" in str(error) else 400
        raise ServeError(status, str(error)) from None
    return image, texts


def _json_request(body: bytes) -> tuple[bytes, list[str]]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServeError(400, f"the body is not JSON: {first_line(error)}") from None
    texts = request_phrases(payload)
    if texts is None:
        raise ServeError(400, 'JSON requests look like {"image": "<base64>", "texts": [...]} '
                              '(or "text": "..."); images are sent as data, never as paths')
    try:
        return base64.b64decode(payload["image"], validate=True), texts
    except (binascii.Error, ValueError):
        raise ServeError(400, '"image" is not valid base64') from None


async def _form_request(request: Request) -> tuple[bytes, list[str]]:
    try:
        form = await request.form()
    except Exception as error:  # python-multipart raises its own parse errors
        raise ServeError(400, f"malformed multipart form: {first_line(error)}") from None
    uploads = [value for value in form.getlist("image") if hasattr(value, "read")]
    if len(uploads) != 1:
        raise ServeError(400, "send exactly one image file in the form field 'image'")
    # "text" and "texts" both name phrases, as in JSON requests and --batch files.
    texts = [str(value) for key in ("text", "texts") for value in form.getlist(key)]
    return await uploads[0].read(), texts
