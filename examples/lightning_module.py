"""Recipe: PyTorch Lightning with an ssgd optimizer -- return it from ``configure_optimizers``.

The hook is :func:`ssgd_configure_optimizers` (what ``configure_optimizers`` returns: optimizer and
an lr scheduler stepped every step). Lightning's automatic optimization, precision plugins and
gradient accumulation call ``opt.step()`` as for any torch optimizer. ``lightning`` is not an ssgd
dependency: ``pip install lightning``.

    python examples/lightning_module.py
"""

import torch
from torch import nn
from torch.nn import functional as F

import ssgd


def ssgd_configure_optimizers(params, lr: float, total_steps: int, momentum: float = 0.9) -> dict:
    """The hook: the dict ``LightningModule.configure_optimizers`` returns."""
    opt = ssgd.SSGD(params, lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(epochs=3, batch_size=32, lr=0.05, seed=0):
    import lightning as L

    from plain_loop import toy_data

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
            self.losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            return ssgd_configure_optimizers(self.parameters(), lr, self.trainer.estimated_stepping_batches)

    L.seed_everything(seed, verbose=False)
    loader = torch.utils.data.DataLoader(toy_data(seed=seed), batch_size=batch_size, shuffle=True)
    module = Classifier()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    return trainer, module


if __name__ == "__main__":
    trainer, module = main()
    print(f"{type(trainer.optimizers[0]).__name__}: loss {module.losses[0]:.3f} -> {module.losses[-1]:.3f}")
