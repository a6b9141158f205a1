"""The Gradio side of the side by side (``scripts/bench --peer``): the same workload as
Safelight's, written the way a Gradio demo with live progress is usually written.

A generator function per job: ``steps`` paced steps, one progress update per step (a text
output carrying the server's wall time, for latency) and a preview image every
``preview_every`` steps (the image output is left unchanged otherwise).  Run it with the
Python that has the ``[bench-peer]`` extra:

    python benchmarks/gradio_app.py --port 7861 --steps 30 --pace 0.1 --preview-every 5

Imports gradio only (not safelight): it runs in its own venv.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network from the bench

import gradio as gr
import numpy as np


def build(steps: int, pace: float, preview_every: int, size: int) -> gr.Blocks:
    def generate(prompt: str) -> Iterator[tuple[Any, Any]]:
        for step in range(1, steps + 1):
            time.sleep(pace)
            text = f"{step}/{steps} {time.time():.6f}"
            if step % preview_every == 0 or step == steps:
                shade = (step * 255) // steps
                image = np.full((size, size, 3), shade, dtype=np.uint8)
                yield text, image
            else:
                yield text, gr.skip()

    with gr.Blocks() as demo:
        prompt = gr.Textbox(label="prompt")
        progress = gr.Textbox(label="progress")
        preview = gr.Image(label="preview")
        button = gr.Button("Generate")
        button.click(generate, prompt, [progress, preview], api_name="generate")
    return demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--pace", type=float, default=0.1)
    p.add_argument("--preview-every", type=int, default=5)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    demo = build(a.steps, a.pace, a.preview_every, a.size)
    # Every user's job runs at once, as Safelight's do with --concurrency K.
    demo.queue(default_concurrency_limit=None, max_size=None)
    demo.launch(
        server_name="127.0.0.1", server_port=a.port, ssr_mode=False, show_error=True, quiet=True
    )


if __name__ == "__main__":
    main()
