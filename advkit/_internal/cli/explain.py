"""``advkit explain``: load the models and the data, run the explainer, write the outputs."""

from __future__ import annotations

import os
from pathlib import Path

import click

from advkit._internal.errors import UserError


def run_explain(opts, *, method, model, weights, compare, dataset, data_dir, n, opts_list, out):
    """Explain ``model`` (and ``compare``) on the first ``n`` images of ``dataset``; write npz, png and json.
    ``out`` is created and held before any work, so an unwritable one is one line, not a lost run."""
    from advkit._internal.files import lock_output

    with lock_output(out):
        _explain(opts, method=method, model=model, weights=weights, compare=compare, dataset=dataset,
                 data_dir=data_dir, n=n, opts_list=opts_list, out=out)


def _explain(opts, *, method, model, weights, compare, dataset, data_dir, n, opts_list, out):
    import torch

    from advkit._internal.evaluation.resolve import model_and_data
    from advkit._internal.explainer import ExplainContext, create_explainer
    from advkit._internal.explanation.engine import explain, figure_names, write_outputs
    from advkit._internal.grammar import merged, parse_assignments, parse_spec
    from advkit._internal.models import load_model
    from advkit._internal.provenance import versions

    name, spec_params = parse_spec(method)
    params = merged({name: spec_params}, {name: parse_assignments(opts_list)})[name.lower()]
    create_explainer(name, **params)  # fail early on a bad name or parameter
    if n is not None and n <= 0:
        raise UserError(f"-n must be positive, got {n}")
    first, data, label = model_and_data(model, dataset, weights=weights, split="test", data_dir=data_dir, norm=None,
                                        device=opts.device)
    data = data.first(n)
    x, y = data.tensors()
    x, y = x.to(opts.device), y.to(opts.device)
    info = data.info
    ctx = ExplainContext(dataset=info.name, data_dir=data_dir, device=opts.device, quiet=opts.quiet, seed=opts.seed)
    results = []
    for spec in [label] + ([compare] if compare else []):
        m = first if spec is label else load_model(spec, dataset=info, device=opts.device,
                                                   context={"dataset": info.name})
        results.append((spec, explain(m, x, y, name, ctx=ctx, **params)))
    if info.classes:
        for _, e in results:  # caption the explained images with their labels
            if "input_captions" not in e.meta and e.inputs.shape == x.shape and torch.equal(e.inputs, x):
                e.meta["input_captions"] = [info.classes[int(c)] if int(c) < len(info.classes) else str(int(c)) for c in y]
    summary = {"method": name, "params": params, "dataset": info.name, "n": int(x.shape[0]), "seed": opts.seed,
               "versions": versions()}
    write_outputs(results, Path(out), summary)
    figures = figure_names(int(x.shape[0]))
    shown = figures[0] if len(figures) == 1 else f"{figures[0]} ... {figures[-1]} ({len(figures)} pages of 10 images)"
    click.echo(f"{name}: wrote {os.path.join(out, 'explanation.npz')}, {shown} and summary.json")
    for label, e in results:
        if e.scores:
            click.echo(f"  {label}: " + ", ".join(_score(k, v) for k, v in e.scores.items()))


def _score(key: str, values) -> str:
    """``fid 41.2`` for one number, ``gap 0.003 (mean of 16)`` for one per image."""
    import torch

    v = torch.as_tensor(values).double().flatten()
    if v.numel() == 1:
        return f"{key} {float(v):.4g}"
    return f"{key} {float(v.mean()):.4g} (mean of {v.numel()})"
