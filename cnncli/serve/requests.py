"""A request's inputs, read within the limits, or the 4xx that says what is wrong with it.

Files come as multipart/form-data parts or as the whole body with its Content-Type; sentences
(for a model whose samples may be text) as JSON {"inputs": [...]}, multipart fields named
`inputs`, or text/plain lines. The body is read within --max-body-mb (413 beyond) and
--read-timeout (408 when it stops arriving); paths are never read from a request, only bytes.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import sys
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from cnncli.errors import CnncliError
from cnncli.files.jsontext import loads
from cnncli.serve.settings import Settings
from cnncli.serve.spool import Upload

logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a malformed upload is its sender's 400, not news

RAW = "application/octet-stream"  # a file whose type the modality finds out by itself
# Common names of file types that Python's table lacks, as the name it has.
TYPE_ALIASES = {"audio/wav": "audio/x-wav", "audio/wave": "audio/x-wav", "audio/vnd.wave": "audio/x-wav",
                "audio/x-flac": "audio/flac", "image/jpg": "image/jpeg"}


@dataclass
class Options:
    """A request's query: ?top_k=&threshold=&segment= (predict), ?format=&layer= (explain)."""

    top_k: int = 1
    threshold: float | None = None
    segment: bool = False
    format: str = "png"
    layer: str | None = None


EXPLAIN_FORMATS = ("png", "json", "html")


class RequestError(Exception):
    """A request the server will not answer: its HTTP status and one line on what is wrong.
    `close`: the body was left unread (too large, or stalled), so the connection cannot carry
    another request and is closed after the answer."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.close = status, close


async def read_body(request: Request, settings: Settings) -> bytes:
    """The whole body, refused past the size limit (before reading it, when the header says
    so) or when it does not arrive in time (a slow or stalled upload)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared and not (declared.isascii() and declared.isdigit()):
        raise RequestError(400, f"Content-Length: not a number of bytes ({declared!r})")
    if declared and int(declared) > limit:
        raise _too_large(declared, settings)
    stream = request.stream()
    try:
        return await _within(_gathered(stream, limit, settings), settings.read_timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {settings.read_timeout:g} s "
                                "(--read-timeout)", close=True) from None
    except ClientDisconnect:
        raise RequestError(400, "the request body ended before its end (the client went away)") from None
    finally:
        await stream.aclose()


if sys.version_info >= (3, 11):
    async def _within(work, seconds: float):
        """`await work`, cancelled after `seconds`: a timer on this task (wait_for makes a task per request)."""
        async with asyncio.timeout(seconds):
            return await work
else:
    _within = asyncio.wait_for


async def _gathered(stream, limit: int, settings: Settings) -> bytes:
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", settings)
        chunks.append(chunk)
    return b"".join(chunks)


def query_options(request: Request, known: tuple[str, ...]) -> Options:
    """The query's options, each checked; an unknown name is an error, not silently ignored."""
    options = Options()
    if not request.scope.get("query_string"):  # most requests: no need to parse an empty query
        return options
    for key, value in request.query_params.multi_items():
        if key not in known:
            raise RequestError(400, f"unknown query parameter {key!r} (known: {', '.join(known)})")
        if key == "top_k":
            if not (value.isascii() and value.isdigit()) or int(value) < 1:
                raise RequestError(400, f"top_k: a whole number, 1 or more, got {value!r}")
            options.top_k = int(value)
        elif key == "threshold":
            options.threshold = _probability(value)
        elif key == "segment":
            if value.lower() not in ("true", "false", "1", "0"):
                raise RequestError(400, f"segment: true or false, got {value!r}")
            options.segment = value.lower() in ("true", "1")
        elif key == "format":
            if value not in EXPLAIN_FORMATS:
                raise RequestError(400, f"format: one of {', '.join(EXPLAIN_FORMATS)}, got {value!r}")
            options.format = value
        else:
            options.layer = value
    return options


