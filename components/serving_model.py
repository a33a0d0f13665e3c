"""The model behind the HTTP server: batched, optionally streamed generation, and the server's config.

`ServingModel` answers a list of `Job`s (one per request) with as few `generate` calls as
possible: jobs whose decoding is compatible (same number of frames, same sampling settings, same
beam count) share one batched call; each job still gets its own answer length. A job can carry an
`on_text` callback, called from the generating thread with each new piece of its answer as the
tokens come out (server-sent events are built on it). Nothing here knows about Ray; the Serve
deployment (`pipelines/serve.py`) wraps it with `@serve.batch`.

`ServeConfig` is everything `iblip serve` reads: the model, the HTTP address, the request limits
(`components.serving.ServeLimits`), batching, and the deployment's replicas and resources.
"""

from __future__ import annotations

import functools
import io
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from components.config import ConfigError, doc
from components.evaluation import Evaluator
from components.preparation import RayConfig
from components.imaging import MediaError
from components.serving import RequestError, ServeLimits
from components.tracking import MLflowConfig

# ---------------------------------------------------------------- config


@dataclass
class BatchingConfig:
    """Dynamic batching (`@serve.batch`): requests arriving close together share one generate call."""

    max_batch_size: int = doc("Most requests in one batch (1 = no batching).", 16)
    batch_wait_timeout_s: float = doc(
        "How long the first request of a batch waits for others before the batch runs, in seconds.", 0.02)

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"batching.max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_timeout_s < 0:
            raise ConfigError(f"batching.batch_wait_timeout_s must be >= 0, got {self.batch_wait_timeout_s}")


