"""`iblip serve` / `python -m pipelines.serve`: the trained model over HTTP on Ray Serve.

Routes (all JSON; errors in the OpenAI error shape):
- POST /v1/chat/completions  OpenAI chat completions, plain or streamed (server-sent events)
- GET  /v1/models            the served model
- POST /v1/generate          native: a base64 image or video frames, an instruction, decoding
                             settings; optionally the Q-Former's attention over the image (PNG)
- GET  /healthz              a real forward pass on a blank image

One deployment (`InstructBlipServer`) holds the model; requests that arrive together are answered
by one batched generate (`@serve.batch`, size and wait from config). The application is built by
`build_app` (from `iblip serve`) or by `app_builder` (from a Serve config file, see
configs/serve_app.yaml: `serve run configs/serve_app.yaml`). Nothing starts at import time.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) at runtime
import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
import ray
from ray import serve

from components.serving import (SSE_DONE, RequestError, StopStream, apply_stop, chat_chunk, chat_completion,
                                models_list, parse_chat_request, parse_generate_request, sse, usage_chunk)
from components.serving_model import Job, ServeConfig
from pipelines.common import (REPO_CONFIGS, add_config_args, check_resources, config_from_args, free_port, init_ray,
                              on_cluster, run_main)

logger = logging.getLogger("ray.serve")

api = FastAPI(title="InstructBLIP", description="OpenAI-compatible and native API of an InstructBLIP model")


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


ROUTES = "GET /v1/models, POST /v1/chat/completions, POST /v1/generate, GET /healthz"


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown paths (404) and methods (405) answer in the OpenAI error shape too, naming the routes
    (FastAPI's own answer is {"detail": "Not Found"}); a 405 keeps its Allow header."""
    what, code = {404: ("no such route", "not_found"),
                  405: ("method not allowed", "method_not_allowed")}.get(exc.status_code, (str(exc.detail), None))
    error = RequestError(f"{request.method} {request.url.path}: {what}; this server answers {ROUTES}",
                         status=exc.status_code, code=code)
    return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None


def _server_error(exc: BaseException) -> RequestError:
    logger.exception("generation failed", exc_info=exc)
    return RequestError(f"the model failed on this request: {type(exc).__name__}: {exc}", status=500,
                        type="server_error")


