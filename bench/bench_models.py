"""Embedded Qwen3-VL: build time and parameter counts per size; forward, generate and train-step
time of the demo size ("tiny") on this machine's CPU.

    .venv/bin/python bench/bench_models.py [--threads N] [--sizes tiny,small,base]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from radlab import models


def _timeit(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="tiny,small,base")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, image {args.image_size}px, fp32")
    print(f"{'size':<6} {'build s':>8} {'params':>11} {'vision':>10} {'vocab':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[str, Path] = {}
        for size in args.sizes.split(","):
            t0 = time.perf_counter()
            path = models.build_tiny_qwen3vl(Path(tmp) / size, size)
            dt = time.perf_counter() - t0
            model, proc = models.load_model_and_processor(str(path), device="cpu")
            c = models.count_parameters(model)
            print(f"{size:<6} {dt:8.2f} {c['total']:11,d} {c['vision']:10,d} {len(proc.tokenizer):6d}")
            built[size] = path

        model, proc = models.load_model_and_processor(str(built.get("tiny", next(iter(built.values())))), device="cpu")
        rng = np.random.default_rng(0)
        imgs = [Image.fromarray((rng.random((args.image_size,) * 2) * 255).astype(np.uint8)) for _ in range(args.batch)]
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Write the findings section."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Heart size is normal. Small left pleural "
                                                   "effusion. No pneumothorax. Lungs otherwise clear."}]}]
        text = proc.apply_chat_template(msgs)
        batch = proc(text=[text] * args.batch, images=imgs, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        n_img_tokens = int((batch["input_ids"][0] == model.config.image_token_id).sum())
        print(f"demo model: {n_img_tokens} image tokens per image, sequence length {batch['input_ids'].shape[1]}")

        model.eval()
        with torch.no_grad():
            med, best = _timeit(lambda: model(**batch), 5)
        print(f"forward   batch {args.batch:>3}: {med * 1000:8.1f} ms (best {best * 1000:.1f})")

        prompt = proc.apply_chat_template(msgs[:1], add_generation_prompt=True)
        proc.tokenizer.padding_side = "left"
        gen_in = proc(text=[prompt] * args.batch, images=imgs, return_tensors="pt", padding=True)

        def gen() -> None:
            with torch.no_grad():
                model.generate(**gen_in, max_new_tokens=48, min_new_tokens=48, do_sample=False)

        med, best = _timeit(gen, 3)
        print(f"generate  batch {args.batch:>3} x 48 tokens: {med:6.2f} s ({args.batch * 48 / med:7.0f} tokens/s)")

        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            loss = model(**batch, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        med, best = _timeit(step, 5)
        print(f"train step batch {args.batch:>3}: {med * 1000:8.1f} ms (best {best * 1000:.1f})")


if __name__ == "__main__":
    main()
