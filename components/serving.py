"""The request and response side of serving, without Ray: checking requests, shaping answers.

Two HTTP endpoints are built on this module (the Ray Serve app lives in `pipelines/`):
- the OpenAI chat-completions API (`POST /v1/chat/completions`, `GET /v1/models`): one image per
  request, sent as a `data:image/<format>;base64,...` URL (or an http(s) URL on an allowed host);
  earlier turns and a system message become context lines before the instruction;
- the native `POST /v1/generate`: one base64 image or several video frames, an instruction and
  the model's own decoding settings, optionally with a heatmap of where the Q-Former looked.

Every problem with a request raises `RequestError`, which carries the HTTP status and the
OpenAI error body (`{"error": {"message", "type", "param", "code"}}`); messages name the field
path (`messages[1].content[0].image_url.url`) and the limit that was exceeded. Images are checked
here (size in bytes, pixel count read from the header before any pixel is decoded, decodability)
so the model never sees a request that cannot be answered.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.config import ConfigError, doc

MiB = 1024 * 1024


@dataclass
class ServeLimits:
    """What a request may ask for; anything beyond is refused with a 4xx error naming the limit."""

    max_image_bytes: int = doc("Largest encoded image (or video frame), in bytes (413 beyond).", 10 * MiB)
    max_image_pixels: int = doc(
        "Largest image, width x height, read from the file header before decoding (413 beyond).", 40_000_000)
    max_images: int = doc(
        "Images per chat request. InstructBLIP reads one image per prompt; several are read as the frames "
        "of a video, as /v1/generate's `frames` are.", 1)
    max_frames: int = doc("Most video frames a /v1/generate request may send (at least 2).", 8)
    max_prompt_tokens: int = doc("Longest instruction (with system text and earlier turns), in LLM tokens.", 512)
    max_tokens: int = doc("Upper bound of a request's max_tokens / max_new_tokens.", 256)
    default_max_tokens: int = doc("Answer length when a request does not say.", 32)
    allowed_image_hosts: list[str] = doc(
        "Hosts that http(s) image URLs may point at (matched on the host name, any port). Empty: remote URLs "
        "are refused and images must come inline as base64.", default_factory=list)
    fetch_timeout_s: float = doc("Time allowed for downloading one remote image, in seconds.", 5.0)

    def validate(self) -> None:
        for name in ("max_image_bytes", "max_image_pixels", "max_images", "max_prompt_tokens", "max_tokens",
                     "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve limit {name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames < 2:
            raise ConfigError(
                f"serve limit max_frames must be >= 2 (a video has several frames), got {self.max_frames}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(
                f"serve limit default_max_tokens ({self.default_max_tokens}) must not exceed "
                f"max_tokens ({self.max_tokens})")
        if self.fetch_timeout_s <= 0:
            raise ConfigError(f"serve limit fetch_timeout_s must be > 0, got {self.fetch_timeout_s}")
        for host in self.allowed_image_hosts:
            if not host or any(c in host for c in "/:@ ") or host != host.strip():
                raise ConfigError(
                    f"serve limit allowed_image_hosts holds {host!r}: give bare host names "
                    "(images.example.com, 10.0.0.5), no scheme, port or path")


class RequestError(Exception):
    """A request the server will not answer, with the HTTP status and OpenAI error fields.

    Args:
        message: what is wrong, naming the field and the limit.
        status: HTTP status: 400 (malformed), 404 (unknown model), 413 (too large), ...
        type: the OpenAI error type.
        param: the offending field's path, e.g. "messages[0].content".
        code: a machine-readable reason, e.g. "model_not_found".
    """

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON error body OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------- images


def check_image(data: bytes, limits: ServeLimits, param: str | None = None) -> bytes:
    """`data` itself when its header names an image format within the byte and pixel limits.

    Only the header is read (PIL gets the size without decoding), so an image whose header claims a
    huge size is refused before any memory is spent on its pixels. The pixels are decoded once, by
    the model's preprocessing (`components.serving_model.ServingModel.pixels`), which refuses a
    truncated or corrupt file with a 400 naming the same parameter.

    Raises:
        RequestError: 413 when too many bytes or pixels, 400 when empty or not an image.
    """
    where = param or "image"
    if not data:
        raise RequestError(f"{where} is empty", param=param)
    if len(data) > limits.max_image_bytes:
        raise RequestError(f"{where} is {len(data)} bytes, over the limit of {limits.max_image_bytes} bytes",
                           status=413, param=param)
    try:
        with warnings.catch_warnings():
            # our pixel limit decides, not PIL's decompression-bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > limits.max_image_pixels:
                    raise RequestError(
                        f"{where} is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{limits.max_image_pixels} pixels", status=413, param=param)
    except Image.DecompressionBombError as exc:  # only when max_image_pixels is above PIL's own bound
        raise RequestError(f"{where} has too many pixels: {exc}", status=413, param=param) from None
    except UnidentifiedImageError as exc:
        raise RequestError(f"{where} is not an image: {exc}", param=param) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"{where} is not a decodable image: {exc}", param=param) from None
    return data


def decode_base64_image(text: str, limits: ServeLimits, param: str | None = None) -> bytes:
    """Encoded image bytes from base64 text (line breaks allowed), checked by `check_image`.

    Raises:
        RequestError: 400 when the text is not valid base64 or not an image, 413 when too large.
    """
    where = param or "image"
    compact = "".join(text.split())
    # 4 base64 characters carry 3 bytes: refuse oversized input before decoding it
    if len(compact) // 4 * 3 > limits.max_image_bytes + 2:
        raise RequestError(
            f"{where} is about {len(compact) // 4 * 3} bytes, over the limit of {limits.max_image_bytes} bytes",
            status=413, param=param)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where} is not valid base64 ({exc})", param=param) from None
    return check_image(data, limits, param)


_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


def load_image(source: str, limits: ServeLimits, param: str | None = None) -> bytes:
    """The encoded image an OpenAI `image_url.url` points at.

    Accepted: `data:image/<format>;base64,<data>` URLs, and http(s) URLs whose host is in
    `limits.allowed_image_hosts` (downloaded with a time limit and a size cap, redirects only to the
    same host). Every other scheme (file://, ftp://, ...) is refused.

    Raises:
        RequestError: 400 for a refused or malformed URL, bad base64, a failed download or bytes
            that are not an image; 413 when the image has too many bytes or pixels.
    """
    where = param or "image URL"
    match = _DATA_URL.match(source)
    if match:
        return decode_base64_image(source[match.end():], limits, param)
    if source[:5].lower() == "data:":
        raise RequestError(f"{where} is a data URL but not of the form data:image/<format>;base64,<data>",
                           param=param)
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() not in ("http", "https"):
        raise RequestError(
            f"{where} must be a data:image/<format>;base64,<data> URL"
            + (" or an http(s) URL on an allowed host" if limits.allowed_image_hosts else "")
            + f"; scheme {parts.scheme or '(none)'!r} is not accepted", param=param)
    host = (parts.hostname or "").lower()
    allowed = {h.lower() for h in limits.allowed_image_hosts}
    if not allowed:
        raise RequestError(f"{where}: remote image URLs are not accepted by this server; "
                           "send the image inline as data:image/<format>;base64,<data>", param=param)
    if host not in allowed:
        raise RequestError(f"{where}: host {host!r} is not one of the allowed image hosts "
                           f"({', '.join(sorted(allowed))})", param=param)
    return check_image(_fetch(source, host, limits, where, param), limits, param)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only when it stays on the original host and on http(s)."""

    def __init__(self, host: str) -> None:
        self.host = host

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if target.scheme.lower() not in ("http", "https") or (target.hostname or "").lower() != self.host:
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused (other host)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, host: str, limits: ServeLimits, where: str, param: str | None) -> bytes:
    """Download at most max_image_bytes + 1 bytes within fetch_timeout_s (the whole download, not per read)."""
    opener = urllib.request.build_opener(_SameHostRedirects(host))
    deadline = time.monotonic() + limits.fetch_timeout_s
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=limits.fetch_timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_image_bytes:
                raise RequestError(f"{where} is {declared} bytes, over the limit of {limits.max_image_bytes} bytes",
                                   status=413, param=param)
            chunks, size = [], 0
            while size <= limits.max_image_bytes:
                if time.monotonic() > deadline:
                    raise RequestError(f"{where}: download took longer than {limits.fetch_timeout_s} s", param=param,
                                       code="invalid_image_url")
                chunk = resp.read(min(64 * 1024, limits.max_image_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except RequestError:
        raise
    except urllib.error.HTTPError as exc:
        raise RequestError(f"{where} could not be downloaded: HTTP {exc.code} {exc.reason}", param=param,
                           code="invalid_image_url") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, timed out, bad URL
        reason = getattr(exc, "reason", exc)
        raise RequestError(f"{where} could not be downloaded: {reason}", param=param,
                           code="invalid_image_url") from None
    if size > limits.max_image_bytes:
        raise RequestError(f"{where} is over the limit of {limits.max_image_bytes} bytes", status=413, param=param)
    return b"".join(chunks)


# ---------------------------------------------------------------- JSON field checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_name(value: Any) -> str:
    """How a JSON value reads in an error message."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{path} must be a string, got {_type_name(value)}", param=path)
    return value


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{path} must be an object, got {_type_name(value)}", param=path)
    return value


def _integer(value: Any, path: str, low: int, high: int, limit_name: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{path} must be an integer, got {_type_name(value)}", param=path)
    if not low <= value <= high:
        limit = f" ({limit_name})" if limit_name else ""
        raise RequestError(f"{path} must be between {low} and {high}{limit}, got {value}", param=path)
    return value


def _optional_number(body: Mapping[str, Any], key: str, ok: Callable[[float], bool], range_text: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):  # Python's JSON reads NaN and Infinity
        raise RequestError(f"{key} must be a finite number, got {value}", param=key)
    if not _is_number(value):
        raise RequestError(f"{key} must be a number, got {_type_name(value)}", param=key)
    if not ok(value):
        raise RequestError(f"{key} must be {range_text}, got {value}", param=key)
    return float(value)


def _optional_bool(body: Mapping[str, Any], key: str, path: str = "") -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{path or key} must be true or false, got {_type_name(value)}", param=path or key)
    return value


def _known_keys(body: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(f"{where} has unsupported field(s) {', '.join(unknown)}; supported: {', '.join(known)}",
                           param=unknown[0])


def _check_prompt_length(instruction: str, limits: ServeLimits, count_tokens: Callable[[str], int], param: str) -> None:
    tokens = count_tokens(instruction)
    if tokens > limits.max_prompt_tokens:
        raise RequestError(
            f"the prompt is {tokens} tokens, over the limit of {limits.max_prompt_tokens} tokens", param=param,
            code="context_length_exceeded")


# ---------------------------------------------------------------- chat completions

ROLES = ("system", "developer", "user", "assistant")  # "developer" is OpenAI's newer name for system
# OpenAI fields that clients and frameworks send with neutral values (LangChain's penalties of 0, say):
# accepted when they ask for nothing beyond what this server does, refused, naming the value, otherwise
NEUTRAL_FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "presence_penalty": ("0", lambda v: _is_number(v) and v == 0),
    "frequency_penalty": ("0", lambda v: _is_number(v) and v == 0),
    "logprobs": ("false", lambda v: v is False),
    "top_logprobs": ("0", lambda v: _is_number(v) and v == 0),
    "logit_bias": ("{}", lambda v: v == {}),
    "response_format": ('{"type": "text"}', lambda v: v == {"type": "text"}),
    "tools": ("[]", lambda v: v == []),
    "tool_choice": ('"none" or "auto" (no tools)', lambda v: v in ("none", "auto")),
    "parallel_tool_calls": ("true or false (no tools)", lambda v: isinstance(v, bool)),
    "store": ("false", lambda v: v is False),
}
CHAT_FIELDS = ("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
               "stream", "stream_options", "n", "user", "seed", *NEUTRAL_FIELDS)
MAX_STOP_SEQUENCES = 4


@dataclass
class ChatRequest:
    """A checked chat-completions request, ready for the model."""

    images: list[bytes]  # encoded, in message order; several are read as video frames
    image_params: list[str]  # where each image is in the request (error messages name it)
    instruction: str  # system text, earlier turns as "Q: / A:" lines, then the last user message
    max_tokens: int
    temperature: float | None  # None: not given, the server's default decoding
    top_p: float | None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with token counts
    model: str = ""

    @property
    def image(self) -> bytes:
        """The request's one image (the case under the default `ServeLimits.max_images`)."""
        if len(self.images) != 1:
            raise ValueError(f"the request holds {len(self.images)} images; read `images`")
        return self.images[0]


@dataclass
class _Message:
    role: str
    text: str
    image_urls: list[tuple[str, str]]  # (url, its field path)


def _message(value: Any, path: str) -> _Message:
    msg = _object(value, path)
    role = _string(msg.get("role"), f"{path}.role")
    if role not in ROLES:
        raise RequestError(f"{path}.role must be one of {', '.join(ROLES)}, got {role!r}", param=f"{path}.role")
    content = msg.get("content")
    if isinstance(content, str):
        return _Message(role, content.strip(), [])
    if not isinstance(content, list):
        raise RequestError(f"{path}.content must be a string or an array of content parts, got {_type_name(content)}",
                           param=f"{path}.content")
    texts: list[str] = []
    urls: list[tuple[str, str]] = []
    for j, part in enumerate(content):
        part_path = f"{path}.content[{j}]"
        part = _object(part, part_path)
        kind = _string(part.get("type"), f"{part_path}.type")
        if kind == "text":
            texts.append(_string(part.get("text"), f"{part_path}.text").strip())
        elif kind == "image_url":
            if role != "user":
                raise RequestError(f"{part_path}: images are only accepted in user messages, not {role}",
                                   param=part_path)
            image_url = _object(part.get("image_url"), f"{part_path}.image_url")
            url = _string(image_url.get("url"), f"{part_path}.image_url.url")
            if image_url.get("detail") is not None:
                _string(image_url["detail"], f"{part_path}.image_url.detail")  # accepted, no effect here
            urls.append((url, f"{part_path}.image_url.url"))
        else:
            raise RequestError(f"{part_path}.type must be 'text' or 'image_url', got {kind!r}",
                               param=f"{part_path}.type")
    return _Message(role, " ".join(t for t in texts if t), urls)


def _neutral_fields(body: Mapping[str, Any], sampled: bool) -> None:
    """Refuse a `NEUTRAL_FIELDS` value that asks for more than this server does, and a `seed` for
    sampling (sampled requests share a batch and its random numbers, so a seed could not be kept;
    greedy answers are deterministic, so a seed there changes nothing)."""
    for key, (accepted, neutral) in NEUTRAL_FIELDS.items():
        value = body.get(key)
        if value is not None and not neutral(value):
            raise RequestError(f"{key} {json.dumps(value)} is not supported by this server (accepted: {accepted})",
                               param=key)
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise RequestError(f"seed must be an integer, got {_type_name(seed)}", param="seed")
        if sampled:
            raise RequestError("seed is not supported with temperature > 0 (sampled requests are batched "
                               "together); leave temperature at 0 for deterministic answers", param="seed")


def _instruction(messages: list[_Message]) -> str:
    """The model's instruction: system text, then earlier turns as "Q: ..." / "A: ..." lines, then the question.

    The last message must be the user's; its text is the instruction proper, which stays bare, as in
    training, so a single-turn request reads exactly like a training prompt.
    """
    system = [m.text for m in messages if m.role in ("system", "developer") and m.text]
    turns = [m for m in messages if m.role not in ("system", "developer")]
    context = [f"{'Q' if m.role == 'user' else 'A'}: {m.text}" for m in turns[:-1] if m.text]
    return "\n".join([*system, *context, turns[-1].text])


def parse_chat_request(body: Any, limits: ServeLimits, served_model: str,
                       count_tokens: Callable[[str], int]) -> ChatRequest:
    """Check an OpenAI chat-completions request body (parsed JSON) and return what the model needs.

    Args:
        body: the parsed JSON body.
        limits: what requests may ask for.
        served_model: the one model name this server answers to.
        count_tokens: LLM tokens of a text (the prompt-length limit is in these).

    Raises:
        RequestError: 404 (code model_not_found) for another model; 413 for an image over the byte or
            pixel limit; 400 for anything else: wrong JSON types (naming the field path), unsupported
            fields or values (n != 1), no image or too many, a prompt or max_tokens over the limits.
    """
    body = _object(body, "request body")
    _known_keys(body, CHAT_FIELDS, "the request")
    model = _string(body.get("model"), "model")
    if model != served_model:
        raise RequestError(f"model {model!r} does not exist; this server serves {served_model!r}", status=404,
                           param="model", code="model_not_found")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list):
        raise RequestError(f"messages must be an array, got {_type_name(raw_messages)}", param="messages")
    if not raw_messages:
        raise RequestError("messages must not be empty", param="messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(raw_messages)]

    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        raise RequestError(f"n must be 1 (one answer per request is supported), got {json.dumps(n)}", param="n")
    max_tokens = _max_tokens(body, limits)
    temperature = _optional_number(body, "temperature", lambda v: 0 <= v <= 2, "between 0 and 2")
    top_p = _optional_number(body, "top_p", lambda v: 0 < v <= 1, "in (0, 1]")
    stop = _stop(body.get("stop"))
    stream = _optional_bool(body, "stream")
    include_usage = False
    if body.get("stream_options") is not None:
        options = _object(body["stream_options"], "stream_options")
        _known_keys(options, ("include_usage",), "stream_options")
        include_usage = _optional_bool(options, "include_usage", "stream_options.include_usage")
    if body.get("user") is not None:
        _string(body["user"], "user")  # an end-user id for abuse tracking; accepted, unused
    _neutral_fields(body, sampled=bool(temperature))

    urls = [u for m in messages for u in m.image_urls]
    if not urls:
        raise RequestError("the request needs an image: add an image_url content part to a user message",
                           param="messages")
    if len(urls) > limits.max_images:
        raise RequestError(f"the request has {len(urls)} images, over the limit of {limits.max_images} "
                           f"(InstructBLIP reads one image per prompt)", param=urls[limits.max_images][1])
    if messages[-1].role != "user":
        raise RequestError(f"the last message must be from the user, got {messages[-1].role}",
                           param=f"messages[{len(messages) - 1}].role")
    if not messages[-1].text:
        raise RequestError("the last user message needs text: the instruction for the image",
                           param=f"messages[{len(messages) - 1}].content")
    instruction = _instruction(messages)
    _check_prompt_length(instruction, limits, count_tokens, "messages")
    images = [load_image(url, limits, path) for url, path in urls]  # last: base64 decoding and the header check
    return ChatRequest(images=images, image_params=[path for _, path in urls], instruction=instruction,
                       max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, stream=stream,
                       include_usage=include_usage, model=model)


def _max_tokens(body: Mapping[str, Any], limits: ServeLimits) -> int:
    """max_completion_tokens (the current name) or max_tokens (the older one); they must agree when both given."""
    given = {k: body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None}
    values = {k: _integer(v, k, 1, limits.max_tokens, f"this server's max_tokens limit is {limits.max_tokens}")
              for k, v in given.items()}
    if len(set(values.values())) > 1:
        raise RequestError("max_tokens and max_completion_tokens differ; give one of them", param="max_tokens")
    return next(iter(values.values()), limits.default_max_tokens)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise RequestError(f"stop must be a string or an array of strings, got {_type_name(value)}", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise RequestError(f"stop has {len(stops)} sequences, over the limit of {MAX_STOP_SEQUENCES}", param="stop")
    for i, s in enumerate(stops):
        path = "stop" if isinstance(value, str) else f"stop[{i}]"
        if not _string(s, path):
            raise RequestError(f"{path} must not be empty", param=path)
    return list(stops)


# ---------------------------------------------------------------- native /v1/generate

GENERATE_FIELDS = ("image", "frames", "instruction", "max_new_tokens", "num_beams", "temperature", "top_p",
                   "return_attention")
MAX_BEAMS = 8


@dataclass
class GenerateRequest:
    """A checked `/v1/generate` request: one image or video frames, like a prepared row."""

    image: bytes | None  # encoded; None for a video
    frames: list[bytes]  # encoded video frames; empty for an image
    instruction: str
    max_new_tokens: int
    num_beams: int = 1
    temperature: float | None = None  # None: greedy (or beam) decoding
    top_p: float | None = None
    return_attention: bool = False

    @property
    def media(self) -> list[bytes]:
        """The encoded image as a one-frame list, or the video frames."""
        return [self.image] if self.image is not None else self.frames

    @property
    def media_params(self) -> list[str]:
        """Where each of `media` is in the request (error messages name it)."""
        return ["image"] if self.image is not None else [f"frames[{i}]" for i in range(len(self.frames))]


def parse_generate_request(body: Any, limits: ServeLimits, count_tokens: Callable[[str], int]) -> GenerateRequest:
    """Check a `/v1/generate` body: {"image": base64} or {"frames": [base64, ...]}, "instruction", options.

    Raises:
        RequestError: 413 for an image or frame over the byte or pixel limit; 400 for anything else
            (wrong JSON types, both or neither of image and frames, frame count outside 2..max_frames,
            an empty or too long instruction, options out of range, return_attention with frames).
    """
    body = _object(body, "request body")
    _known_keys(body, GENERATE_FIELDS, "the request")
    has_image, has_frames = body.get("image") is not None, body.get("frames") is not None
    if has_image == has_frames:
        raise RequestError("give exactly one of image (base64) and frames (an array of base64 video frames)"
                           + (", not both" if has_image else ""), param="image")
    if has_frames:
        frames = body["frames"]
        if not isinstance(frames, list):
            raise RequestError(f"frames must be an array of base64 strings, got {_type_name(frames)}", param="frames")
        if not 2 <= len(frames) <= limits.max_frames:
            raise RequestError(f"frames must hold 2 to {limits.max_frames} frames (one image goes in image), "
                               f"got {len(frames)}", param="frames")
        for i, frame in enumerate(frames):
            _string(frame, f"frames[{i}]")
    else:
        _string(body["image"], "image")
    instruction = _string(body.get("instruction"), "instruction").strip()
    if not instruction:
        raise RequestError("instruction must not be empty", param="instruction")
    max_new_tokens = limits.default_max_tokens
    if body.get("max_new_tokens") is not None:
        max_new_tokens = _integer(body["max_new_tokens"], "max_new_tokens", 1, limits.max_tokens,
                                  f"this server's max_tokens limit is {limits.max_tokens}")
    num_beams = 1 if body.get("num_beams") is None else _integer(body["num_beams"], "num_beams", 1, MAX_BEAMS)
    temperature = _optional_number(body, "temperature", lambda v: 0 <= v <= 2, "between 0 and 2")
    top_p = _optional_number(body, "top_p", lambda v: 0 < v <= 1, "in (0, 1]")
    return_attention = _optional_bool(body, "return_attention")
    if return_attention and has_frames:
        raise RequestError("return_attention works on a single image, not on video frames", param="return_attention")
    _check_prompt_length(instruction, limits, count_tokens, "instruction")
    if has_frames:
        image, frames = None, [decode_base64_image(f, limits, f"frames[{i}]") for i, f in enumerate(body["frames"])]
    else:
        image, frames = decode_base64_image(body["image"], limits, "image"), []
    return GenerateRequest(image=image, frames=frames, instruction=instruction, max_new_tokens=max_new_tokens,
                           num_beams=num_beams, temperature=temperature, top_p=top_p,
                           return_attention=return_attention)


# ---------------------------------------------------------------- OpenAI response shapes

SSE_DONE = "data: [DONE]\n\n"  # the last event of an OpenAI stream


def chat_completion(id: str, model: str, created: int, text: str, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A `chat.completion` object with one assistant choice and the token usage."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunk(id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """One `chat.completion.chunk` of a stream: the first carries {"role": "assistant"}, then {"content": ...}."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(id: str, model: str, created: int, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The extra last chunk sent when stream_options.include_usage is set: no choices, the usage."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def sse(obj: Mapping[str, Any]) -> str:
    """One server-sent event carrying `obj` as JSON (on one line: JSON escapes newlines in strings)."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def models_list(served_model: str, created: int, owned_by: str = "instructblip") -> dict[str, Any]:
    """The `GET /v1/models` answer: the one served model."""
    return {"object": "list",
            "data": [{"id": served_model, "object": "model", "created": created, "owned_by": owned_by}]}


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` cut before the earliest occurrence of any stop string; True when one occurred."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StopStream:
    """Stop strings over a streamed answer: text is let through only once it cannot begin a stop string.

    `feed(piece)` returns what may be sent now; `finish()` what remains at the end. After a stop string
    appears, `stopped` is True and nothing more is let through (the stop string itself is never sent).
    The pieces sent add up to `apply_stop(full answer, stops)[0]`.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        cut, self.stopped = apply_stop(self.text, self.stops)
        end = len(cut) if self.stopped else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent:end], end
        return out

    def finish(self) -> str:
        if self.stopped:
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


# ---------------------------------------------------------------- where the Q-Former looked

_ATTENTION_SWITCH = threading.Lock()  # one heatmap at a time flips the Q-Former to eager attention

# colour map stops (value, RGB): dark blue for little attention, through cyan and yellow, to red for the most
_HEAT_STOPS = (
    (0.0, (0, 0, 96)),
    (0.25, (0, 64, 255)),
    (0.5, (0, 224, 224)),
    (0.75, (255, 224, 0)),
    (1.0, (200, 0, 0)),
)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """uint8 RGB colours (..., 3) for values in 0..1, along `_HEAT_STOPS`."""
    points = np.array([p for p, _ in _HEAT_STOPS])
    colours = np.array([c for _, c in _HEAT_STOPS], dtype=np.float32)
    values = np.clip(values, 0.0, 1.0)
    channels = [np.interp(values, points, colours[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def attention_heatmap(model, pixel_values, qformer_input_ids, qformer_attention_mask=None) -> tuple[np.ndarray, bytes]:
    """Where the Q-Former's queries looked in one image: the patch grid and a colour heatmap PNG.

    The image goes through the ViT, then the Q-Former (queries + instruction) with attention outputs
    on. The cross-attention weights (queries -> image positions) are averaged over the layers that
    have cross-attention, the heads and the query tokens; the ViT's CLS position is dropped, the rest
    is reshaped to the patch grid and scaled to 0..1 (min to max; a flat map is all zeros).

    transformers only returns attention weights from its eager attention (SDPA and flash kernels
    never form them), so the Q-Former runs with eager attention for this call and is switched back
    after; the answers of other calls running meanwhile are the same either way.

    Args:
        model: InstructBlipForConditionalGeneration.
        pixel_values: (3, S, S) or (1, 3, S, S), as `components.imaging.to_pixels` makes them.
        qformer_input_ids: (1, L) Q-Former token ids of the instruction (`Collator.qformer_inputs`).
        qformer_attention_mask: (1, L); None = all ones.

    Returns:
        (grid, png): the (g, g) float32 grid in 0..1, g = sqrt(patches); and a PNG of the heatmap,
        RGB, S x S (the grid upsampled bilinearly to the ViT's input size).

    Raises:
        ValueError: more than one image, or image positions that do not form a square grid.
    """
    import torch

    pixels = torch.as_tensor(pixel_values)
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    if pixels.dim() != 4 or pixels.shape[0] != 1:
        raise ValueError(f"attention_heatmap takes one image, (3, S, S) or (1, 3, S, S); got {tuple(pixels.shape)}")
    param = next(model.parameters())
    ids = torch.as_tensor(qformer_input_ids).to(param.device)
    mask = torch.ones_like(ids)
    if qformer_attention_mask is not None:
        mask = torch.as_tensor(qformer_attention_mask).to(ids.device)
    qformer_config = model.qformer.config
    was_training = model.training
    with _ATTENTION_SWITCH, torch.no_grad():
        before = qformer_config._attn_implementation
        qformer_config._attn_implementation = "eager"
        model.eval()
        try:
            image_embeds = model.vision_model(pixel_values=pixels.to(param.device, param.dtype)).last_hidden_state
            queries = model.query_tokens.expand(1, -1, -1)
            query_mask = torch.ones(queries.shape[:2], dtype=mask.dtype, device=mask.device)
            out = model.qformer(
                input_ids=ids,
                attention_mask=torch.cat([query_mask, mask], dim=1),
                query_embeds=queries,
                encoder_hidden_states=image_embeds,
                encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device),
                output_attentions=True,
            )
        finally:
            qformer_config._attn_implementation = before
            model.train(was_training)
    # one (1, heads, queries, 1 + patches) tensor per layer with cross-attention
    cross = [a for a in (out.cross_attentions or ()) if a is not None]
    if not cross:
        raise RuntimeError("the Q-Former returned no cross-attention weights (is any layer a cross-attention layer?)")
    weights = torch.stack([a.float() for a in cross]).mean(dim=(0, 1, 2, 3))[1:]  # drop CLS
    grid_side = math.isqrt(weights.numel())
    if grid_side * grid_side != weights.numel():
        raise ValueError(f"{weights.numel()} image patches do not form a square grid")
    grid = weights.reshape(grid_side, grid_side).cpu().numpy().astype(np.float32)
    span = float(grid.max() - grid.min())
    grid = (grid - grid.min()) / span if span > 0 else np.zeros_like(grid)
    size = int(pixels.shape[-1])
    upsampled = np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(heat_colours(upsampled)).save(buf, format="PNG")
    return grid, buf.getvalue()
