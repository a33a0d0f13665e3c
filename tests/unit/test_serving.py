"""Serving without Ray: request checks, image limits, OpenAI response shapes, the attention heatmap."""

import base64
import copy
import http.server
import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from components.config import ConfigError
from components.imaging import to_pixels
from components.model import TinyModelConfig, build_tiny
from components.serving import (
    SSE_DONE,
    RequestError,
    ServeLimits,
    apply_stop,
    attention_heatmap,
    chat_chunk,
    chat_completion,
    check_image,
    decode_base64_image,
    load_image,
    models_list,
    parse_chat_request,
    parse_generate_request,
    sse,
    usage_chunk,
)
from components.training import Collator

MODEL = "instructblip-tiny"


def count_words(text: str) -> int:
    """Stands in for the LLM tokenizer: one token per word."""
    return len(text.split())


def png(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG that does not compress: about 3 x side^2 bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def huge_header_png() -> bytes:
    """8000 x 8000 = 64 M pixels (over the default 40 M) in a few KB: a blank 1-bit image compresses to nothing."""
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, fmt: str = "png") -> str:
    return f"data:image/{fmt};base64,{b64(data)}"


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def chat_body(**overrides) -> dict:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image_part(data_url(png()))]},
            {"role": "assistant", "content": "A red square."},
            {"role": "user", "content": "How many are there?"},
        ],
    }
    body.update(overrides)
    return body


def parse_chat(body, limits=None) -> object:
    return parse_chat_request(body, limits or ServeLimits(), MODEL, count_words)


def refused(call, *args, status=400) -> RequestError:
    with pytest.raises(RequestError) as info:
        call(*args)
    assert info.value.status == status, info.value.message
    return info.value


# ---------------------------------------------------------------- limits and errors


def test_default_limits_are_valid_and_bad_ones_are_named():
    ServeLimits().validate()
    with pytest.raises(ConfigError, match="default_max_tokens"):
        ServeLimits(max_tokens=16, default_max_tokens=32).validate()
    with pytest.raises(ConfigError, match="allowed_image_hosts"):
        ServeLimits(allowed_image_hosts=["https://images.example.com"]).validate()
    with pytest.raises(ConfigError, match="max_frames"):
        ServeLimits(max_frames=1).validate()


def test_error_body_has_the_openai_shape():
    err = RequestError("model 'x' does not exist", status=404, param="model", code="model_not_found")
    assert err.body() == {"error": {"message": "model 'x' does not exist", "type": "invalid_request_error",
                                    "param": "model", "code": "model_not_found"}}
    assert json.loads(json.dumps(err.body()))["error"]["code"] == "model_not_found"
    assert RequestError("bad").body() == {"error": {"message": "bad", "type": "invalid_request_error",
                                                    "param": None, "code": None}}


# ---------------------------------------------------------------- images


def test_data_url_gives_the_encoded_bytes():
    data = png()
    assert load_image(data_url(data), ServeLimits()) == data
    assert decode_base64_image(b64(data), ServeLimits()) == data


def test_invalid_base64_is_refused():
    err = refused(load_image, "data:image/png;base64,this is *not* base64!", ServeLimits())
    assert "not valid base64" in err.message
    err = refused(decode_base64_image, "@@@@", ServeLimits(), "frames[1]")
    assert "not valid base64" in err.message and err.param == "frames[1]"


def test_bytes_that_are_not_an_image_are_refused_with_pils_reason():
    err = refused(load_image, data_url(b"plain text, not pixels"), ServeLimits())
    assert "not an image" in err.message and "cannot identify image file" in err.message


def test_only_the_header_is_read_here_a_truncated_file_is_the_models_to_refuse():
    data = noise_png(32)[:200]  # header intact, pixels cut off
    assert check_image(data, ServeLimits()) == data  # decoded once, by ServingModel.pixels (test_serving_model)
    assert "not an image" in refused(check_image, b"GIF89" + data[5:], ServeLimits()).message


def test_too_many_bytes_is_413():
    data = noise_png(32)  # about 3 KB
    limits = ServeLimits(max_image_bytes=1000)
    assert "over the limit of 1000 bytes" in refused(load_image, data_url(data), limits, status=413).message
    assert "over the limit of 1000 bytes" in refused(check_image, data, limits, status=413).message


