"""The serving model: batched answers equal one-by-one answers, streaming adds up, configs check themselves."""

import io
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from components.config import ConfigError, load_config
from components.model import TinyModelConfig, build_tiny
from components.serving import RequestError, StopStream, apply_stop
from components.serving_model import Job, ServeConfig, ServingModel
from components.training import Collator

TEXTS = ["what color is the circle?", "red", "how many squares are there?", "two blue squares", "yes no"] * 20
REPO = Path(__file__).resolve().parents[2]


def _png(color, side=40):
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=["t5", "opt", "llama"])
def serving(request):
    torch.manual_seed(0)
    model, processor = build_tiny(TEXTS, TinyModelConfig(llm_family=request.param, hidden_size=32, num_heads=2,
                                                          vocab_size=200))
    model.eval()
    collator = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index)
    return ServingModel(model, collator)


def _job(sm, color, instruction, max_new_tokens=8, **kw):
    return Job(pixels=sm.pixels([_png(color)]), instruction=instruction, max_new_tokens=max_new_tokens, **kw)


REQUESTS = [((200, 0, 0), "what color is the circle?", 8), ((0, 0, 200), "how many squares are there?", 3),
            ((0, 150, 0), "red", 6), ((90, 90, 90), "two blue squares", 1)]


def test_batched_answers_equal_one_by_one(serving):
    alone = [serving.generate([_job(serving, c, i, n)])[0] for c, i, n in REQUESTS]
    together = serving.generate([_job(serving, c, i, n) for c, i, n in REQUESTS])
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    assert all(r.batch_size == len(REQUESTS) for r in together) and all(r.batch_size == 1 for r in alone)
    for result, (_, _, limit) in zip(together, REQUESTS):
        assert result.completion_tokens <= limit
        assert result.finish_reason == ("length" if result.completion_tokens == limit else "stop")
    # the random tiny model never says </s> within one token: the 1-token request ends on its length
    assert together[3].finish_reason == "length" and together[3].completion_tokens == 1


def test_streamed_pieces_add_up_to_the_answer(serving):
    pieces = [[] for _ in REQUESTS]
    jobs = [_job(serving, c, i, n, on_text=pieces[k].append) for k, (c, i, n) in enumerate(REQUESTS)]
    results = serving.generate(jobs)
    for got, result in zip(pieces, results):
        assert "".join(got) == result.text
    # really piece by piece as tokens come, not one block at the end
    assert max(len(got) for got in pieces) > 1, pieces


def test_incompatible_jobs_are_grouped_and_keep_their_order(serving):
    video = Job(pixels=serving.pixels([_png((200, 0, 0)), _png((0, 0, 200))]), instruction="red", max_new_tokens=4)
    beams = _job(serving, (0, 0, 200), "red", 4, num_beams=3)
    greedy = _job(serving, (0, 150, 0), "red", 4)
    mixed = serving.generate([video, beams, greedy])
    assert [r.text for r in mixed] == [serving.generate([j])[0].text for j in (video, beams, greedy)]
    sampled = serving.generate([_job(serving, (0, 150, 0), "red", 4, temperature=1.5, top_p=0.9)])
    assert sampled[0].completion_tokens <= 4


def test_health_check_and_token_counts(serving):
    assert serving.health_check() > 0
    n = serving.count_tokens("what color is the circle?")
    assert n > 0
    queries = serving.collator.num_query_tokens
    assert serving.prompt_tokens("what color is the circle?") >= n + queries
    assert serving.prompt_tokens("red", frames=3) - serving.prompt_tokens("red") == 2 * queries


def test_an_instruction_is_tokenized_once_and_prompts_match_the_collators(serving, monkeypatch):
    long = " ".join(["what color is the circle?"] * 60)  # over the collator's instruction bound: left-cut alike
    for text in ("what color is the circle?", long):
        for frames in (1, 2):
            assert serving.prompt_ids(text, frames) == serving.collator.prompt_ids(text, frames=frames)
    serving._instruction_ids.cache_clear()
    llm_tokenizer, calls = serving.tokenizer, []
    tokenize = type(llm_tokenizer).__call__

    def counted(self, *args, **kwargs):
        if self is llm_tokenizer:
            calls.append(args[0] if args else kwargs.get("text"))
        return tokenize(self, *args, **kwargs)

    monkeypatch.setattr(type(llm_tokenizer), "__call__", counted)
    text = "how many squares are there?"
    job = _job(serving, (200, 0, 0), text, 2)
    serving.count_tokens(text)  # what a request does: the limit check, the usage count, the batch's prompt
    serving.prompt_tokens(text)
    serving.generate([job])
    assert calls == [text]  # the LLM's tokenizer saw the instruction once (the Q-Former's has its own)
    assert serving._instruction_ids.cache_info().misses == 1


