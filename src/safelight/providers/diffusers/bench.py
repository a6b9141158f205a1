"""Overhead of progress and previews in the diffusers provider.

Runs the same generation three ways and compares them:

* ``direct``: the pipeline called with no step callback (the baseline);
* ``callback``: the same, with the provider's step-end callback (progress every step,
  latent previews every ``--preview-interval`` s) but no model process or pipe;
* ``provider``: ``DiffusersProvider.generate`` with an ``on_step`` that takes previews the
  way the worker does: the model process, its pipe, image transfer and all.

    python -m safelight.providers.diffusers.bench                   # tiny random pipeline
    python -m safelight.providers.diffusers.bench --model DIR_OR_ID --device cuda \\
        --width 512 --height 512 --steps 30 --runs 10

Wall time is what a user feels.  CPU time (all threads of the processes involved: the
baseline process; or the provider's model process plus the calling process) is reported
too: on a shared machine it is far less disturbed by other people's load.

The baseline runs in its own spawned process, loaded by the same code as the model process,
and the three variants are interleaved round by round so drift and other load hit them
alike.  That holds the model in memory twice; ``--sequential`` runs the provider first and
the baseline after it instead.  Model loading and warm-up runs are not timed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from safelight.config import Settings
from safelight.providers.base import GenerationRequest, PreviewFn
from safelight.providers.diffusers import protocol as p
from safelight.providers.diffusers.provider import DiffusersProvider

VARIANTS = ("direct", "callback", "provider")


def _worker_like_on_step(interval: float, counter: dict[str, int]) -> Any:
    """Like the worker's: take a preview when offered and ``interval`` has passed."""
    last = -1e9

    def on_step(step: int, total: int, preview: PreviewFn | None) -> None:
        nonlocal last
        counter["steps"] += 1
        now = time.monotonic()
        if preview is not None and now - last >= interval:
            preview()
            counter["previews"] += 1
            last = now

    return on_step


def baseline_main(conn: Connection, config: p.ChildConfig, job: p.JobRequest) -> None:
    """The baseline process.  Answers ``"direct"`` / ``"callback"`` with ``(wall, cpu)``."""
    from safelight.providers.diffusers.child import Runner, _quiet_libraries

    _quiet_libraries()
    runner = Runner.load(config)
    conn.send("ready")
    while True:
        try:
            mode = conn.recv()
        except EOFError:
            return
        if mode == "stop":
            return
        callback = None
        if mode == "callback":
            callback = runner.make_callback(job, lambda *_: None, lambda: False)
        wall, cpu = time.perf_counter(), time.process_time()
        runner.run_pipeline(job, callback)
        conn.send((time.perf_counter() - wall, time.process_time() - cpu))


class _Baseline:
    def __init__(self, config: p.ChildConfig, job: p.JobRequest, pause: float) -> None:
        self.pause = pause
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=baseline_main, args=(child_conn, config, job))
        self.process.start()
        child_conn.close()
        if self.conn.recv() != "ready":
            raise RuntimeError("baseline process failed to start")

    def run(self, mode: str) -> tuple[float, float]:
        time.sleep(self.pause)
        self.conn.send(mode)
        wall, cpu = self.conn.recv()
        return float(wall), float(cpu)

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(30)


class _ProviderRunner:
    def __init__(self, settings: Settings, request: GenerationRequest, pause: float) -> None:
        self.provider = DiffusersProvider(settings)
        self.request = request
        self.pause = pause
        self.counter = {"steps": 0, "previews": 0}
        self.on_step = _worker_like_on_step(settings.preview_interval_s, self.counter)

    def start(self) -> None:
        self.provider.start(wait_ready=True)
        self.run()  # warm-up
        self.counter.update(steps=0, previews=0)

    def run(self) -> tuple[float, float]:
        psutil: Any = importlib.import_module("psutil")  # comes with accelerate

        time.sleep(self.pause)
        pid = self.provider.child_pid
        assert pid is not None
        child = psutil.Process(pid)
        before = child.cpu_times()
        wall, cpu = time.perf_counter(), time.process_time()
        self.provider.generate(self.request, self.on_step)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = child.cpu_times()
        cpu += (after.user - before.user) + (after.system - before.system)
        return wall, cpu