def test_too_many_pixels_is_413_before_decoding(monkeypatch):
    data = huge_header_png()
    assert len(data) < 50_000  # cheap to send, 64 M pixels once decoded

    def no_decoding(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = refused(load_image, data_url(data), ServeLimits(), status=413)
    assert "8000x8000" in err.message and "40000000 pixels" in err.message


def test_remote_urls_are_refused_unless_the_host_is_allowed():
    err = refused(load_image, "https://images.example.com/cat.png", ServeLimits())
    assert "remote image URLs are not accepted" in err.message
    limits = ServeLimits(allowed_image_hosts=["images.example.com"])
    for url in ("https://evil.example.org/cat.png", "http://images.example.com@evil.example.org/cat.png"):
        err = refused(load_image, url, limits)
        assert "'evil.example.org' is not one of the allowed image hosts" in err.message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://images.example.com/cat.png", "/etc/passwd",
                                 "data:text/plain;base64,aGVsbG8="])
def test_other_schemes_are_never_accepted(url):
    err = refused(load_image, url, ServeLimits(allowed_image_hosts=["images.example.com", "localhost"]))
    assert "data:image/<format>;base64,<data>" in err.message


@pytest.fixture(scope="module")
def image_server():
    """A local HTTP server: /cat.png, /big.png (2 KB), /elsewhere (redirects to the same server as 'localhost')."""
    image, big = png(), noise_png(32)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            if self.path == "/elsewhere":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/cat.png")
                self.end_headers()
                return
            body = {"/cat.png": image, "/big.png": big}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", image
    server.shutdown()
    server.server_close()


def test_allowed_host_is_fetched_with_limits(image_server):
    base, image = image_server
    limits = ServeLimits(allowed_image_hosts=["127.0.0.1", "localhost"], fetch_timeout_s=2)
    assert load_image(f"{base}/cat.png", limits) == image
    small = ServeLimits(allowed_image_hosts=["127.0.0.1"], max_image_bytes=1000, fetch_timeout_s=2)
    assert "over the limit of 1000 bytes" in refused(load_image, f"{base}/big.png", small, status=413).message
    assert "HTTP 404" in refused(load_image, f"{base}/missing.png", limits).message
    # a redirect to another host name is not followed, even one that is allowed itself
    assert "redirect" in refused(load_image, f"{base}/elsewhere", limits).message


# ---------------------------------------------------------------- chat completions


def test_good_chat_request_puts_system_text_and_earlier_turns_before_the_question():
    req = parse_chat(chat_body(max_tokens=20, temperature=0.5, top_p=0.9, stop="\n", stream=True,
                               stream_options={"include_usage": True}))
    assert req.instruction == "Answer briefly.\nQ: What is this?\nA: A red square.\nHow many are there?"
    assert req.image == png() and req.images == [png()]
    assert (req.max_tokens, req.temperature, req.top_p, req.stop) == (20, 0.5, 0.9, ["\n"])
    assert req.stream and req.include_usage and req.model == MODEL


def test_single_turn_chat_request_is_the_bare_question_with_defaults():
    body = {"model": MODEL, "messages": [
        {"role": "user", "content": [image_part(data_url(png())), {"type": "text", "text": " What colour? "}]}]}
    req = parse_chat(body)
    assert req.instruction == "What colour?"
    assert (req.max_tokens, req.temperature, req.top_p, req.stop, req.stream) == (32, None, None, [], False)
    assert parse_chat({**body, "max_completion_tokens": 7}).max_tokens == 7


def test_unknown_model_is_404_naming_both():
    err = refused(parse_chat, chat_body(model="gpt-4o"), status=404)
    assert err.code == "model_not_found" and err.param == "model"
    assert "gpt-4o" in err.message and MODEL in err.message


def test_only_one_choice_is_supported():
    err = refused(parse_chat, chat_body(n=2))
    assert err.param == "n" and "n must be 1" in err.message
    assert parse_chat(chat_body(n=1)).max_tokens == 32


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_over_the_limit_is_refused_naming_it(key):
    err = refused(parse_chat, chat_body(**{key: 1000}))
    assert err.param == key and "256" in err.message and "1000" in err.message
    assert refused(parse_chat, chat_body(**{key: 0})).param == key


def _set(body, path, value):
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