def _probability(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:  # NaN fails this too
        raise RequestError(400, f"threshold: a probability between 0 and 1, got {value!r}")
    return number


def _too_large(size: str, settings: Settings) -> RequestError:
    return RequestError(413, f"the request body ({size} bytes) is over the server's limit of "
                             f"{settings.max_body_mb:g} MB (--max-body-mb)", close=True)


async def read_inputs(request: Request, modality, settings: Settings) -> list[Upload]:
    """The inputs of a request to a model of `modality`, in order (at least one, at most --max-inputs)."""
    kind, _, _ = request.headers.get("content-type", "").partition(";")
    kind = kind.strip().lower()
    if not kind:
        raise RequestError(415, f"no Content-Type: this model reads {_reads(modality)}, as multipart/form-data "
                                "or as the body with its type")
    body = await read_body(request, settings)
    if kind == "multipart/form-data":
        uploads = await _multipart(request, body, modality, settings)
    elif kind == "application/json":
        uploads = _json_inputs(body, modality)
    elif kind == "text/plain" and modality.text_samples:
        uploads = _lines(body)
    else:
        suffix = _suffix(None, kind, modality)
        if suffix is None:
            raise RequestError(415, f"Content-Type {kind}: this model reads {_reads(modality)}")
        uploads = [Upload("body", body, suffix)]
    if not uploads:
        raise RequestError(400, "the request holds no input")
    if len(uploads) > settings.max_inputs:
        raise _too_many(settings)
    return uploads


def _too_many(settings: Settings) -> RequestError:
    return RequestError(413, f"more than {settings.max_inputs} inputs in one request (--max-inputs); send them in "
                             "several requests")


async def _multipart(request: Request, body: bytes, modality, settings: Settings) -> list[Upload]:
    """Each file part an input; fields named `inputs` sentences (for a model that reads them)."""

    async def whole():
        yield body

    parser = MultiPartParser(request.headers, whole(), max_files=settings.max_inputs,
                             max_fields=settings.max_inputs, max_part_size=settings.max_body_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        if error.message.startswith("Too many"):
            raise _too_many(settings) from None
        raise RequestError(400, f"malformed multipart/form-data: {error.message}") from None
    uploads = []
    try:
        for index, (key, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                name = value.filename or f"{key}[{index}]"
                suffix = _suffix(name, (value.content_type or "").split(";")[0].strip().lower(), modality)
                uploads.append(Upload(name, await value.read(), suffix or ""))
            elif key == "inputs" and modality.text_samples:
                uploads.append(Upload(f"inputs[{index}]", text=value))
            else:
                raise RequestError(400, f"multipart field {key!r}: send files as file parts"
                                        + (", sentences as fields named 'inputs'" if modality.text_samples else ""))
    finally:
        await form.close()
    return uploads


def _json_inputs(body: bytes, modality) -> list[Upload]:
    """{"inputs": ["a sentence", ...]} for a model whose samples may be text."""
    if not modality.text_samples:
        raise RequestError(415, f"application/json: this model reads {_reads(modality)}, not sentences")
    try:
        document = loads(body.decode("utf-8"), "the JSON body")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"the JSON body is not UTF-8 (byte {error.start})") from None
    except CnncliError as error:
        raise RequestError(400, str(error)) from None
    if not isinstance(document, dict) or set(document) != {"inputs"}:
        raise RequestError(422, 'the JSON body: expected {"inputs": ["a sentence", ...]}')
    inputs = document["inputs"]
    if not isinstance(inputs, list):
        raise RequestError(422, f"inputs: expected a list of sentences, got {type(inputs).__name__}")
    for index, value in enumerate(inputs):
        if not isinstance(value, str):
            raise RequestError(422, f"inputs[{index}]: expected a string, got {type(value).__name__}")
    return [Upload(f"inputs[{index}]", text=value) for index, value in enumerate(inputs)]


def _lines(body: bytes) -> list[Upload]:
    """text/plain: one sentence per non-blank line, as `predict --lines` reads a file."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(400, f"the text/plain body is not UTF-8 (byte {error.start})") from None
    return [Upload(f"line {number}", text=line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip()]


def _suffix(name: str | None, kind: str, modality) -> str | None:
    """The suffix a file is spooled under: its name's or its type's, where the modality reads it;
    "" for a file of unstated type (octet-stream, or a named part); None for a type it does not read."""
    extensions = tuple(modality.extensions)
    if name and Path(name).suffix.lower() in extensions:
        return Path(name).suffix.lower()
    guessed = [suffix for suffix in mimetypes.guess_all_extensions(TYPE_ALIASES.get(kind, kind)) if suffix in extensions]
    if guessed:
        return guessed[0]
    return "" if kind in (RAW, "") or name else None


def _reads(modality) -> str:
    """What a model reads, for a 415's message: its file types, and sentences where it takes them."""
    types = {mimetypes.guess_type(f"file{suffix}")[0] for suffix in modality.extensions}
    files = f"files ({', '.join(sorted(filter(None, types)) + [RAW])})"
    return files + (', or sentences as JSON {"inputs": [...]} or text/plain' if modality.text_samples else "")
