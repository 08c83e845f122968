"""What one data-parallel step pays to communicate on 2 gloo ranks (CPU): the measured term of the scaling model.

    nice -n 5 python benchmarks/ddp_allreduce.py [--quick]

Launches itself under ``torchrun --standalone --nproc-per-node 2`` and times, on rank 0, ``dist.all_reduce``
of float32 buffers the size of what qcompile's gradient averager sends per step (gradients + BatchNorm
running statistics, :class:`qcompile.distributed.GradientAverager`) for the MNIST CNN and ResNet-20, and of
a 2-element buffer (an activation quantizer's min/max pair; the loop also reduces the step's metrics in one
such call). Each size: 20 warm-up calls, then ``--reps`` timed ones, preceded by a barrier so both ranks
start together; median and IQR in ms. One thread per rank; the machine's load average is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def sizes() -> dict[str, int]:
    """Elements all-reduced per step: parameters + BatchNorm running mean and variance."""
    from torch import nn

    from qcompile.loading import load_model

    def elements(model) -> int:
        bn = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        return sum(p.numel() for p in model.parameters()) + bn

    return {"activation range (min, max)": 2, "MNIST CNN gradients": elements(common.build_model()),
            "ResNet-20 gradients": elements(load_model(f"{common.REPO}/examples/resnet20.py:build"))}


def worker(out: Path, reps: int) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rows = []
    for name, n in sizes().items():
        buffer = torch.ones(n)
        for _ in range(20):
            dist.all_reduce(buffer)
        times = []
        for _ in range(reps):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(1e3 * (time.perf_counter() - started))
        q1, q3 = common.quartiles(times)
        rows.append({"buffer": name, "elements": n, "bytes": 4 * n, "median_ms": common.median(times),
                     "q1_ms": q1, "q3_ms": q3, "reps": reps})
    if dist.get_rank() == 0:
        out.write_text(json.dumps(rows))
    dist.destroy_process_group()


def render(record: dict) -> str:
    return common.markdown_table(
        ["buffer", "bytes", "all-reduce ms, median (IQR)"],
        [[r["buffer"], f"{r['bytes']:,}", f"{r['median_ms']:.3f} ({r['q1_ms']:.3f}–{r['q3_ms']:.3f})"]
         for r in record["rows"]])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), int(sys.argv[3]))
        return
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    reps = 50 if args.quick else 500
    rows_file = common.CACHE_DIR / "ddp_allreduce_rows.json"
    common.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
                    "--worker", str(rows_file), str(reps)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = json.loads(rows_file.read_text())
    rows_file.unlink()
    common.finish(common.write_results("ddp_allreduce", args, {"rows": rows}, started, load_before), render)


if __name__ == "__main__":
    main()