@serve.deployment(name="InstructBlipServer")
@serve.ingress(api)
class InstructBlipServer:
    """A replica: the model, its batcher and the HTTP routes."""

    def __init__(self, model_uri: str, tracking_uri: str, config: dict[str, Any]) -> None:
        from components.config import from_dict
        from components.pyfunc_model import local_model
        from components.serving_model import ServingModel, replica_device, set_torch_threads

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.cfg = from_dict(ServeConfig, config)
        set_torch_threads(self.cfg.deployment.torch_threads)
        device = replica_device(self.cfg.deployment.gpus_per_replica)
        with local_model(model_uri, tracking_uri) as model_dir:
            self.model = ServingModel.from_directory(model_dir, device)
        self.name = self.cfg.model_name()
        self.limits = self.cfg.limits
        self.created = int(time.time())
        self._generate.set_max_batch_size(self.cfg.batching.max_batch_size)
        self._generate.set_batch_wait_timeout_s(self.cfg.batching.batch_wait_timeout_s)
        self.model.health_check()  # a replica that cannot answer never goes live
        self._last_ok = time.monotonic()
        logger.info(f"serving {model_uri} as {self.name!r} on {device}")

    # -- batching ------------------------------------------------------------------
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)  # replaced from config in __init__
    async def _generate(self, jobs: list[Job]):
        results = await asyncio.to_thread(self.model.generate, jobs)
        self._last_ok = time.monotonic()
        return results

    async def _checked(self, parse, media):
        """(request, pixels): parse and decode on the event loop (about a millisecond of CPU), or in a
        thread when images may be downloaded from allowed hosts. Hopping to a thread costs more than the
        work: each hop waits for the GIL, which the generating thread holds between torch ops.
        `media(request)` gives (images, where each is in the request)."""
        def work():
            req = parse()
            return req, self.model.pixels(*media(req))

        if self.limits.allowed_image_hosts:
            return await asyncio.to_thread(work)
        return work()

    async def _answer(self, job: Job):
        try:
            return await self._generate(job)
        except Exception as exc:  # noqa: BLE001 - a failed batch answers 500, the replica keeps serving
            raise _server_error(exc) from exc

    # -- OpenAI API ----------------------------------------------------------------
    @api.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        return models_list(self.name, self.created)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        body = await _json_body(request)
        req, pixels = await self._checked(
            lambda: parse_chat_request(body, self.limits, self.name, self.model.count_tokens),
            lambda r: (r.images, r.image_params))
        job = Job(pixels=pixels, instruction=req.instruction, max_new_tokens=req.max_tokens,
                  temperature=req.temperature, top_p=req.top_p)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        prompt_tokens = self.model.prompt_tokens(req.instruction, frames=len(req.images))
        if req.stream:
            return self._stream(job, req, completion_id, created, prompt_tokens)
        result = await self._answer(job)
        text, stopped = apply_stop(result.text, req.stop)
        return JSONResponse(
            chat_completion(completion_id, self.name, created, text, "stop" if stopped else result.finish_reason,
                            prompt_tokens, result.completion_tokens),
            headers={"x-batch-size": str(result.batch_size)})

    def _stream(self, job: Job, req, completion_id: str, created: int, prompt_tokens: int) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        job.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
        task = asyncio.ensure_future(self._generate(job))
        task.add_done_callback(lambda _: pieces.put_nowait(None))  # after every piece (same loop, later)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return sse(chat_chunk(completion_id, self.name, created, delta, finish))

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            stop = StopStream(req.stop)
            while (piece := await pieces.get()) is not None:
                if text := stop.feed(piece):
                    yield chunk({"content": text})
            try:
                result = task.result()
            except Exception as exc:  # noqa: BLE001 - reported in the stream, as OpenAI does
                yield sse(_server_error(exc).body())
                yield SSE_DONE
                return
            if text := stop.finish():
                yield chunk({"content": text})
            yield chunk({}, "stop" if stop.stopped else result.finish_reason)
            if req.include_usage:
                yield sse(usage_chunk(completion_id, self.name, created, prompt_tokens, result.completion_tokens))
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    # -- native API ----------------------------------------------------------------
    @api.post("/v1/generate")
    async def generate(self, request: Request):
        body = await _json_body(request)
        req, pixels = await self._checked(lambda: parse_generate_request(body, self.limits, self.model.count_tokens),
                                          lambda r: (r.media, r.media_params))
        job = Job(pixels=pixels, instruction=req.instruction, max_new_tokens=req.max_new_tokens,
                  temperature=req.temperature, top_p=req.top_p, num_beams=req.num_beams)
        heatmap = (asyncio.ensure_future(asyncio.to_thread(self.model.attention, req.image, req.instruction))
                   if req.return_attention else None)
        result = await self._answer(job)
        answer: dict[str, Any] = {
            "model": self.name,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "usage": {"prompt_tokens": self.model.prompt_tokens(req.instruction, frames=len(req.media)),
                      "completion_tokens": result.completion_tokens},
            "batch_size": result.batch_size,
        }
        if heatmap is not None:
            try:
                grid, png = await heatmap
            except Exception as exc:  # noqa: BLE001
                raise _server_error(exc) from exc
            size = self.model.spec.size
            answer["attention"] = {"grid": [[round(float(v), 4) for v in row] for row in grid],
                                   "png_base64": base64.b64encode(png).decode("ascii"), "width": size, "height": size}
        return JSONResponse(answer, headers={"x-batch-size": str(result.batch_size)})

    # -- health --------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self):
        try:
            seconds = await asyncio.to_thread(self.model.health_check)
        except Exception as exc:  # noqa: BLE001 - the probe reports it
            logger.exception("health check failed")
            return JSONResponse({"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return {"status": "ok", "model": self.name, "forward_ms": round(seconds * 1000, 2), **self.model.placement()}

    async def check_health(self) -> None:
        """Serve's periodic replica check: a real forward, unless a batch just succeeded."""
        if time.monotonic() - self._last_ok > self.cfg.deployment.health_check_period_s:
            await asyncio.to_thread(self.model.health_check)
            self._last_ok = time.monotonic()


def check_replicas(cfg: ServeConfig, log=print, prefix: str = "", warn_only: bool = False) -> None:
    """The replicas that must start (`num_replicas`, or `autoscaling.min_replicas`) fit on the Ray cluster
    (`pipelines.common.check_resources`); Serve would otherwise wait for them for ever. `prefix`: where
    the settings named live in the caller's config ("serve." in the workflow's). `warn_only`: never an
    error (a Serve config file's app, built on whatever Ray `serve run` / `serve deploy` use)."""
    dep = cfg.deployment
    count = dep.autoscaling.min_replicas if dep.autoscaling.enabled else dep.num_replicas
    key = f"{prefix}deployment.{'autoscaling.min_replicas' if dep.autoscaling.enabled else 'num_replicas'}"
    fix = (f"Use {prefix}deployment.gpus_per_replica=0 (CPU inference), or fewer replicas ({key}) or GPUs each"
           if dep.gpus_per_replica
           else f"Use fewer replicas ({key}), a smaller {prefix}deployment.cpus_per_replica, or more logical CPUs "
                "(ray.num_cpus)")
    check_resources([{"CPU": dep.cpus_per_replica, "GPU": dep.gpus_per_replica}] * count,
                    f"the deployment asks for {count} replicas", fix, cfg.ray.address, log, warn_only=warn_only)


def deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    """Serve deployment options from the config: replicas or autoscaling, resources, health checks."""
    dep = cfg.deployment
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": dep.cpus_per_replica, "num_gpus": dep.gpus_per_replica},
        "max_ongoing_requests": dep.max_ongoing_requests,
        "health_check_period_s": dep.health_check_period_s,
        "health_check_timeout_s": dep.health_check_timeout_s,
        "logging_config": {"enable_access_log": dep.access_log},
    }
    if dep.autoscaling.enabled:
        scale = dep.autoscaling
        options["autoscaling_config"] = {"min_replicas": scale.min_replicas, "max_replicas": scale.max_replicas,
                                         "target_ongoing_requests": scale.target_ongoing_requests}
    else:
        options["num_replicas"] = dep.num_replicas
    return options


HAPROXY_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

# the ports of Serve's processes besides `port` (HAProxy's and the fallback proxy's), read when Ray starts
SIDE_PORT_VARIABLES = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                       "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


def haproxy_env(state_dir: str, ports=free_port) -> dict[str, str]:
    """Environment for Ray Serve's HAProxy ingress on a Ray that this process starts.

    The two flags, plus HAProxy's files and side ports for this server alone (`ports()` gives each
    one): Ray's defaults are one per machine (/tmp/haproxy-serve; HAProxy's stats and metrics ports
    8404 and 9101; the fallback proxy, a Serve proxy on the head node that takes requests while no
    replica is up, on 8500 and 9500), so a second local server would collide with the first. And a
    2 s drain when a replica stops instead of Ray's 30 s, which is there for external load balancers
    to deregister it (none here): Ctrl-C took 34 s. A variable already set by the user wins (see
    `prepare_ingress`).
    """
    return {**HAPROXY_FLAGS,
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state_dir}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state_dir}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state_dir,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state_dir}/server-state",
            **{name: str(ports()) for name in SIDE_PORT_VARIABLES}}