@dataclass
class AutoscalingConfig:
    """Serve's autoscaling of replicas on ongoing requests (used when enabled)."""

    enabled: bool = doc("Scale replicas between min_replicas and max_replicas instead of a fixed num_replicas.",
                        False)
    min_replicas: int = doc("Fewest replicas.", 1)
    max_replicas: int = doc("Most replicas.", 4)
    target_ongoing_requests: float = doc("Requests in flight per replica that autoscaling aims at.", 16.0)

    def validate(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError("autoscaling needs 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                              f"got {self.min_replicas}..{self.max_replicas}")
        if self.target_ongoing_requests <= 0:
            raise ConfigError("autoscaling.target_ongoing_requests must be > 0")


INGRESSES = ("proxy", "haproxy")


@dataclass
class DeploymentConfig:
    """The Serve deployment: replicas, what each holds, health checks."""

    num_replicas: int = doc("Replicas (copies of the model), when autoscaling is off.", 1)
    autoscaling: AutoscalingConfig = doc("Autoscaling of replicas.", default_factory=AutoscalingConfig)
    cpus_per_replica: float = doc("Logical CPUs each replica holds.", 1.0)
    gpus_per_replica: float = doc("GPUs each replica holds (0 = CPU inference; bf16 on GPU).", 0.0)
    max_ongoing_requests: int = doc(
        "Requests a replica accepts at once (queued beyond max_batch_size); must be >= batching.max_batch_size.", 64)
    torch_threads: int = doc("torch intra-op threads per CPU replica (0 = torch's default).", 0)
    access_log: bool = doc(
        "Serve's per-request access log lines. Measured on 2 CPU cores: turning them off raised the tiny "
        "model's throughput from about 70-87 to 133 requests/s (README, Benchmarks).", True)
    ingress: str = doc(
        "How HTTP reaches the replicas. 'proxy': Serve's Python HTTP proxy (default). 'haproxy': Ray's "
        "high-throughput mode (Ray >= 2.55): HAProxy takes the port and each replica serves HTTP itself "
        "(RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1, set by `iblip serve` for the local "
        "Ray it starts; a cluster must be started with them). Measured on 2 cores: batched throughput at "
        "concurrency 32 2.2-2.7x the proxy's (README, Benchmarks). HAProxy's own stats and metrics ports "
        "(Ray's defaults 8404 and 9101; free ports for a local `iblip serve`) listen on all interfaces.", "proxy")
    health_check_period_s: float = doc("Seconds between Serve's health checks (each runs a tiny forward pass).", 10.0)
    health_check_timeout_s: float = doc("Seconds a health check may take before the replica is restarted.", 30.0)

    def validate(self) -> None:
        if self.num_replicas < 1:
            raise ConfigError(f"deployment.num_replicas must be >= 1, got {self.num_replicas}")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ConfigError("deployment.cpus_per_replica and gpus_per_replica must be >= 0")
        if self.max_ongoing_requests < 1 or self.torch_threads < 0:
            raise ConfigError("deployment.max_ongoing_requests must be >= 1 and torch_threads >= 0")
        if self.health_check_period_s <= 0 or self.health_check_timeout_s <= 0:
            raise ConfigError("deployment.health_check_period_s and health_check_timeout_s must be > 0")
        if self.ingress not in INGRESSES:
            raise ConfigError(f"deployment.ingress must be one of {', '.join(INGRESSES)}, got {self.ingress!r}")
        self.autoscaling.validate()


@dataclass
class ServeConfig:
    """`iblip serve`: the model behind an OpenAI-compatible and a native HTTP API, on Ray Serve."""

    model: str = doc(
        "The model: an MLflow model URI (models:/name@alias, runs:/<id>/model), an exported directory "
        "(local or any fsspec URI) or a Hugging Face id.", "models:/instructblip@champion")
    served_model_name: str = doc(
        "The name clients send as `model` ('' = the registered model's name, or the directory's last part).", "")
    host: str = doc("Address the HTTP server binds to (0.0.0.0 exposes it to the network).", "127.0.0.1")
    port: int = doc("HTTP port.", 8000)
    app_name: str = doc("Serve application name.", "instructblip")
    route_prefix: str = doc("URL prefix of the application's routes.", "/")
    limits: ServeLimits = doc("What a request may ask for.", default_factory=ServeLimits)
    batching: BatchingConfig = doc("Dynamic request batching.", default_factory=BatchingConfig)
    deployment: DeploymentConfig = doc("Replicas and their resources.", default_factory=DeploymentConfig)
    mlflow: MLflowConfig = doc("Where models:/ and runs:/ URIs are resolved (tracking_uri).",
                               default_factory=MLflowConfig)
    ray: RayConfig = doc("How to reach Ray.", default_factory=RayConfig)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model is required (--model): models:/name@alias, runs:/..., a directory or an HF id")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if not self.route_prefix.startswith("/"):
            raise ConfigError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        self.limits.validate()
        self.batching.validate()
        self.deployment.validate()
        if self.deployment.max_ongoing_requests < self.batching.max_batch_size:
            raise ConfigError(
                f"deployment.max_ongoing_requests ({self.deployment.max_ongoing_requests}) must be >= "
                f"batching.max_batch_size ({self.batching.max_batch_size}): a replica could never fill a batch")

    def model_name(self) -> str:
        """The name clients address the model by (see served_model_name)."""
        if self.served_model_name:
            return self.served_model_name
        uri = self.model.rstrip("/")
        if uri.startswith("models:/"):
            return uri.removeprefix("models:/").split("@")[0].split("/")[0]
        if uri.startswith("runs:/"):
            return "run-" + uri.removeprefix("runs:/").split("/")[0]
        return uri.split("/")[-1] or uri


# ---------------------------------------------------------------- jobs

INSTRUCTION_MEMO = 4096  # tokenized instructions a replica keeps (repeated questions skip the tokenizer)


@dataclass
class Job:
    """One request's generation: its pixels, instruction and decoding settings.

    `on_text(piece)` (optional) receives the answer as it grows, piece by piece, from the thread that
    runs generate; the pieces joined equal `Result.text` (before any stop strings are applied).
    Streaming needs greedy or sampled decoding: beam search only yields text at the end, which
    `on_text` then receives as one piece.
    """

    pixels: torch.Tensor  # (frames, 3, S, S)
    instruction: str
    max_new_tokens: int
    temperature: float | None = None  # None or 0: greedy (or beam search)
    top_p: float | None = None
    num_beams: int = 1
    on_text: Callable[[str], None] | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.temperature)

    def group_key(self) -> tuple:
        """Jobs with equal keys share one generate call."""
        sampling = (float(self.temperature), float(self.top_p or 1.0)) if self.sampled else None
        return int(self.pixels.shape[0]), sampling, self.num_beams


@dataclass
class Result:
    """A job's answer: text, generated tokens (without the end-of-sequence token), why it ended."""

    text: str
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (max_new_tokens reached)
    batch_size: int = 1  # requests in the batch it ran in (for observing batching)


class _RowStreamer:
    """transformers streamer for a batch: hands each row's new tokens to that row's callback.

    generate first puts the prompt (decoder start ids for T5), then one (batch,) tensor per step;
    rows that have ended get padding, which is ignored here.
    """

    def __init__(self, model: "ServingModel", jobs: Sequence[Job], eos_id: int) -> None:
        self.model = model
        self.jobs = jobs
        self.eos_id = eos_id
        self.ids: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.done = [False] * len(jobs)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token == self.eos_id or len(self.ids[row]) >= self.jobs[row].max_new_tokens:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            self._send(row)
            if len(self.ids[row]) >= self.jobs[row].max_new_tokens:
                self.done[row] = True

    def _send(self, row: int) -> None:
        callback = self.jobs[row].on_text
        if callback is None:
            return
        text = self.model.decode(self.ids[row])
        # a piece is sent once the decoded text only grows (sentencepiece may rewrite a word's start)
        if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            callback(text[len(self.sent[row]):])
            self.sent[row] = text

    def end(self) -> None:
        pass


# ---------------------------------------------------------------- the model


class ServingModel:
    """An InstructBLIP model answering jobs in batches (see module docstring).

    Args:
        model: InstructBlipForConditionalGeneration (any device/dtype; inputs follow it).
        collator: the Collator it was trained with (prompt layout, tokenizers, instruction-awareness).
    """

    def __init__(self, model, collator) -> None:
        self.evaluator = Evaluator(model, collator)
        self.model = self.evaluator.model
        self.collator = collator
        self.tokenizer = collator.tokenizer
        self.spec = collator.pixel_spec
        # A request's instruction is tokenized once: its length check, its usage count and its batch's
        # prompt all read this memo (thread-safe; the batch runs in another thread). Measured on the
        # tiny model: a tokenizer call is 0.035 ms, a tenth of the request's own preprocessing.
        self._instruction_ids = functools.lru_cache(maxsize=INSTRUCTION_MEMO)(self._tokenize)

    @classmethod
    def from_directory(cls, model_dir: str, device: str = "cpu") -> "ServingModel":
        """Load an exported model directory (bf16 on a GPU)."""
        from components.inference import load_answerer

        answerer = load_answerer(model_dir, device=device, bf16_on_gpu=True)
        return cls(answerer.model, answerer.collator)

    # -- inputs --------------------------------------------------------------------
    def pixels(self, images: Sequence[bytes], params: Sequence[str] | None = None) -> torch.Tensor:
        """(frames, 3, S, S) for one image or several video frames, each decoded once.

        Raises:
            RequestError: (400) an image that cannot be decoded, naming its `params` entry (where it
                is in the request; "image", "frames[i]" by default).
        """
        names = list(params) if params is not None else (
            ["image"] if len(images) == 1 else [f"frames[{i}]" for i in range(len(images))])
        frames = []
        for data, name in zip(images, names, strict=True):
            try:
                frames.append(self.evaluator.frame(data))
            except MediaError as exc:
                raise RequestError(f"{name} is {exc}", param=name) from None
        return torch.stack(frames)

    def placement(self) -> dict[str, str]:
        """Where the model runs: its device ("cpu", "cuda:0") and dtype ("float32", "bfloat16")."""
        param = next(self.model.parameters())
        return {"device": str(param.device), "dtype": str(param.dtype).removeprefix("torch.")}

    def _tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        """LLM tokens of a text (what the prompt limit counts)."""
        return len(self._instruction_ids(text))

    def prompt_ids(self, instruction: str, frames: int = 1) -> list[int]:
        """The LLM prompt's ids (query slots, instruction): `Collator.prompt_ids` from the memo."""
        return self.collator.prompt_ids(instruction, frames=frames, instruction_ids=self._instruction_ids(instruction))

    def prompt_tokens(self, instruction: str, frames: int = 1) -> int:
        """Tokens of the whole LLM prompt: the visual query slots and the instruction (usage counts)."""
        return len(self.prompt_ids(instruction, frames))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    # -- generation ----------------------------------------------------------------
    def generate(self, jobs: Sequence[Job]) -> list[Result]:
        """Answers for the jobs, in order; compatible jobs share a batched generate call."""
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.group_key(), []).append(i)
        results: list[Result | None] = [None] * len(jobs)
        for indices in groups.values():
            for i, result in zip(indices, self._generate_group([jobs[i] for i in indices])):
                result.batch_size = len(jobs)
                results[i] = result
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_group(self, jobs: Sequence[Job]) -> list[Result]:
        first = jobs[0]
        eos = self.tokenizer.eos_token_id
        streamer = None
        if first.num_beams == 1 and any(j.on_text for j in jobs):
            streamer = _RowStreamer(self, jobs, eos)
        settings: dict[str, Any] = {"do_sample": False, "num_beams": first.num_beams}
        if first.sampled:
            settings = {"do_sample": True, "temperature": float(first.temperature), "top_p": float(first.top_p or 1.0),
                        "num_beams": 1}
        frames = int(first.pixels.shape[0])
        out = self.evaluator.generate_ids(
            torch.stack([j.pixels for j in jobs]), [j.instruction for j in jobs], **settings,
            prompt_ids=[self.prompt_ids(j.instruction, frames) for j in jobs],
            max_new_tokens=max(j.max_new_tokens for j in jobs), streamer=streamer,
        )
        results = []
        for row, job in enumerate(jobs):
            ids = out[row].tolist()
            if not self.collator.decoder_only and ids and ids[0] == self.model.config.text_config.decoder_start_token_id:
                ids = ids[1:]  # T5's decoder start token
            ended = eos in ids[: job.max_new_tokens]
            ids = ids[: ids.index(eos)] if ended else ids[: job.max_new_tokens]
            text = self.decode(ids)
            if job.on_text is not None:
                sent = streamer.sent[row] if streamer is not None else ""
                if text.startswith(sent) and len(text) > len(sent):
                    job.on_text(text[len(sent):])  # what the streamer held back (or everything, for beams)
            results.append(Result(text=text, completion_tokens=len(ids), finish_reason="stop" if ended else "length"))
        return results

    # -- explainability and health -------------------------------------------------
    def attention(self, image: bytes, instruction: str) -> tuple[Any, bytes]:
        """(grid, PNG) of the Q-Former's cross-attention over the image (`components.serving.attention_heatmap`)."""
        from components.serving import attention_heatmap

        qf = self.collator.qformer_inputs([instruction])
        return attention_heatmap(self.model, self.pixels([image])[0], qf["qformer_input_ids"],
                                 qf["qformer_attention_mask"])

    def health_check(self) -> float:
        """A real forward pass on a blank image: one generated token. Returns its time in seconds.

        Raises whatever the model raises (the replica is then unhealthy).
        """
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (self.spec.size, self.spec.size), (127, 127, 127)).save(buf, format="PNG")
        start = time.perf_counter()
        result = self.generate([Job(pixels=self.pixels([buf.getvalue()]), instruction="What is this?",
                                    max_new_tokens=1)])[0]
        if result.completion_tokens > 1:
            raise RuntimeError(f"health check asked for 1 token and got {result.completion_tokens}")
        return time.perf_counter() - start


def replica_device(gpus_per_replica: float) -> str:
    """cuda when the replica was given a GPU and one is visible, else cpu."""
    return "cuda" if gpus_per_replica > 0 and torch.cuda.is_available() else "cpu"


def set_torch_threads(threads: int) -> None:
    """Limit torch's intra-op threads (0 = keep its default, which Ray sets from the replica's CPUs)."""
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