def component_costs(
    device: str, width: int, height: int, preview_max_side: int, repeat: int = 200
) -> dict[str, float]:
    """Per-step costs in isolation (ms), immune to the end-to-end numbers' noise: the latent
    projection (child), one step message with a preview frame through a pipe, and turning
    a frame into the preview image (parent, only when the worker takes one)."""
    import threading

    import torch

    from safelight.providers.diffusers.child import pick_device
    from safelight.providers.diffusers.previews import SD15, LatentProjector, preview_size
    from safelight.providers.diffusers.provider import _LatestPreview

    dev = pick_device(device)
    projector = LatentProjector(SD15, dev)
    latents = torch.randn(1, 4, height // 8, width // 8, device=dev)
    frame = projector.project(latents)
    started = time.perf_counter()
    for _ in range(repeat):
        projector.project(latents)
    project_ms = (time.perf_counter() - started) / repeat * 1000

    size = preview_size(width, height, preview_max_side)
    started = time.perf_counter()
    for _ in range(repeat):
        _LatestPreview(frame, size)()
    preview_ms = (time.perf_counter() - started) / repeat * 1000

    a, b = mp.Pipe()
    reader = threading.Thread(target=lambda: [b.recv() for _ in range(repeat)])
    reader.start()
    started = time.perf_counter()
    for i in range(repeat):
        a.send((p.STEP, 1, i, repeat, frame))
    reader.join()
    message_ms = (time.perf_counter() - started) / repeat * 1000
    return {
        "project_ms": round(project_ms, 4),
        "step_message_with_frame_ms": round(message_ms, 4),
        "preview_image_ms": round(preview_ms, 4),
        "frame_bytes": len(frame.rgb),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), 4),
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        # Inherited by the spawned processes; torch reads it when it starts.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}

    def record(variant: str, result: tuple[float, float]) -> None:
        wall[variant].append(result[0])
        cpu[variant].append(result[1])

    with tempfile.TemporaryDirectory(prefix="safelight-bench-") as tmp:
        model = args.model
        if model is None:
            from safelight.providers.diffusers.tiny import build_tiny_pipeline

            model = str(build_tiny_pipeline(Path(tmp)))
        settings = Settings(
            diffusers_model=model,
            diffusers_device=args.device,
            preview_interval_s=args.preview_interval,
            preview_max_side=args.preview_max_side,
        )
        request = GenerationRequest(
            job_id="bench",
            attempt=1,
            prompt=args.prompt,
            negative_prompt="",
            width=args.width,
            height=args.height,
            steps=args.steps,
            style="none",
            seed=1,
            num_images=args.images,
        )
        job = p.JobRequest(
            job_id=0,
            prompt=request.prompt,
            negative_prompt="",
            width=request.width,
            height=request.height,
            steps=request.steps,
            seed=request.seed,
            num_images=request.num_images,
            preview_interval_s=args.preview_interval,
        )
        config = p.ChildConfig(model, args.device, allow_download=False)
        prov = _ProviderRunner(settings, request, args.pause)

        def baseline_rounds(baseline: _Baseline, with_provider: bool) -> None:
            baseline.run("direct")  # warm-up
            baseline.run("callback")
            for _ in range(args.runs):
                record("direct", baseline.run("direct"))
                record("callback", baseline.run("callback"))
                if with_provider:
                    record("provider", prov.run())

        if args.sequential:  # one model in memory at a time
            prov.start()
            for _ in range(args.runs):
                record("provider", prov.run())
            runtime = prov.provider.runtime
            prov.provider.close()
            baseline = _Baseline(config, job, args.pause)
            baseline_rounds(baseline, with_provider=False)
            baseline.close()
        else:  # interleaved rounds
            prov.start()
            baseline = _Baseline(config, job, args.pause)
            baseline_rounds(baseline, with_provider=True)
            runtime = prov.provider.runtime
            baseline.close()
            prov.provider.close()

    def overhead(table: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        base = _summary(table["direct"])
        out = {}
        for variant in ("callback", "provider"):
            s = _summary(table[variant])
            out[variant] = {k: round(100 * (s[k] / base[k] - 1), 2) for k in s}
        return out

    wall_s = {v: _summary(wall[v]) for v in VARIANTS}
    parts = component_costs(args.device, args.width, args.height, args.preview_max_side)
    step_ms = 1000 * wall_s["direct"]["median"] / args.steps
    return {
        "model": args.model or "tiny random SD pipeline",
        "device": runtime.device if runtime else args.device,
        "pipeline": runtime.pipeline if runtime else "?",
        "size": f"{args.width}x{args.height}",
        "steps": args.steps,
        "images": args.images,
        "runs": args.runs,
        "threads": args.threads or "default",
        "preview_interval_s": args.preview_interval,
        "previews_per_run": round(prov.counter["previews"] / args.runs, 1),
        "wall_s": wall_s,
        "wall_overhead_pct": overhead(wall),
        "cpu_s": {v: _summary(cpu[v]) for v in VARIANTS},
        "cpu_overhead_pct": overhead(cpu),
        "provider_wall_overhead_per_step_ms": round(
            1000 * (wall_s["provider"]["median"] - wall_s["direct"]["median"]) / args.steps, 3
        ),
        "direct_step_ms_median": round(step_ms, 3),
        "components": parts,
        "components_pct_of_step": round(
            100 * (parts["project_ms"] + parts["step_message_with_frame_ms"]) / step_ms, 3
        ),
        "runs_wall_s": {k: [round(t, 4) for t in v] for k, v in wall.items()},
    }


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['pipeline']} on {result['device']}, {result['size']}, {result['steps']} steps, "
        f"{result['images']} image(s), {result['runs']} runs, threads {result['threads']}, "
        f"previews every {result['preview_interval_s']:g} s ({result['previews_per_run']} per run)"
    )
    labels = {
        "direct": "direct (no callback)",
        "callback": "callback + previews",
        "provider": "provider (model process)",
    }
    for kind in ("wall", "cpu"):
        secs, pct = result[f"{kind}_s"], result[f"{kind}_overhead_pct"]
        print(f"  {kind} time{'':16}{'mean ms':>10}{'median ms':>11}{'min ms':>9}   overhead")
        for variant in VARIANTS:
            row = f"  {labels[variant]:26}" + "".join(
                f"{secs[variant][st] * 1000:{w}.1f}"
                for st, w in (("mean", 10), ("median", 11), ("min", 9))
            )
            if variant in pct:
                o = pct[variant]
                row += f"   {o['mean']:+.2f} % mean, {o['median']:+.2f} % median"
            print(row)
    c = result["components"]
    print(
        f"  per step, in isolation: projection {c['project_ms']:.3f} ms + message with "
        f"preview frame ({c['frame_bytes']} B) {c['step_message_with_frame_ms']:.3f} ms = "
        f"{result['components_pct_of_step']:.2f} % of a {result['direct_step_ms_median']:.1f} ms "
        f"step; preview image when taken {c['preview_image_ms']:.3f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench-diffusers",
        description="Overhead of progress + latent previews in the diffusers provider.",
    )
    parser.add_argument("--model", default=None, help="model dir or cached id (default: tiny)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--preview-interval", type=float, default=1.0)
    parser.add_argument("--preview-max-side", type=int, default=384)
    parser.add_argument("--prompt", default="a lighthouse on a cliff, watercolor")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per process (default: torch's)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.3,
        help="idle seconds before each timed run, so the other process's threads settle",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="provider runs first, then the baseline (one model in memory at a time; "
        "use for large models on a small GPU)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    result = run(args)
    if not args.json:
        _print_table(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