def check_port(cfg: ServeConfig, address: str = "", port_option: str = "--port") -> None:
    """Before a local Ray starts: the HTTP server's address must be one this machine can listen on.

    Otherwise Serve's proxy fails in its actor after Ray and the controller are up, and the user
    reads a traceback ending in "Failed to bind to address". Not checked for a cluster (`address`
    or RAY_ADDRESS: the proxies run on its nodes) or when Ray already runs in this process.

    Raises:
        ConfigError: naming host:port, the reason, and what to change (`port_option`: how the
            command at hand sets the port).
    """
    import errno
    import socket

    from components.config import ConfigError

    if on_cluster(address) or ray.is_initialized():
        return
    where = f"{cfg.host}:{cfg.port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {where}: host {cfg.host!r} does not resolve ({exc.strerror})") from None
    hints = {errno.EADDRINUSE: f"another program listens there: stop it or choose another port ({port_option})",
             errno.EADDRNOTAVAIL: "not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its own",
             errno.EACCES: f"ports below 1024 need privileges: choose another port ({port_option})"}
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            hint = hints.get(exc.errno, "")
            raise ConfigError(f"cannot serve on {where}: {exc.strerror}" + (f"; {hint}" if hint else "")) from None


def listen_failure(exc: BaseException, cfg: ServeConfig, port_option: str = "--port") -> str | None:
    """What to tell the user when Serve's start failed because one of its processes could not listen
    (Serve's proxy: "Failed to bind to address 'HOST:PORT'"; HAProxy: "cannot bind socket (...) for
    [HOST:PORT]"), found anywhere in `exc`'s text (Ray puts the actor's error there); None otherwise.

    A port `check_port` found free can be taken before Serve listens on it, and the side ports are
    not checked beforehand (on a cluster, none are): the message names the address and which
    setting moves it.
    """
    import re

    found = re.search(r"Failed to bind to address '([^']+)'|cannot bind socket \(([^)]*)\) for \[([^\]]+)\]",
                      str(exc))
    if not found:
        return None
    where, reason = found.group(1) or found.group(3), found.group(2)  # Serve's proxy gives no reason
    port = where.rsplit(":", 1)[-1]
    named = [v for v in SIDE_PORT_VARIABLES if os.environ.get(v) == port][:1]
    if port == str(cfg.port):
        move = f"choose another port ({port_option})"
    elif named:
        move = f"set another port in {named[0]}"
    else:
        move = (f"move Serve's side ports ({', '.join(SIDE_PORT_VARIABLES)}; Ray's processes read them when "
                f"they start)")
    in_use = reason in (None, "Address already in use")
    said = ", ".join(named + ([reason] if reason else []))
    message = f"a Serve process could not listen on {where}" + (f" ({said})" if said else "")
    if in_use:
        guess = "most likely " if reason is None else ""
        return f"{message}: {guess}another program holds that port; stop it or {move}"
    return f"{message}; {move}"


