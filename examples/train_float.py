"""Train a float model with qcompile's own loop and save its state dict — the starting point of QAT.

    python examples/train_float.py examples/mnist_cnn.py:build --data mnist:../shared/data/mnist --out cnn.pt
    qcompile compile examples/mnist_cnn.py:build --weights cnn.pt --input-shape 1,1,28,28 --data mnist:../shared/data/mnist ...
"""

from __future__ import annotations

import argparse

import torch

from qcompile.atomic import atomic_write
from qcompile.data import load_dataset
from qcompile.loading import load_model
from qcompile.train import TrainConfig, evaluate, finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="'path/file.py:factory' or 'package.module:attr'")
    parser.add_argument("--data", default="digits", help="digits | mnist:DIR | folder:DIR | npz:FILE")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="where to write the state dict (.pt)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = load_model(args.model)
    data = load_dataset(args.data)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, optimizer="adam", seed=args.seed, mean=data.mean, std=data.std)
    finetune(model, data.train, data.test, config)
    acc = evaluate(model, data.test, mean=data.mean, std=data.std)["acc"]
    atomic_write(args.out, lambda f: torch.save(model.cpu().state_dict(), f))
    print(f"float test accuracy {acc:.2%}; weights in {args.out}")


if __name__ == "__main__":
    main()
