"""Recipe: the Hugging Face Trainer with an ssgd optimizer.

Pass the optimizer (and its schedule) through ``Trainer(optimizers=(opt, sched))`` -- the hook is
:func:`ssgd_optimizers`. Everything else (TrainingArguments, datasets, callbacks) stays yours.
``transformers`` is not an ssgd dependency: ``pip install transformers accelerate``.

    python examples/hf_trainer.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd


def ssgd_optimizers(model: nn.Module, lr: float, total_steps: int, momentum: float = 0.9):
    """The hook: ``(optimizer, scheduler)`` for ``Trainer(optimizers=...)`` -- SSGD with a linear decay."""
    opt = ssgd.SSGD(model.parameters(), lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / max(1, total_steps)))
    return opt, sched


class TinyClassifier(nn.Module):
    """Stand-in for your model: the Trainer passes the batch's keys as arguments and reads ``loss``."""

    def __init__(self, d=16, classes=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x, labels=None):
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits} if labels is not None else {"logits": logits}


def main(max_steps=40, batch_size=32, lr=0.05, seed=0, output_dir="runs/hf-trainer"):
    from transformers import Trainer, TrainingArguments

    from plain_loop import toy_data

    torch.manual_seed(seed)
    x, y = toy_data(seed=seed).tensors
    train = [{"x": x[i], "labels": y[i]} for i in range(len(y))]
    model = TinyClassifier()
    args = TrainingArguments(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
                             use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no",
                             max_grad_norm=0.0,  # no clipping: the unit vector already bounds the step
                             logging_steps=max(1, max_steps // 4), seed=seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      optimizers=ssgd_optimizers(model, lr, max_steps))
    result = trainer.train()
    return trainer, result


if __name__ == "__main__":
    trainer, result = main()
    print(f"{type(trainer.optimizer).__name__}: final training loss {result.training_loss:.3f}")
