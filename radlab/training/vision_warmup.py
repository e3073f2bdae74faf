"""Vision warm start: a short supervised pretraining of the vision tower before SFT.

A real Qwen3-VL starts SFT from a pretrained vision encoder; the embedded model starts from
random weights, and its language model then ignores the image for its first ~1000 SFT steps
(README, "The demo").  This step plays the pretrained encoder's role: it trains the vision tower,
its patch merger and the deepstack mergers (the language model is untouched) on the *training*
records' image-level labels, then SFT starts from it.  Test and GRPO images are never seen.

Targets per training record (``records/dataset/train`` of the data stage):

* one presence label per finding name, and one per (finding name, side) for left/right findings
  (bilateral counts for both sides), from ``record["findings"]`` (what the image shows, whether
  or not the report mentions it); records without ``findings`` (real datasets) use their
  CheXpert labels instead (1 and -1 positive, 0 and missing negative);
* the union box of each present finding name (``record["boxes"]`` of kind ``finding``), an L1
  loss on the present ones only.

Heads: a per-token linear layer over the merged image tokens (main output plus deepstack
features); presence logits are the log-sum-exp over an image's tokens (a soft maximum: a finding
is present if some region shows it), boxes come from the mean token.  The heads are dropped
afterwards.

The result is cached by content hash under ``<cache_dir>/<hash>/vision.safetensors``: the hash
covers the base model's weights, the training images and labels, and the warm-start settings,
so a rerun with the same inputs loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radlab import runs
from radlab.data.build import load_data_split
from radlab.training.compute import ParamCounts, forward_flops, param_counts

VERSION = "vision-warmup/1"
SIDES = ("left", "right")


def targets(records: Sequence[dict[str, Any]]) -> tuple[list[str], np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Label names, presence matrix, box names, boxes and box mask for ``records``.

    Returns ``(labels [L], y [N, L] in {0,1}, box_names [K], boxes [N, K, 4] xyxy in [0,1],
    box_mask [N, K])``.  Label vocabulary is sorted, so it does not depend on record order.
    """
    use_findings = any(r.get("findings") for r in records)
    per_record: list[set[str]] = []
    box_of: list[dict[str, list[float]]] = []
    for r in records:
        labs: set[str] = set()
        boxes: dict[str, list[float]] = {}
        if use_findings:
            by_id = {b["box_id"]: b["box"] for b in r.get("boxes") or [] if b.get("kind") == "finding"}
            for f in r.get("findings") or []:
                name = f["name"]
                labs.add(name)
                side = f.get("laterality") or ""
                for s in SIDES:
                    if side in (s, "bilateral"):
                        labs.add(f"{name}@{s}")
                bs = [by_id[i] for i in f.get("box_ids") or [] if i in by_id]
                if bs:
                    arr = np.asarray(bs + ([boxes[name]] if name in boxes else []), dtype=float)
                    boxes[name] = [arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max()]
        else:
            labs = {k for k, v in (r.get("chexpert") or {}).items() if v in (1, -1)}
        per_record.append(labs)
        box_of.append(boxes)
    labels = sorted(set().union(*per_record)) if per_record else []
    index = {name: i for i, name in enumerate(labels)}
    y = np.zeros((len(records), len(labels)), dtype=np.float32)
    for n, labs in enumerate(per_record):
        for lab in labs:
            y[n, index[lab]] = 1.0
    box_names = sorted(set().union(*[b.keys() for b in box_of])) if box_of else []
    bindex = {name: i for i, name in enumerate(box_names)}
    boxes_arr = np.zeros((len(records), len(box_names), 4), dtype=np.float32)
    mask = np.zeros((len(records), len(box_names)), dtype=np.float32)
    for n, bs in enumerate(box_of):
        for name, box in bs.items():
            boxes_arr[n, bindex[name]] = box
            mask[n, bindex[name]] = 1.0
    return labels, y, box_names, boxes_arr, mask


def cache_key(model_dir: str | os.PathLike[str], image_paths: Sequence[Path], y: np.ndarray, boxes: np.ndarray,
              settings: dict[str, Any]) -> str:
    """sha256 over the base model's weight files, the images' bytes, the targets and ``settings``."""
    h = hashlib.sha256(VERSION.encode())
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    for p in image_paths:
        h.update(Path(p).read_bytes())
    h.update(np.ascontiguousarray(y).tobytes())
    h.update(np.ascontiguousarray(boxes).tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:20]


def _image_features(model: Any, pixel_values: Any, grid_thw: Any) -> list[Any]:
    """Per-image merged token features ``[tokens_i, hidden]``: main output plus deepstack features."""
    out = model.model.get_image_features(pixel_values, grid_thw)
    feats = list(out.pooler_output)
    for level in out.deepstack_features or []:
        feats = [f + d for f, d in zip(feats, level)]
    return feats


