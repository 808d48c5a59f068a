"""``sedsft sft`` under torchrun (2 gloo processes) with its folder held by another process and --wait:
the main rank waits for the lock, the other rank goes on once its own job holds it, and the run trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from sedsft.run_lock import LOCK, lock, unlock

from .tiny import ROOT


def test_a_two_process_sft_waits_for_its_folder_then_trains(tmp_path, tiny_ckpt, train_file):
    out = tmp_path / "out"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_ckpt}\ndataset_path: {train_file}\noutput_dir: {out}\nobjective: ce\n"
        "max_steps: 1\nper_device_train_batch_size: 2\nsave_strategy: 'no'\nreport_to: none\nuse_cpu: true\n"
        "bf16: false\nmax_length: 128\ndisable_tqdm: true\n"
    )
    out.mkdir()
    key = lock(out, wait=False)  # another sedsft process, as far as the job can tell
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd += ["-m", "sedsft.cli", "sft", "--config", str(cfg), "--wait"]
    log = tmp_path / "torchrun.log"
    with open(log, "w") as f:
        job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 300
        while "waiting for it (--wait)" not in log.read_text():
            assert job.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.05)
        assert f"is in use by another process (pid {os.getpid()}" in log.read_text()
        unlock(key)  # the other process ends: the job takes the folder
        assert job.wait(300) == 0, log.read_text()[-3000:]
    finally:
        unlock(key)
        if job.poll() is None:
            job.kill()
    assert (out / "model.safetensors").is_file() and not (out / LOCK).exists()
    assert json.loads((out / "sedsft_run.json").read_text())["state"]["finished"] is True