@pytest.mark.parametrize("path, value, message", [
    (("messages", 1, "content", 1, "image_url", "url"), 5, "messages[1].content[1].image_url.url must be a string"),
    (("messages", 1, "content", 1, "image_url"), "data:image/png;base64,AAAA",
     "messages[1].content[1].image_url must be an object"),
    (("messages", 1, "content", 0, "text"), ["a"], "messages[1].content[0].text must be a string"),
    (("messages", 1, "content", 0, "type"), "audio", "messages[1].content[0].type must be 'text' or 'image_url'"),
    (("messages", 2, "content"), None, "messages[2].content must be a string or an array"),
    (("messages", 0, "role"), 3, "messages[0].role must be a string"),
    (("messages", 0, "role"), "tool", "messages[0].role must be one of"),
    (("messages", 3), "hello", "messages[3] must be an object"),
    (("messages",), {"role": "user"}, "messages must be an array"),
    (("model",), None, "model must be a string"),
    (("temperature",), "hot", "temperature must be a number"),
    (("temperature",), 3, "temperature must be between 0 and 2"),
    (("top_p",), 0, "top_p must be in (0, 1]"),
    (("max_tokens",), 5.5, "max_tokens must be an integer"),
    (("max_tokens",), True, "max_tokens must be an integer"),
    (("stop",), ["a", 1], "stop[1] must be a string"),
    (("stop",), ["a", "b", "c", "d", "e"], "stop has 5 sequences"),
    (("stream",), "yes", "stream must be true or false"),
    (("stream_options",), {"include_usage": 1}, "stream_options.include_usage must be true or false"),
    (("logprobs",), True, 'logprobs true is not supported by this server (accepted: false)'),
    (("frobnicate",), 1, "unsupported field(s) frobnicate"),
    (("temperature",), float("nan"), "temperature must be a finite number, got nan"),
    (("top_p",), float("inf"), "top_p must be a finite number, got inf"),
])
def test_wrong_json_types_and_values_name_the_field(path, value, message):
    err = refused(parse_chat, _set(copy.deepcopy(chat_body()), path, value))
    assert message in err.message


NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": False, "top_logprobs": 0, "logit_bias": {},
           "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "parallel_tool_calls": True,
           "store": False, "seed": 7}


def test_openai_fields_with_neutral_values_are_accepted():
    """What frameworks send by default (penalties of 0, text responses, no tools) reads like a plain request."""
    plain = parse_chat(chat_body())
    assert parse_chat(chat_body(**NEUTRAL)) == plain
    assert parse_chat(chat_body(**{key: None for key in NEUTRAL})) == plain  # null: not given


@pytest.mark.parametrize("key, value", [
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("frequency_penalty", False), ("logprobs", True),
    ("top_logprobs", 3), ("logit_bias", {"50256": -100}), ("response_format", {"type": "json_object"}),
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "required"),
    ("parallel_tool_calls", "yes"), ("store", True),
])
def test_openai_fields_asking_for_more_are_refused_naming_the_value(key, value):
    err = refused(parse_chat, chat_body(**{key: value}))
    assert err.param == key
    assert err.message.startswith(f"{key} {json.dumps(value)} is not supported by this server (accepted: ")


def test_a_seed_is_refused_with_sampling_and_must_be_an_integer():
    assert parse_chat(chat_body(seed=3, temperature=0)).temperature == 0
    err = refused(parse_chat, chat_body(seed=3, temperature=0.7))
    assert err.param == "seed" and "temperature > 0" in err.message
    assert "seed must be an integer, got a string" in refused(parse_chat, chat_body(seed="3")).message


def test_body_must_be_an_object():
    assert "request body must be an object" in refused(parse_chat, [chat_body()]).message


def test_a_request_needs_an_image():
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is this?"}]}
    assert "needs an image" in refused(parse_chat, body).message


def test_more_images_than_allowed_are_refused():
    body = chat_body()
    body["messages"][3]["content"] = [{"type": "text", "text": "And this?"}, image_part(data_url(png((0, 0, 255))))]
    err = refused(parse_chat, body)
    assert "2 images" in err.message and "limit of 1" in err.message
    assert err.param == "messages[3].content[1].image_url.url"
    assert parse_chat(body, ServeLimits(max_images=2)).images == [png(), png((0, 0, 255))]


def test_image_errors_carry_the_field_path():
    err = refused(parse_chat, _set(chat_body(), ("messages", 1, "content", 1, "image_url", "url"),
                                   "data:image/png;base64,%%%"))
    assert err.param == "messages[1].content[1].image_url.url" and "not valid base64" in err.message
    err = refused(parse_chat, _set(chat_body(), ("messages", 1, "content", 1, "image_url", "url"),
                                   data_url(huge_header_png())), status=413)
    assert "messages[1].content[1].image_url.url" in err.message


