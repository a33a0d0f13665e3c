"""Serving throughput and latency over real HTTP: dynamic batching against batch size 1.

Two Serve applications of the same model run side by side on a local Ray (one replica each,
the same CPUs): `batched` (`@serve.batch` with --max-batch-size and --wait) and `single`
(max_batch_size 1). A closed-loop client (aiohttp) keeps C requests in flight against one app at
a time, C in 1, 8, 32, sending OpenAI chat-completions requests (a sample-world image as a
data URL and a sample-world question, max_tokens --max-tokens). For each (app, C) it prints
requests/s, p50 and p99 latency; then the throughput ratio batched / single at each C. Each C is
measured in --rounds rounds in which the apps take turns (a noisy neighbour on a shared machine
then slows both), the rounds pooled; the per-round rates are printed too.
Goal (issue 6): at C = 32, batched >= 4x single, and batched p99 < 3x its p50.

    python benchmarks/serve.py [--model DIR_OR_URI] [--requests 640] [--rounds 3] [--max-batch-size 32]
        [--ingress haproxy] [--torch-threads 0]

Without --model a tiny model is built (its LLM pre-trained briefly so that it answers in words)
and exported to a temporary directory; pass `--model models:/instructblip@champion` (with
MLFLOW_TRACKING_URI) to measure a trained, registered model.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONCURRENCY = (1, 8, 32)


def build_model(out: str) -> str:
    """A tiny model for the sample world, exported to `out` (the default `iblip train` sizes)."""
    from components.config import from_dict
    from components.model import ModelSourceConfig, assemble, export_model

    cfg = from_dict(ModelSourceConfig, {"reader_steps": 150, "vision_steps": 50})
    model, processor = assemble(cfg, log=lambda *_: None)
    export_model(model, processor, out)
    return out


def requests_payloads(n: int, model_name: str, max_tokens: int) -> list[bytes]:
    """n chat requests, JSON-encoded once here (not by the client while it is timed): drawn
    sample-world scenes and questions."""
    from components.sample_world import scene as scenes
    from components.tiny_lm import reading_examples

    rng = random.Random(0)
    questions = [instruction for _, instruction, _ in reading_examples(n, seed=2)]
    bodies = []
    for question in questions:
        image = scenes.encode(scenes.draw(scenes.random_scene(rng, 1, 4), 160))
        url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
        bodies.append(json.dumps({"model": model_name, "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
            {"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]}]}).encode())
    return bodies


async def drive(url: str, bodies: list[bytes], concurrency: int) -> dict:
    """Send every body (JSON, encoded) with `concurrency` requests in flight; latencies, wall time,
    batch sizes seen."""
    import aiohttp

    queue = list(reversed(bodies))
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    batches: list[int] = []

    async def worker(session):
        while queue:
            body = queue.pop()
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {text[:300]}")
                batches.append(int(resp.headers.get("x-batch-size", "1")))
            latencies.append(time.perf_counter() - t0)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"wall": wall, "latencies": latencies, "batches": batches}


def summary(runs: list[dict]) -> dict:
    """Pooled over rounds: requests/s (all requests / all time), latency percentiles, batch sizes."""
    latencies = sorted(x for r in runs for x in r["latencies"])
    batches = [b for r in runs for b in r["batches"]]
    return {"rps": len(latencies) / sum(r["wall"] for r in runs), "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "mean_batch": statistics.mean(batches), "max_batch": max(batches), "n": len(latencies),
            "per_round": [len(r["latencies"]) / r["wall"] for r in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI or directory (default: build a tiny model)")
    parser.add_argument("--requests", type=int, default=640,
                        help="requests per (app, concurrency, round) at C >= 8 (a quarter at C = 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per concurrency; the two apps alternate and each app's rounds are pooled")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--wait", type=float, default=0.02, help="batch_wait_timeout_s of the batched app")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="deployment.torch_threads of both apps (0: torch's default, Ray's CPUs of the replica)")
    parser.add_argument("--no-access-log", action="store_true", help="deployment.access_log=false for both apps")
    parser.add_argument("--ingress", choices=("proxy", "haproxy"), default="haproxy",
                        help="deployment.ingress of both apps: Serve's Python proxy or Ray's HAProxy mode")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 1 or args.torch_threads < 0:
        parser.error("--rounds and --requests must be >= 1, --torch-threads >= 0")

    import ray
    from ray import serve

    from components.config import load_config
    from components.serving_model import ServeConfig
    from pipelines.serve import build_app, free_port, prepare_ingress

    tmp = tempfile.mkdtemp(prefix="iblip-bench-serve-")
    model = args.model or build_model(f"{tmp}/model")
    port = free_port()
    common = [f"model={model}", "served_model_name=bench", f"deployment.ingress={args.ingress}"]
    prepare_ingress(load_config(ServeConfig, None, common))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    apps = {"batched": (args.max_batch_size, args.wait), "single": (1, 0.0)}
    for name, (size, wait) in apps.items():
        cfg = load_config(ServeConfig, None, common + [
            f"batching.max_batch_size={size}",
            f"batching.batch_wait_timeout_s={wait}", f"deployment.cpus_per_replica={args.cpus_per_replica}",
            f"deployment.max_ongoing_requests={max(64, size)}", f"limits.max_tokens={max(32, args.max_tokens)}",
            f"deployment.access_log={str(not args.no_access_log).lower()}",
            f"deployment.torch_threads={args.torch_threads}"])
        serve.run(build_app(cfg), name=name, route_prefix=f"/{name}")
    print(f"model {model}; {args.max_tokens} tokens max per answer; batched: max_batch_size {args.max_batch_size}, "
          f"wait {args.wait} s; one replica per app, {args.cpus_per_replica} CPU each; "
          f"access log {'off' if args.no_access_log else 'on'}; {args.ingress} ingress", flush=True)

    results: dict[tuple[str, int], dict] = {}
    for concurrency in CONCURRENCY:
        n = max(16, args.requests if concurrency > 1 else args.requests // 4)
        bodies = requests_payloads(n, "bench", args.max_tokens)
        urls = {name: f"http://127.0.0.1:{port}/{name}/v1/chat/completions" for name in apps}
        for url in urls.values():
            asyncio.run(drive(url, bodies[: max(4, concurrency)], concurrency))  # warm-up
        # the apps take turns, round by round, so that a slow spell of a shared machine hits both
        runs: dict[str, list[dict]] = {name: [] for name in apps}
        for _ in range(args.rounds):
            for name, url in urls.items():
                runs[name].append(asyncio.run(drive(url, bodies, concurrency)))
        for name in apps:
            r = results[(name, concurrency)] = summary(runs[name])
            print(f"{name:8s} C={concurrency:<3d} {r['rps']:7.2f} req/s  p50 {r['p50'] * 1000:7.1f} ms  "
                  f"p99 {r['p99'] * 1000:7.1f} ms  p99/p50 {r['p99'] / r['p50']:4.2f}  "
                  f"batch mean {r['mean_batch']:.1f} max {r['max_batch']}  ({r['n']} requests; rounds: "
                  f"{', '.join(f'{x:.0f}' for x in r['per_round'])} req/s)", flush=True)
    print("\nthroughput ratio batched / single:")
    for concurrency in CONCURRENCY:
        ratio = results[("batched", concurrency)]["rps"] / results[("single", concurrency)]["rps"]
        print(f"  C={concurrency:<3d} {ratio:5.2f}x")
    top = results[("batched", 32)]
    ratio = top["rps"] / results[("single", 32)]["rps"]
    print(f"\ngoal at C=32: batched >= 4x single: {ratio:.2f}x ({'met' if ratio >= 4 else 'NOT met'}); "
          f"p99 < 3x p50: {top['p99'] / top['p50']:.2f}x ({'met' if top['p99'] < 3 * top['p50'] else 'NOT met'})")
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