def prepare_ingress(cfg: ServeConfig, address: str = "") -> None:
    """Before Ray starts: for `deployment.ingress=haproxy` on a local Ray this process will start,
    put Serve's HAProxy switches in the environment that Ray's processes inherit.

    Nothing to do for the default proxy, for a cluster (`address` or RAY_ADDRESS: its own
    environment decides, see `check_ingress`) or when Ray is already running here.
    """
    import atexit
    import shutil
    import tempfile

    import ray

    if cfg.deployment.ingress != "haproxy" or on_cluster(address) or ray.is_initialized():
        return
    state_dir = tempfile.mkdtemp(prefix="iblip-haproxy-")
    # registered before ray.init registers its own shutdown, so it runs after it (atexit is last-in, first-out)
    atexit.register(shutil.rmtree, state_dir, ignore_errors=True)
    for key, value in haproxy_env(state_dir).items():
        os.environ.setdefault(key, value)


def missing_haproxy_flags(env) -> list[str]:
    """The HAPROXY_FLAGS that the environment mapping `env` lacks (or holds with another value)."""
    return [key for key, value in HAPROXY_FLAGS.items() if env.get(key) != value]


def check_ingress(cfg: ServeConfig) -> None:
    """After Ray is up: `deployment.ingress=haproxy` needs Ray's processes to carry HAPROXY_FLAGS
    (a cluster must be started with them; Serve reads them when it starts). Raises ConfigError if not."""
    import ray

    from components.config import ConfigError

    if cfg.deployment.ingress != "haproxy":
        return

    @ray.remote(num_cpus=0)
    def cluster_env() -> dict[str, str | None]:
        return {key: os.environ.get(key) for key in HAPROXY_FLAGS}

    missing = missing_haproxy_flags(ray.get(cluster_env.remote()))
    if missing:
        raise ConfigError(
            "deployment.ingress=haproxy: the running Ray was started without "
            + " and ".join(f"{key}=1" for key in missing)
            + ". Start Ray (ray start, the cluster manifest, or the shell that runs `iblip run`) with "
            + " ".join(f"{k}={v}" for k, v in HAPROXY_FLAGS.items()) + ", or use deployment.ingress=proxy")
    problem = haproxy_host_problem(cfg.host, sum(1 for node in ray.nodes() if node.get("Alive")))
    if problem:
        raise ConfigError(problem)


