"""`accelerate launch` for tests that train on several processes.

`accelerate launch --cpu` starts one process whatever `--num_processes` says. Several CPU processes (gloo) start
from a multi-process launch (`--multi_gpu`, or a configuration file) with `ACCELERATE_USE_CPU=true`, except under
DeepSpeed, which runs its CPU processes itself (with that variable accelerate would run plain data parallelism);
where enough GPUs are present the same launch runs on them."""

import os
import sys

import torch

from normalcrafter_pipeline.testing_utils import free_port


def launch(num_processes: int, launch_args=(), deepspeed: bool = False) -> tuple[list[str], dict[str, str]]:
    """`(command prefix, environment)` to run a script on `num_processes` processes; `launch_args` (a
    `--config_file`, say) replace the default `--multi_gpu` for several processes; `deepspeed`: they name a
    DeepSpeed configuration."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
    command += ["--num_processes", str(num_processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes == 1:
        return [*command, "--cpu", *launch_args], env
    if torch.cuda.device_count() < num_processes and not deepspeed:
        env["ACCELERATE_USE_CPU"] = "true"
    return [*command, "--main_process_port", str(free_port()), *(launch_args or ["--multi_gpu"])], env


def check_processes(log: str, num_processes: int) -> None:
    """Assert that the run's log shows `num_processes` processes taking part, as the ranks of one run."""
    assert f"Num processes: {num_processes}" in log, log[-3000:]
    assert all(f"[RANK {rank}] Distributed environment" in log for rank in range(num_processes)), log[-3000:]