def test_prompt_over_the_token_limit_is_refused_naming_both_numbers():
    limits = ServeLimits(max_prompt_tokens=10)
    err = refused(parse_chat, chat_body(), limits)
    words = count_words("Answer briefly.\nQ: What is this?\nA: A red square.\nHow many are there?")
    assert f"is {words} tokens" in err.message and "limit of 10 tokens" in err.message
    assert parse_chat(chat_body(), ServeLimits(max_prompt_tokens=words)).instruction


def test_conversation_must_end_with_a_user_question():
    body = chat_body()
    body["messages"].append({"role": "assistant", "content": "Two"})
    assert "last message must be from the user" in refused(parse_chat, body).message
    body = chat_body()
    body["messages"][3]["content"] = "   "
    assert "needs text" in refused(parse_chat, body).message


def test_images_only_in_user_messages():
    body = chat_body()
    body["messages"][2]["content"] = [image_part(data_url(png()))]
    assert "only accepted in user messages" in refused(parse_chat, body).message


# ---------------------------------------------------------------- native /v1/generate


def test_good_generate_requests():
    req = parse_generate_request({"image": b64(png()), "instruction": " Describe it. ", "max_new_tokens": 10,
                                  "num_beams": 3, "return_attention": True}, ServeLimits(), count_words)
    assert (req.image, req.frames, req.instruction) == (png(), [], "Describe it.")
    assert (req.max_new_tokens, req.num_beams, req.return_attention, req.temperature) == (10, 3, True, None)
    frames = [png((i * 40, 0, 0)) for i in range(4)]
    req = parse_generate_request({"frames": [b64(f) for f in frames], "instruction": "What happens?"},
                                 ServeLimits(), count_words)
    assert req.image is None and req.frames == frames and req.max_new_tokens == 32


@pytest.mark.parametrize("body, message", [
    ({"image": "x", "frames": ["x", "y"], "instruction": "q"}, "exactly one of image"),
    ({"instruction": "q"}, "exactly one of image"),
    ({"frames": ["x"], "instruction": "q"}, "frames must hold 2 to 8 frames"),
    ({"frames": ["x"] * 9, "instruction": "q"}, "frames must hold 2 to 8 frames"),
    ({"frames": "x", "instruction": "q"}, "frames must be an array"),
    ({"frames": ["x", 7], "instruction": "q"}, "frames[1] must be a string"),
    ({"image": 7, "instruction": "q"}, "image must be a string"),
    ({"image": "x"}, "instruction must be a string"),
    ({"image": "x", "instruction": "  "}, "instruction must not be empty"),
    ({"image": "x", "instruction": "q", "max_new_tokens": 257}, "between 1 and 256"),
    ({"image": "x", "instruction": "q", "num_beams": 9}, "num_beams must be between 1 and 8"),
    ({"image": "x", "instruction": "q", "return_attention": "yes"}, "return_attention must be true or false"),
    ({"frames": ["x", "y"], "instruction": "q", "return_attention": True}, "single image"),
    ({"image": "x", "instruction": "q", "prompt": "q"}, "unsupported field(s) prompt"),
    ({"image": "@@@@", "instruction": "q"}, "image is not valid base64"),
])
def test_bad_generate_requests(body, message):
    assert message in refused(parse_generate_request, body, ServeLimits(), count_words).message


def test_generate_frame_errors_name_the_frame():
    body = {"frames": [b64(png()), b64(b"not an image")], "instruction": "q"}
    err = refused(parse_generate_request, body, ServeLimits(), count_words)
    assert err.param == "frames[1]" and "not an image" in err.message
    body = {"image": b64(png()), "instruction": "one two three"}
    assert "3 tokens" in refused(parse_generate_request, body, ServeLimits(max_prompt_tokens=2), count_words).message


# ---------------------------------------------------------------- responses


def test_chat_completion_shape():
    out = chat_completion("chatcmpl-1", MODEL, 1700000000, "two", "stop", prompt_tokens=40, completion_tokens=2)
    assert out["object"] == "chat.completion" and out["id"] == "chatcmpl-1" and out["created"] == 1700000000
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "two"}
    assert out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["index"] == 0
    assert out["usage"] == {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}