def haproxy_host_problem(host: str, nodes: int) -> str | None:
    """Why `host` cannot work with the HAProxy ingress on a cluster of `nodes` nodes, or None.

    Replicas serve HTTP themselves on `host`; HAProxy runs on every node and must reach replicas on
    the others, which a loopback address never allows.
    """
    loopback = host == "localhost" or host == "::1" or host.startswith("127.")
    if nodes > 1 and loopback:
        return (f"deployment.ingress=haproxy on a {nodes}-node cluster needs host=0.0.0.0 (or the nodes' "
                f"addresses), not {host}: the replicas serve HTTP on it themselves, and HAProxy on one node "
                "cannot reach a replica's loopback address on another")
    return None


def build_app(cfg: ServeConfig, tracking_uri: str = ""):
    """The Serve application for a config (nothing runs until it is deployed)."""
    from components.config import to_dict
    from components.tracking import resolve_tracking_uri

    cfg.validate()
    tracking_uri = tracking_uri or resolve_tracking_uri(cfg.mlflow)
    return InstructBlipServer.options(**deployment_options(cfg)).bind(cfg.model, tracking_uri, to_dict(cfg))


def app_builder(args: dict[str, Any]):
    """Serve config files' entry (`import_path: pipelines.serve:app_builder`).

    `args`: optional `config` (a YAML file of ServeConfig) and any dotted ServeConfig keys, e.g.
    {"config": "configs/serve.yaml", "model": "models:/instructblip@champion", "limits.max_tokens": 64}.
    The HTTP host and port come from the Serve config's http_options, not from these args.
    """
    from components.config import ConfigError, load_config

    args = dict(args or {})
    path = project_file(args.pop("config", None))
    overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in args.items()]
    cfg = load_config(ServeConfig, path, overrides)
    # `serve run` builds here, in the process that starts Ray; `serve deploy` in a task on the cluster
    unset = missing_haproxy_flags(os.environ)
    if cfg.deployment.ingress == "haproxy" and unset:
        raise ConfigError(f"deployment.ingress=haproxy needs {' and '.join(k + '=1' for k in unset)} in the "
                          "environment that starts Ray (e.g. `RAY_SERVE_ENABLE_HA_PROXY=1 "
                          "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 serve run configs/serve_app.yaml`)")
    if ray.is_initialized():  # replicas that cannot be placed: Serve only logs "taken more than 30s to be scheduled"
        check_replicas(cfg, logger.warning, warn_only=True)
    return build_app(cfg)


def project_file(path: str | None) -> str | None:
    """`path`, or the project's own file when `path` is relative and not in the working directory:
    `serve deploy` builds the app in a task on the cluster, whose working directory is wherever its
    node was started, so the shipped `config: configs/serve.yaml` would otherwise be found only there."""
    if not path or "://" in path or os.path.isabs(path) or os.path.exists(path):
        return path
    shipped = REPO_CONFIGS.parent / path
    return str(shipped) if shipped.exists() else path


