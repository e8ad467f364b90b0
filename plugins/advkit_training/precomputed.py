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
                    with Moving(bar, attack, len(x)):
                        out[name].append((attack(x, y) - x).detach().float().cpu())
    finally:
        bar.close()
        model.train(was)
    return {name: torch.cat(parts) for name, parts in out.items()}


class Moving:
    """Advance ``bar`` by one unit over one call of ``attack`` on ``images`` images, moving within the call by
    the share of the attack's declared worst-case passes done (told by its pass counter); the rest at the end."""

    def __init__(self, bar, attack, images: int):
        self.bar, self.counter, self.moved = bar, getattr(attack, "counter", None), 0.0
        self.budget = images * sum(s.passes().total for s in getattr(attack, "stages", None) or [])

    def __enter__(self):
        if self.counter is not None and self.budget:
            self.start = self.counter.count.total
            self.counter.listeners.append(self.on_pass)
        return self

    def on_pass(self, counter) -> None:
        share = min(0.99, (counter.count.total - self.start) / self.budget)
        if share >= self.moved + 0.01:
            self.bar.update(share - self.moved)
            self.moved = share

    def __exit__(self, *exc) -> None:
        if self.counter is not None and self.on_pass in self.counter.listeners:
            self.counter.listeners.remove(self.on_pass)
        self.bar.update(1 - self.moved)
