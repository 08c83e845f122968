"""One rank of the data-parallel method tests (tests/test_distributed_methods.py), started by torch.distributed.run.

``python ddp_methods_worker.py OUT_DIR CODEC_MODEL_FILE PHOTOS`` — also run as a single process, which gives
the references. One launch runs every loop a method adds, each tiny, and saves what each rank ends with in
``OUT_DIR/rank{r}.pt``:

- ``metaquant``: 4 MetaQuant steps (LSTMFC meta-net, global batches of 5 split 3 + 2): the weights, φ, the
  per-weight state (g_Ŵ, W̃, LSTM state) and the step records; the single process also stops a run after
  step 2 (``OUT_DIR/metaquant-checkpoint``), which the ranks finish (``metaquant_resumed``);
- ``synthesis``: a pool of 4 batches, resumed from ``OUT_DIR/pool.partial.npz`` when that file exists (the
  single process writes it by stopping after batch 1) — the pool's images and the checkpoint's batch count;
- ``dynadfq``: dynamic-width DynaDFQ (selector and nested widths) trained 2 steps on that pool: its weights;
- ``codec``: 3 steps of codec rate–distortion training: its weights and ``codec.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qcompile import distributed
from qcompile.synthesis.progress import NullSynthesisProgress

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import tiny_data  # noqa: E402


def metaquant(checkpoint: Path | None = None, max_steps: int | None = None, resume: bool = False) -> dict:
    from qcompile.methods.metaquant import MetaQuantizer, MetaQuantOptions, MetaQuantStep
    from qcompile.quantized_ops import quantize_module
    from qcompile.quantizers import DoReFaQuantizer
    from qcompile.train import TrainConfig, finetune

    torch.manual_seed(0)
    model = nn.Sequential(quantize_module(nn.Linear(4, 8), MetaQuantizer(DoReFaQuantizer(2))), nn.ReLU(),
                          quantize_module(nn.Linear(8, 3), MetaQuantizer(DoReFaQuantizer(2))))
    step = MetaQuantStep(MetaQuantOptions(meta="lstmfc", hidden=4))
    config = TrainConfig(epochs=2, batch_size=5, lr=0.1, momentum=0.9, device="cpu", seed=3, max_steps=max_steps,
                         checkpoint_every=1 if checkpoint else 0)
    taken = []
    result = finetune(model, tiny_data(), config=config, strategy=step, progress=False, checkpoint_dir=checkpoint,
                      resume=resume, callbacks=[lambda event, state: taken.append(event == "step_end")])
    layers = {name: (q.grad_hat.clone(), q.w_tilde.clone(), tuple(t.clone() for t in step.lstm_state[name]))
              for name, _, q in step.layers}
    return {"model": model.state_dict(), "phi": step.meta_net.state_dict(), "layers": layers,
            "records": result.step_records, "steps": result.steps, "steps_taken_here": sum(taken)}


class StopAfterFirstBatch(NullSynthesisProgress):
    def end_batch(self, summary) -> None:
        raise KeyboardInterrupt


def synthesis(out: Path) -> tuple[dict, Path]:
    from conftest import TinyBNNet
    from qcompile.synthesis import SynthesisConfig, save_pool, synthesize

    torch.manual_seed(0)
    model = TinyBNNet().eval()
    config = SynthesisConfig(images=40, batch_size=10, steps=4)
    partial, pool_path = out / "pool.partial.npz", out / "pool.npz"
    resume = partial.exists()
    if not resume:  # one process: stop after batch 1, leaving the checkpoint the ranks resume from
        try:
            synthesize(model, (1, 8, 8), config, mean=(0.3,), std=(0.4,), device="cpu", checkpoint=partial,
                       progress=StopAfterFirstBatch())
        except KeyboardInterrupt:
            shutil.copy(partial, out / "pool.interrupted.npz")
        partial.unlink()
    pool = synthesize(model, (1, 8, 8), config, mean=(0.3,), std=(0.4,), device="cpu", checkpoint=partial,
                      resume=resume)
    if distributed.is_main():
        save_pool(pool, pool_path)
    distributed.barrier()  # the pool file exists before any rank trains on it
    with np.load(partial) as z:
        batches = len(json.loads(str(z["records"])))
    return {"images": pool.images, "labels": pool.labels, "checkpoint_batches": batches,
            "ranks": pool.provenance.get("ranks", 1)}, pool_path


def dynadfq(pool_path: Path) -> dict:
    import qcompile
    from conftest import TinyBNNet

    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet().eval(), input_shape=(1, 1, 8, 8), method="dynadfq",
                          method_options={"bits": "2,3,4", "target_bitops": 3.0, "pool": str(pool_path)})
    result = cm.finetune(epochs=1, max_steps=2, lr=1e-3, optimizer="adam", kd_alpha=0.5, progress=False,
                         batch_size=8)
    return {"model": cm.graph_module.state_dict(), "steps": result.steps,
            "losses": [r["train_loss"] for r in result.history]}


def codec(out: Path, model_file: Path, photos: Path) -> dict:
    """Each rank's document (its held-out estimate comes from its own weights) and the files rank 0 wrote."""
    from qcompile.codec.train import CodecTrainConfig, train_codec

    config = CodecTrainConfig(model=f"{model_file}:build", lmbda=0.01, steps=3, batch_size=2, crop=32,
                              data=str(photos), holdout=1, device="cpu", checkpoint_every=1)
    document = train_codec(config, out / "codec", progress=False)
    return {"document": document, "written": json.loads((out / "codec" / "codec.json").read_text()),
            "model": torch.load(out / "codec" / "model.pt", weights_only=True)}


def main(out: Path, codec_model: Path, photos: Path) -> None:
    distributed.setup(timeout_s=60)
    results = {"world": distributed.world_size(), "metaquant": metaquant()}
    if distributed.world_size() == 1:  # stopped after step 2: the checkpoint the ranks resume from
        metaquant(out / "metaquant-checkpoint", max_steps=2)
    else:
        results["metaquant_resumed"] = metaquant(out / "metaquant-checkpoint", resume=True)
    results["synthesis"], pool_path = synthesis(out)
    results["dynadfq"] = dynadfq(pool_path)
    results["codec"] = codec(out, codec_model, photos)
    torch.save(results, out / f"rank{distributed.rank()}.pt")
    distributed.teardown()


if __name__ == "__main__":
    distributed.run_rank(lambda: main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