def base_url(cfg: ServeConfig) -> str:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    return f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"


def start(cfg: ServeConfig, log=print, port_option: str = "--port") -> str:
    """Deploy the application on Ray (local unless ray.address says otherwise); returns the base URL.

    Raises ValueError for a model URI that names nothing (before anything starts), ConfigError for a
    port that cannot be listened on (naming `port_option`, how the command at hand sets the port).
    """
    from components.pyfunc_model import check_model, is_mlflow_uri
    from components.tracking import check_reachable, resolve_tracking_uri

    cfg.validate()
    tracking_uri = resolve_tracking_uri(cfg.mlflow)
    if is_mlflow_uri(cfg.model):
        check_reachable(tracking_uri)
    check_model(cfg.model, tracking_uri, on_cluster(cfg.ray.address), log)
    check_port(cfg, cfg.ray.address, port_option)
    prepare_ingress(cfg, cfg.ray.address)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    check_replicas(cfg, log)
    check_ingress(cfg)
    with listen_errors(cfg, port_option):
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
        log(f"[serve] deploying {cfg.model} as {cfg.model_name()!r} on {cfg.host}:{cfg.port} "
            f"({cfg.deployment.ingress} ingress) ...")
        t0 = time.perf_counter()
        serve.run(build_app(cfg, tracking_uri), name=cfg.app_name, route_prefix=cfg.route_prefix)
    log(f"[serve] ready in {time.perf_counter() - t0:.1f} s")
    return base_url(cfg)


@contextlib.contextmanager
def listen_errors(cfg: ServeConfig, port_option: str = "--port"):
    """Turn Serve's failure to listen on a port into a ConfigError that says which and what to change."""
    from components.config import ConfigError

    try:
        yield
    except Exception as exc:
        if (message := listen_failure(exc, cfg, port_option)) is None:
            raise
        raise ConfigError(message) from None


def serve_until_stopped(cfg: ServeConfig) -> None:
    """Block until Ctrl-C (or SIGTERM, under `run_main`), then delete the application."""
    print("[serve] serving; Ctrl-C (or SIGTERM) stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.delete(cfg.app_name)
        print("[serve] stopped", flush=True)


def usage_text(url: str, model: str) -> str:
    """How to query a running server: curl and the OpenAI client."""
    return f"""
Endpoint: {url}   (OpenAI-compatible: {url}/v1 ; health: {url}/healthz)

  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' -d '{{
    "model": "{model}",
    "messages": [{{"role": "user", "content": [
      {{"type": "text", "text": "What colour is the circle?"}},
      {{"type": "image_url", "image_url": {{"url": "data:image/jpeg;base64,'"$(base64 -w0 IMAGE.jpg)"'"}}}}]}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="unused")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iblip serve",
                                     description="Serve a trained model over HTTP (OpenAI-compatible + native API).")
    parser.add_argument("--model", help="models:/name@alias (default models:/instructblip@champion), runs:/..., "
                                        "a directory or an HF id")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--address", help="Ray address ('' = start a local Ray)")
    parser.add_argument("--detach", action="store_true",
                        help="return once deployed, leaving the app running (for a cluster given by --address)")
    add_config_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        base = {"model": args.model, "host": args.host, "port": args.port, "ray.address": args.address}
        cfg = config_from_args(ServeConfig, args, base)
        try:
            url = start(cfg)
        except KeyboardInterrupt:
            if ray.is_initialized():  # Serve may hold part of the app: undo the deploy (best effort)
                with contextlib.suppress(Exception):
                    serve.delete(cfg.app_name)
            raise
        print(usage_text(url, cfg.model_name()), flush=True)
        if args.detach:
            return 0
        serve_until_stopped(cfg)
        return 0

    return run_main("serve", body)


if __name__ == "__main__":
    sys.exit(main())
