"""Mixed-batch training's precomputed examples (``mixed:precompute=true``): every attack source's example of
every training image, made once against the weights training starts from. Our own code: the loop over the
dataset; the examples come from the registered attacks through advkit's verified attack path."""

from __future__ import annotations

BATCH = 256


def precompute(model, data, ctx, attacks: dict) -> dict:
    """``{source: (N, C, H, W) float32 perturbations}`` of ``data`` in dataset order (on the CPU)."""
    import torch

    from advkit.plugin import frozen, progress

    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False, num_workers=0)
    out: dict = {name: [] for name in attacks}
    ctx.report(f"mixed: precomputing the {', '.join(attacks)} example of each of {len(data)} training images "
               f"against the starting weights ({len(attacks)} attack run(s) over the training set)")
    was = model.training
    model.eval()
    bar = progress(len(loader) * len(attacks), "mixed: precomputing examples", quiet=ctx.quiet, unit="batch")
    try:
        with frozen(model):
            for x, y in loader:
                x, y = x.to(ctx.device, torch.float32), torch.as_tensor(y).to(ctx.device, torch.long)
                for name, attack in attacks.items():
                    out[name].append((attack(x, y) - x).detach().float().cpu())
                    bar.update(1)
    finally:
        bar.close()
        model.train(was)
    return {name: torch.cat(parts) for name, parts in out.items()}