def warm_start_vision(
    model: Any,
    processor: Any,
    data_dir: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    log: Any = print,
) -> dict[str, Any]:
    """Warm-start ``model``'s vision side in place (or load it from the cache); returns a summary.

    ``data_dir``: the data stage folder (``records/dataset`` train split and its images);
    ``model_dir``: the folder ``model`` was loaded from (its weights enter the cache key).
    Summary: ``{"cache": "hit"|"miss", "key", "steps", "labels", "seconds", "final_loss", "flops",
    "train_f1": {label: F1 on the last 10% of records, held back from the warm start}}``.
    """
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    t0 = time.perf_counter()
    records = load_data_split(data_dir, "records")["train"].to_list()
    paths = [Path(data_dir) / r["image_path"] for r in records]
    labels, y, box_names, boxes, bmask = targets(records)
    settings = {"steps": steps, "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
                "labels": labels, "box_names": box_names}
    key = cache_key(model_dir, paths, y, boxes, settings)
    target = Path(cache_dir) / key
    visual = model.model.visual
    summary: dict[str, Any] = {"key": key, "steps": steps, "labels": len(labels), "records": len(records)}
    if (target / "vision.safetensors").exists():
        visual.load_state_dict(load_file(str(target / "vision.safetensors")))
        summary.update(json.loads((target / "summary.json").read_text()), cache="hit",
                       seconds=round(time.perf_counter() - t0, 2))
        log(f"vision warm start: cache hit {target}")
        return summary

    # Pixel values once for all images (the image processor is a large share of a step otherwise).
    ip = processor.image_processor
    pix, grids = [], []
    for start in range(0, len(paths), 64):
        imgs = [Image.open(p).convert("RGB") for p in paths[start:start + 64]]
        out = ip(images=imgs, return_tensors="pt")
        per = out["image_grid_thw"].prod(-1).tolist()
        pix.extend(torch.split(out["pixel_values"].to(torch.float16), per))
        grids.extend(out["image_grid_thw"])
    n = len(records)
    n_hold = max(1, n // 10) if n >= 20 else 0
    train_idx = np.arange(n - n_hold)
    hidden = visual.config.out_hidden_size
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden, len(labels))
    box_head = torch.nn.Linear(hidden, 4 * max(1, len(box_names)))
    for m in (head, box_head):
        torch.nn.init.normal_(m.weight, std=0.02, generator=gen)
        torch.nn.init.zeros_(m.bias)
    params = list(visual.parameters()) + list(head.parameters()) + list(box_head.parameters())
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    yt, bt, mt = torch.from_numpy(y), torch.from_numpy(boxes), torch.from_numpy(bmask)
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.train()

    def forward(idx: Sequence[int]) -> tuple[Any, Any]:
        pv = torch.cat([pix[i] for i in idx]).to(torch.float32)
        grid = torch.stack([grids[i] for i in idx])
        feats = _image_features(model, pv, grid)
        logits = torch.stack([torch.logsumexp(head(f), dim=0) - np.log(len(f)) for f in feats])
        pred_boxes = torch.stack([box_head(f.mean(0)) for f in feats]).view(len(idx), -1, 4)
        return logits, torch.sigmoid(pred_boxes[:, : len(box_names)])

    loss_val = float("nan")
    order: list[int] = []
    # Training compute by radlab.training.compute's rule (forward + backward of the vision side per
    # patch, all of it trainable); the linear heads are left out (tiny).
    n_vision = param_counts(model).vision
    vision_counts = ParamCounts(0, 0, 0, 0, n_vision, n_vision)
    flops = 0.0
    for step in range(steps):
        if len(order) < batch_size:
            order.extend(rng.permutation(train_idx).tolist())
        idx, order = order[:batch_size], order[batch_size:]
        flops += forward_flops(vision_counts, 0, 0, sum(int(pix[i].shape[0]) for i in idx), backward=True)
        logits, pred = forward(idx)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[idx])
        if box_names:
            m = mt[idx].unsqueeze(-1)
            loss = loss + ((pred - bt[idx]).abs() * m).sum() / (4 * m.sum()).clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_val = loss.item()
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"vision warm start: step {step + 1}/{steps} loss {loss_val:.4f}")
    model.train(was_training)

    f1: dict[str, float] = {}
    if n_hold:
        with torch.no_grad():
            hold = list(range(n - n_hold, n))
            logits = torch.cat([forward(hold[s:s + 64])[0] for s in range(0, n_hold, 64)])
        pred = (logits > 0).numpy()
        truth = y[n - n_hold:] > 0.5
        for j, lab in enumerate(labels):
            tp = float((pred[:, j] & truth[:, j]).sum())
            denom = float(pred[:, j].sum() + truth[:, j].sum())
            if truth[:, j].sum():
                f1[lab] = round(2 * tp / denom, 3) if denom else 0.0
    result = {"final_loss": round(loss_val, 5), "train_seconds": round(time.perf_counter() - t0, 2), "flops": flops,
              "heldback_f1": f1, "labels_list": labels}
    # Written to a temp folder and renamed: a killed run never leaves a half-written cache entry.
    tmp = target.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in visual.state_dict().items()}, str(tmp / "vision.safetensors"))
    runs.write_json(tmp / "summary.json", result)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    summary.update(result, cache="miss", seconds=round(time.perf_counter() - t0, 2))
    return summary
