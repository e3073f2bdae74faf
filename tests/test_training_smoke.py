"""End-to-end: the training notebooks under papermill with ``params/smoke/*``, and a 2-process run.

One session-scoped output root holds the smoke experiment: ``00_data`` runs first (the data
stage), then ``01_sft`` -> ``02_cold_start`` -> ``03_grpo`` (thinking False and True, and the
reward ablation ``grpo_bleu`` with a TRL setting radlab never names, checked to form Table 3's
group with ``grpo`` from the params the runs wrote), each on the tiny embedded model for a handful
of steps.  The documented GRPO command (``papermill ... -p
thinking False`` with defaults reading ``runs/demo/``) is checked to fail with the ParamError that
says what to run first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_ok(papermill, notebook: str, out: Path, params_file: str, **parameters: object) -> float:
    """Run a notebook with the ``papermill`` fixture, assert it succeeded; returns its wall time
    (printed, never asserted)."""
    t0 = time.perf_counter()
    proc = papermill(notebook, out, params=params_file, timeout=240, **parameters)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"{notebook} failed:\n{proc.stderr[-4000:]}"
    return seconds


# smoke_root (the smoke data stage, once per session) and papermill come from conftest.py.


@pytest.mark.slow
def test_grpo_without_inputs_says_what_to_run_first(tmp_path: Path, papermill) -> None:
    """The design's command with demo defaults and no runs/demo fails with the ParamError."""
    proc = papermill("03_grpo.ipynb", tmp_path / "out.ipynb", thinking=False, output_root=tmp_path / "runs", timeout=240)
    assert proc.returncode != 0
    assert "ParamError" in proc.stderr and "data_dir" in proc.stderr and "00_data.ipynb" in proc.stderr