def test_stream_chunks_and_server_sent_events():
    chunk = chat_chunk("chatcmpl-1", MODEL, 1, {"content": "two\nred"}, None)
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"content": "two\nred"} and chunk["choices"][0]["finish_reason"] is None
    event = sse(chunk)
    assert event.startswith("data: {") and event.endswith("}\n\n") and event.count("\n") == 2
    assert json.loads(event[len("data: "):]) == chunk
    assert sse({"a": "é"}) == 'data: {"a": "é"}\n\n'
    assert SSE_DONE == "data: [DONE]\n\n"
    last = usage_chunk("chatcmpl-1", MODEL, 1, 5, 3)
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 8


def test_models_list_shape():
    out = models_list(MODEL, 123)
    assert out["object"] == "list" and [m["id"] for m in out["data"]] == [MODEL]
    assert out["data"][0]["object"] == "model" and out["data"][0]["created"] == 123


@pytest.mark.parametrize("text, stops, expected", [
    ("two red squares", [], ("two red squares", False)),
    ("two red squares", ["blue"], ("two red squares", False)),
    ("two red. squares\nmore", ["\n", "."], ("two red", True)),
    ("two red squares", ["squares", "red"], ("two ", True)),
    ("stop", ["stop"], ("", True)),
])
def test_apply_stop_cuts_at_the_earliest_stop(text, stops, expected):
    assert apply_stop(text, stops) == expected


# ---------------------------------------------------------------- attention heatmap

TEXTS = ["what color is the circle?", "red", "how many squares are there?", "two blue squares"] * 20


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = build_tiny(TEXTS, TinyModelConfig(hidden_size=32, num_heads=2, vocab_size=200))
    collate = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index)
    return model.eval(), collate


def _heatmap(tiny, image: bytes):
    model, collate = tiny
    qf = collate.qformer_inputs(["what color is the circle?"])
    pixels = torch.as_tensor(to_pixels(image, collate.pixel_spec))
    return attention_heatmap(model, pixels, qf["qformer_input_ids"], qf["qformer_attention_mask"])


def test_attention_heatmap_is_a_patch_grid_and_a_png(tiny):
    model, _ = tiny
    before = model.qformer.config._attn_implementation
    grid, image = _heatmap(tiny, noise_png(64))
    assert grid.shape == (4, 4)  # 64 / 16 patches a side
    assert grid.sum() > 0 and grid.min() == 0.0 and grid.max() == 1.0
    with Image.open(io.BytesIO(image)) as img:
        assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
        assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 1  # not one flat colour
    # the Q-Former's attention implementation is back to what it was
    assert model.qformer.config._attn_implementation == before


def test_attention_heatmap_follows_the_image(tiny):
    left = Image.new("RGB", (64, 64), (255, 255, 255))
    left.paste((200, 0, 0), (0, 0, 24, 64))
    buf = io.BytesIO()
    left.save(buf, format="PNG")
    grid_noise, png_noise = _heatmap(tiny, noise_png(64, seed=1))
    grid_left, png_left = _heatmap(tiny, buf.getvalue())
    assert not np.allclose(grid_noise, grid_left, atol=1e-3)
    assert png_noise != png_left
    again, _ = _heatmap(tiny, buf.getvalue())
    np.testing.assert_allclose(again, grid_left, atol=1e-6)  # and is deterministic


def test_attention_heatmap_takes_one_image(tiny):
    model, collate = tiny
    qf = collate.qformer_inputs(["q", "q"])
    with pytest.raises(ValueError, match="one image"):
        attention_heatmap(model, torch.zeros(2, 3, 64, 64), qf["qformer_input_ids"], qf["qformer_attention_mask"])


def test_attention_heatmap_drops_cls_and_keeps_patch_order(tiny):
    """Cross-attention replaced by a known pattern: a CLS spike (dropped) and a ramp over the patches."""
    model, _ = tiny
    pattern = torch.arange(17, dtype=torch.float32)
    pattern[0] = 100.0

    def known_weights(module, args, output):
        attn_output, weights = output
        return attn_output, pattern.to(weights.dtype).expand_as(weights).clone()

    handles = [layer.crossattention.attention.register_forward_hook(known_weights, prepend=True)
               for layer in model.qformer.encoder.layer if layer.has_cross_attention]
    try:
        grid, _ = _heatmap(tiny, png())
    finally:
        for handle in handles:
            handle.remove()
    assert handles  # the tiny Q-Former has cross-attention layers
    np.testing.assert_allclose(grid, np.arange(16, dtype=np.float32).reshape(4, 4) / 15, atol=1e-6)
