"""Attack ``noise``: the best of ``draws`` uniform random perturbations in the eps-ball (a sanity baseline).

A factory ``factory(model, threat, **params)`` returns ``attack(x, y) -> x_adv``.
advkit calls it through its one attack call path, which hands it a private copy of
the batch and verifies the result against the threat model.
"""

from __future__ import annotations

from advkit.plugin import dist_version


def noise_attack(model, threat, draws: int = 8):
    """Best of DRAWS uniform random perturbations in the eps-ball (a sanity baseline)."""
    import torch

    def attack(x, y):
        best = x.clone()
        lo, hi = threat.bounds
        for _ in range(draws):
            if threat.norm == "Linf":
                delta = (torch.rand_like(x) * 2 - 1) * threat.eps
            else:
                delta = torch.randn_like(x)
                norms = delta.flatten(1).norm(p=2 if threat.norm == "L2" else 1, dim=1).clamp_min(1e-12)
                delta = delta * (threat.eps / norms).view(-1, *([1] * (x.dim() - 1)))
            cand = (x + delta).clamp(lo, hi)
            with torch.no_grad():
                wrong = model(cand).argmax(1) != y
            best[wrong] = cand[wrong]
        return best

    attack.implementation = f"advkit-plugin-example {dist_version('advkit-plugin-example')} noise"
    return attack