def test_an_undecodable_image_is_refused_naming_where_it_is(serving):
    good, cut = _png((200, 0, 0)), _png((0, 0, 200))[:60]  # the second's header is intact, its pixels cut off
    assert serving.pixels([good]).shape == (1, 3, serving.spec.size, serving.spec.size)
    with pytest.raises(RequestError, match=r"frames\[1\] is not a decodable image") as err:
        serving.pixels([good, cut])
    assert err.value.status == 400 and err.value.param == "frames[1]"
    with pytest.raises(RequestError, match="messages.0..content.1..image_url is not a decodable image"):
        serving.pixels([cut], ["messages[0].content[1].image_url"])


def test_attention_heatmap_png(serving):
    grid, png = serving.attention(_png((200, 0, 0)), "what color is the circle?")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (serving.spec.size, serving.spec.size)
    assert grid.min() == 0.0 and grid.max() == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_stop_stream_matches_apply_stop(seed):
    rng = random.Random(seed)
    text = "".join(rng.choice("ab c.") for _ in range(40))
    stops = ["c.", "bb a"][: rng.randint(0, 2)]
    stream = StopStream(stops)
    out, i = [], 0
    while i < len(text):
        j = i + rng.randint(1, 4)
        out.append(stream.feed(text[i:j]))
        i = j
    out.append(stream.finish())
    expected, stopped = apply_stop(text, stops)
    assert "".join(out) == expected and stream.stopped == stopped
    assert not any(s in "".join(out) for s in stops)


def test_serve_config_checks():
    assert ServeConfig().host == "127.0.0.1"
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        load_config(ServeConfig, None, ["batching.max_batch_size=32", "deployment.max_ongoing_requests=8"])
    with pytest.raises(ConfigError, match="port"):
        load_config(ServeConfig, None, ["port=70000"])
    with pytest.raises(ConfigError, match="min_replicas"):
        load_config(ServeConfig, None, ["deployment.autoscaling.min_replicas=3",
                                        "deployment.autoscaling.max_replicas=2"])
    assert ServeConfig(model="models:/instructblip@champion").model_name() == "instructblip"
    assert ServeConfig(model="/tmp/runs/x/model/").model_name() == "model"
    assert ServeConfig(model="Salesforce/instructblip-flan-t5-xl").model_name() == "instructblip-flan-t5-xl"
    assert ServeConfig(model="/x", served_model_name="blip").model_name() == "blip"


def test_deployment_options_from_config():
    from pipelines.serve import deployment_options

    fixed = deployment_options(load_config(ServeConfig, None, ["deployment.num_replicas=3",
                                                                "deployment.gpus_per_replica=1"]))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert fixed["logging_config"] == {"enable_access_log": True}
    scaled = deployment_options(load_config(ServeConfig, None, ["deployment.autoscaling.enabled=true",
                                                                 "deployment.autoscaling.max_replicas=5",
                                                                 "deployment.access_log=false"]))
    assert scaled["autoscaling_config"]["max_replicas"] == 5 and "num_replicas" not in scaled
    assert scaled["logging_config"] == {"enable_access_log": False}


def test_ingress_choice_and_the_environment_it_needs(monkeypatch, tmp_path):
    """deployment.ingress: 'proxy' (default) or 'haproxy'; for haproxy on a local Ray that `iblip serve`
    starts, Serve's switches and per-server HAProxy files/ports go into the environment Ray inherits,
    without overriding what the user set; the Serve-config entry refuses haproxy without the switches."""
    import os

    import ray

    from pipelines.serve import HAPROXY_FLAGS, app_builder, haproxy_env, haproxy_host_problem, prepare_ingress

    assert ServeConfig().deployment.ingress == "proxy"
    with pytest.raises(ConfigError, match="deployment.ingress must be one of proxy, haproxy, got 'nginx'"):
        load_config(ServeConfig, None, ["deployment.ingress=nginx"])
    env = haproxy_env("/srv/h", iter([1111, 2222, 3333, 4444]).__next__)
    assert {k: env[k] for k in HAPROXY_FLAGS} == {"RAY_SERVE_ENABLE_HA_PROXY": "1",
                                                  "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/srv/h/haproxy.cfg"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "1111" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "2222"
    # the fallback proxy (Ray's defaults 8500/9500) gets ports of its own too
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "3333" and env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"] == "4444"
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30  # Ray's default: for external balancers

    names = list(haproxy_env("x", lambda: 1))
    for name in names + ["RAY_ADDRESS"]:  # recorded by monkeypatch, so whatever prepare_ingress sets is undone
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    proxy = load_config(ServeConfig, None, ["model=/m"])
    haproxy = load_config(ServeConfig, None, ["model=/m", "deployment.ingress=haproxy"])
    # whether this process already runs Ray decides too; the suite's own Ray may be up or not
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    prepare_ingress(haproxy)  # too late: Ray's processes have their environment already
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    prepare_ingress(proxy)
    prepare_ingress(haproxy, address="10.0.0.1:6379")  # a cluster: its own environment decides
    assert not any(name in os.environ for name in names)
    with pytest.raises(ConfigError, match="needs RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1"):
        app_builder({"model": "/m", "deployment.ingress": "haproxy"})

    # replicas listen on `host` themselves: loopback is fine on one node, never across nodes
    assert haproxy_host_problem("127.0.0.1", 1) is None and haproxy_host_problem("0.0.0.0", 3) is None
    assert "needs host=0.0.0.0" in haproxy_host_problem("127.0.0.1", 2)
    assert haproxy_host_problem("localhost", 2) and haproxy_host_problem("::1", 2)

    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "9999")  # the user's choice stays
    prepare_ingress(haproxy)
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    state = Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent
    assert state.is_dir() and state != Path("/tmp/haproxy-serve")
    side = [os.environ[f"RAY_SERVE_{name}_PORT"] for name in ("HAPROXY_METRICS", "FALLBACK_PROXY_HTTP",
                                                               "FALLBACK_PROXY_GRPC")]
    assert len(set(side)) == 3 and not set(side) & {"9101", "8500", "9500"}  # none of Ray's per-machine defaults
    assert type(app_builder({"model": "/m", "deployment.ingress": "haproxy"})).__name__ == "Application"