@pytest.mark.slow
def test_smoke_notebooks_end_to_end(smoke_root: Path, papermill) -> None:
    exp = smoke_root / "smoke"
    times = {}
    times["sft"] = run_ok(papermill, "01_sft.ipynb", exp / "01_sft.ipynb", "params/smoke/sft.yaml",
                          output_root=smoke_root)
    sft = exp / "sft"
    for name in ("DONE", "model/config.json", "trainer_state.json", "log_history.csv", "figures/loss.png",
                 "generations.csv", "image_dependence.csv", "params.yaml", "env.json"):
        assert (sft / name).exists(), name
    assert json.loads((sft / "DONE").read_text())["global_step"] == 4

    times["cold_start"] = run_ok(papermill, "02_cold_start.ipynb", exp / "02_cold_start.ipynb",
                                 "params/smoke/cold_start.yaml", output_root=smoke_root)
    cs = exp / "cold_start"
    for name in ("DONE", "model/config.json", "traces.parquet", "verification.csv", "log_history.csv"):
        assert (cs / name).exists(), name
    done = json.loads((cs / "DONE").read_text())
    assert done["traces_kept"] > 0 and "traces_dropped" in done

    # grpo_bleu: the reward ablation, plus a TRL setting radlab never names (papermill injects it).
    for name, think, extra in (("grpo", False, {}), ("grpo_think", True, {}), ("grpo_bleu", False, {"top_k": 5})):
        times[name] = run_ok(papermill, "03_grpo.ipynb", exp / f"03_{name}.ipynb", f"params/smoke/{name}.yaml",
                             output_root=smoke_root, run_name=name, **extra)
        run = exp / name
        for fname in ("DONE", "model/config.json", "log_history.csv", "completions.parquet", "heldout.csv",
                      "heldout_final.csv", "figures/grpo_rewards.png", "figures/grpo_dynamics.png"):
            assert (run / fname).exists(), (name, fname)
        import pandas as pd

        log = pd.read_csv(run / "log_history.csv")
        metrics = set(log["metric"])
        assert {"reward", "frac_reward_zero_std", "entropy", "completions/mean_length"} <= metrics
        assert any(m.startswith("rewards/box_soft_f1") for m in metrics)
        assert any(m.startswith("heldout/") for m in metrics)
        if think:
            assert any(m.startswith("rewards/think_format") for m in metrics)
        if name == "grpo_bleu":
            assert any(m.startswith("rewards/bleu") for m in metrics)
            assert not any(m.startswith("rewards/f1radgraph") for m in metrics)
            import yaml

            assert yaml.safe_load((run / "params.yaml").read_text())["top_k"] == 5
        comp = pd.read_parquet(run / "completions.parquet")
        assert {"step", "task", "prompt", "completion", "reward", "advantage"} <= set(comp.columns)
    print("smoke notebook seconds:", {k: round(v, 1) for k, v in times.items()})

    # Later stages only read the finished data run: nothing in it is newer than its DONE (pages aside).
    data_done = (exp / "data" / "DONE").stat().st_mtime_ns
    newer = [str(p.relative_to(exp / "data")) for p in (exp / "data").rglob("*")
             if p.is_file() and p.suffix != ".html" and p.stat().st_mtime_ns > data_done]
    assert newer == [], newer

    # Table 3's grouping on the resolved params.yaml files the training wrote (every TRL field in them):
    # grpo_bleu (other rewards + top_k 5) is grouped with grpo, and top_k=5 is its only other difference.
    from radlab.config import validate
    from radlab.experiment import discover_models, reward_ablations

    specs, _ = discover_models(validate("analysis", {"experiment": "smoke", "output_root": str(smoke_root)}))
    (group,) = reward_ablations(specs)
    assert (group.start, group.thinking, group.reference) == ("sft", False, "grpo")
    assert group.differences == {"grpo": [], "grpo_bleu": ["top_k=5"]}

    # Re-running every notebook of the finished experiment with the same params (all cells: resolve,
    # model loading, training, generations, DONE) trains nothing and leaves every run folder as it was.
    before = snapshot(exp)
    again = smoke_root.parent / f"{smoke_root.name}_again"
    again.mkdir(exist_ok=True)
    for notebook, params_file, name in (("00_data.ipynb", "params/smoke/data.yaml", "data"),
                                        ("01_sft.ipynb", "params/smoke/sft.yaml", "sft"),
                                        ("02_cold_start.ipynb", "params/smoke/cold_start.yaml", "cold_start"),
                                        ("03_grpo.ipynb", "params/smoke/grpo.yaml", "grpo")):
        out = again / notebook
        run_ok(papermill, notebook, out, params_file, output_root=smoke_root)
        assert f"{exp / name} holds this finished" in out.read_text(), name
    assert snapshot(exp) == before
    # Other params on a finished run: a clear error before anything loads, the folder untouched.
    proc = papermill("03_grpo.ipynb", again / "other.ipynb", params="params/smoke/grpo.yaml",
                     output_root=smoke_root, learning_rate=0.5, timeout=240)
    assert proc.returncode != 0 and "ParamError" in proc.stderr
    assert "learning_rate" in proc.stderr and "force=True" in proc.stderr
    assert snapshot(exp) == before


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` except the executed notebooks beside the run folders: (sha256, mtime_ns)."""
    import hashlib

    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.parent != root}


@pytest.mark.slow
def test_two_process_sft_on_cpu(smoke_root: Path, tmp_path: Path, papermill) -> None:
    """``accelerate launch`` with 2 CPU processes (gloo) runs the SFT stage to completion.

    ``--multi_gpu`` picks accelerate's torchrun launcher; with no CUDA, radlab's process state
    asks for the CPU, so the processes form a gloo group (``--cpu`` alone would need mpirun for
    more than one process).
    """
    out = tmp_path / "runs"
    (out / "smoke").mkdir(parents=True)
    os.symlink(smoke_root / "smoke" / "data", out / "smoke" / "data")
    cmd = [str(Path(PY).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "radlab.training", "sft", "--params", str(REPO / "params" / "smoke" / "sft.yaml"),
           "-p", "output_root", str(out), "-p", "run_name", "sft_ddp"]
    # CUDA hidden: on a GPU machine two processes would otherwise share one GPU under NCCL.
    proc = subprocess.run(cmd, env={**papermill.env, "RADLAB_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done = json.loads((out / "smoke" / "sft_ddp" / "DONE").read_text())
    assert done["num_processes"] == 2 and done["global_step"] == 4
    assert (out / "smoke" / "sft_ddp" / "model" / "config.json").exists()
