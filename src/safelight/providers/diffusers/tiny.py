"""A tiny, randomly initialised Stable Diffusion pipeline, built offline.

For tests and the overhead benchmark: the real diffusers code path (UNet, VAE, CLIP text
encoder and tokenizer, scheduler) at a size that runs on a CPU in milliseconds per step.
Its images are noise-like, but they are deterministic for equal seeds.

    python -m safelight.providers.diffusers.tiny /tmp/tiny-sd
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# A few words get BPE merges so the tokenizer behaves like a real one on them; every other
# word falls back to byte-level tokens.
_WORDS = (
    *("a", "photo", "of", "the", "cat", "dog", "red", "blue", "green", "house", "tree"),
    *("sky", "city", "night", "sunset", "mountain", "lake", "portrait", "painting"),
    *("watercolor", "anime", "cinematic", "line", "art", "light", "film", "style"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte as a printable character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tokenizer_files(directory: Path) -> tuple[Path, Path, int]:
    """Write a tiny CLIP ``vocab.json`` and ``merges.txt``; return their paths and the
    vocabulary size."""
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in _WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            line = f"{parts[0]} {parts[1]}"
            if line not in merges:
                merges.append(line)
            if merged not in vocab:
                vocab[merged] = len(vocab)
            parts = [merged, *parts[2:]]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab_path = directory / "vocab.json"
    merges_path = directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path, len(vocab)


def build_tiny_pipeline(directory: Path, *, seed: int = 0) -> Path:
    """Build the pipeline, ``save_pretrained`` it to ``directory / "model"`` and return that
    path (a diffusers model directory with ``model_index.json``)."""
    import torch

    diffusers: Any = __import__("diffusers")
    transformers: Any = __import__("transformers")

    max_length = 16
    _, _, vocab_size = write_tokenizer_files(directory / "tokenizer-src")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(
        str(directory / "tokenizer-src"), model_max_length=max_length
    )
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    # Four VAE blocks: latents are 1/8 of the image size, as in real SD checkpoints.
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=vocab_size,
            max_position_embeddings=max_length,
            projection_dim=32,
        )
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = directory / "model"
    pipe.save_pretrained(str(out))
    return out


if __name__ == "__main__":
    print(build_tiny_pipeline(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-sd")))