def test_shipped_serve_files_are_valid():
    """configs/serve.yaml loads as a ServeConfig; configs/serve_app.yaml is a valid Serve config whose app builds."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from pipelines.serve import app_builder

    cfg = load_config(ServeConfig, str(REPO / "configs/serve.yaml"))
    assert cfg.host == "127.0.0.1"
    spec = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "configs/serve_app.yaml").read_text()))
    assert spec.http_options.host == "127.0.0.1"
    (app,) = spec.applications
    assert app.import_path == "pipelines.serve:app_builder"
    args = dict(app.args)
    args["config"] = str(REPO / args["config"])
    built = app_builder(args)
    assert type(built).__name__ == "Application"


def test_an_address_the_server_cannot_listen_on_is_named_before_ray_starts(monkeypatch):
    """A port in use (or a host that is not this machine's) failed inside Serve's proxy actor, after
    Ray had started, as a traceback; `check_port` names it first, with what to change."""
    import socket

    import ray

    from pipelines.serve import check_port

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # `iblip serve` about to start a local Ray
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = load_config(ServeConfig, None, ["model=/m", f"port={port}"])
        with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}: Address already in use; "
                                              "another program listens there"):
            check_port(busy)
        check_port(busy, address="10.0.0.1:6379")  # a cluster's proxies listen on its nodes: not checked here
    check_port(busy)  # free again
    # TEST-NET-3, a documentation range: no address of ours
    remote = load_config(ServeConfig, None, ["model=/m", "host=203.0.113.77"])
    with pytest.raises(ConfigError, match="cannot serve on 203.0.113.77:8000: .*not an address of this machine"):
        check_port(remote)


def test_a_port_taken_after_the_check_is_named_with_what_moves_it(monkeypatch):
    """When Serve's start fails because a process could not listen (the port was taken after `check_port`,
    or a side port), `listen_errors` names the address and the setting that moves it, for both texts Ray
    gives (its proxy's, HAProxy's as in a CI run), and lets every other error through."""
    from pipelines.serve import SIDE_PORT_VARIABLES, listen_errors, listen_failure

    cfg = load_config(ServeConfig, None, ["model=/m", "port=49743"])
    haproxy = RuntimeError("RayTaskError(RuntimeError): ray::HAProxyManager.ready() ... HAProxy crashed during "
                           "startup: [ALERT] (8313) : Binding [/tmp/x/haproxy.cfg:50] for frontend http_frontend: "
                           "cannot bind socket (Address already in use) for [127.0.0.1:49743]\n[ALERT] ...")
    with pytest.raises(ConfigError) as err, listen_errors(cfg, "serve.port=..."):
        raise haproxy
    assert str(err.value) == ("a Serve process could not listen on 127.0.0.1:49743 (Address already in use): "
                              "another program holds that port; stop it or choose another port (serve.port=...)")
    proxy = RuntimeError("ray::ProxyActor.ready() ... RuntimeError: Failed to bind to address '127.0.0.1:8500'.")
    for name in SIDE_PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    generic = listen_failure(proxy, cfg)
    assert generic.startswith("a Serve process could not listen on 127.0.0.1:8500: most likely another program")
    assert all(name in generic for name in SIDE_PORT_VARIABLES)
    monkeypatch.setenv("RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "8500")
    assert listen_failure(proxy, cfg) == ("a Serve process could not listen on 127.0.0.1:8500 (RAY_SERVE_FALLBACK_PROXY"
                                          "_HTTP_PORT): most likely another program holds that port; stop it or set "
                                          "another port in RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")
    denied = RuntimeError("Binding [/tmp/x/haproxy.cfg:50] for frontend stats: cannot bind socket (Permission denied)"
                          " for [0.0.0.0:80]")
    assert listen_failure(denied, cfg).startswith("a Serve process could not listen on 0.0.0.0:80 (Permission "
                                                  "denied); move Serve's side ports")
    other = RuntimeError("the replica failed its health check")
    assert listen_failure(other, cfg) is None
    with pytest.raises(RuntimeError, match="health check"), listen_errors(cfg):
        raise other
