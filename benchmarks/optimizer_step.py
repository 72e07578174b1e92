"""Optimizer-step benchmark: ssgd.SSGD vs torch.optim.SGD(foreach=True), ratios printed.

Same code as ``ssgd bench step`` (see ``ssgd.experiments.bench_step``)::

    python benchmarks/optimizer_step.py            # resnet18 (11.7M) and gpt2 (124M) shapes, CPU
    python benchmarks/optimizer_step.py --quick    # resnet18 only, a few steps
    python benchmarks/optimizer_step.py --device cuda
    python benchmarks/optimizer_step.py --sizes 11.7M,124M,1B --models resnet18 --batch 256 --device cuda

Besides the isolated step it times the whole training step (forward+backward+step) of
``--models`` and counts host syncs and ops per step (see ``ssgd.experiments.bench_step``).
"""

import typer

from ssgd.commands.bench import step_cmd

if __name__ == "__main__":
    typer.run(step_cmd)
