"""The table and prose of ``bench_fast.py``'s section of docs/benchmarks.md, from its results.

Each result is one model's comparison (``bench_fast.compare``): fast against standard
AutoAttack on the same points, with the three goals checked.
"""

from __future__ import annotations

HEADING = "## `fast` against standard AutoAttack"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(results: list[dict]) -> str:
    head = ("| model | eps | points | clean | AA robust | fast robust | only AA breaks | only fast breaks | coverage "
            "| AA passes (F+B) | fast passes (F+B) | ratio | AA s | fast s | goals: acc / cov / passes |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        g = r["goals"]
        lines.append(
            f"| {r['label']} | {r['eps']:.4g} | {r['n']} | {100 * r['clean']:.1f} | {100 * r['aa']['robust']:.1f} "
            f"| {100 * r['fast']['robust']:.1f} | {len(r['only_aa'])} | {len(r['only_fast'])} "
            f"| {100 * r['coverage']:.1f} % ({r['aa']['broken'] - len(r['only_aa'])}/{r['aa']['broken']}) "
            f"| {r['aa']['passes']:,} | {r['fast']['passes']:,} | **{r['ratio']:.3f}** "
            f"| {r['aa']['seconds']:.0f} | {r['fast']['seconds']:.0f} "
            f"| {yes(g['accuracy'])} / {yes(g['coverage'])} / {yes(g['passes'])} |")
    return "\n".join(lines)


def missed(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        g = r["goals"]
        if not g["accuracy"]:
            out.append(f"{r['model']}: fast's robust accuracy {100 * r['fast']['robust']:.1f} % > AutoAttack's "
                       f"{100 * r['aa']['robust']:.1f} % + 0.2")
        if not g["coverage"]:
            out.append(f"{r['model']}: coverage {100 * r['coverage']:.1f} % < 99 % (points only AA breaks: "
                       f"{r['only_aa']})")
        if not g["passes"]:
            out.append(f"{r['model']}: passes ratio {r['ratio']:.3f} > 0.15")
    return out


def reading(results: list[dict]) -> str:
    """Which goals held on how many models, what was missed, the range of the passes ratio (facts only)."""
    n = len(results)
    held = {k: [r["model"] for r in results if r["goals"][k]] for k in ("accuracy", "coverage", "passes")}
    all3 = [r["model"] for r in results if all(r["goals"].values())]
    ratios = [r["ratio"] for r in results]
    gap = [100 * (r["fast"]["robust"] - r["aa"]["robust"]) for r in results]
    text = (f"All three goals held on {len(all3)} of {n} models"
            + (f" ({', '.join(all3)})" if 0 < len(all3) < n else "") + ". "
            f"Accuracy goal: {len(held['accuracy'])}/{n}; fast's robust accuracy minus AutoAttack's ranged from "
            f"{min(gap):+.1f} to {max(gap):+.1f} points. Coverage goal: {len(held['coverage'])}/{n}; "
            f"{sum(len(r['only_aa']) for r in results)} points in all were broken by AutoAttack only and "
            f"{sum(len(r['only_fast']) for r in results)} by fast only. Passes goal: {len(held['passes'])}/{n}; "
            f"fast spent {min(ratios):.3f} to {max(ratios):.3f} of AutoAttack's passes.")
    misses = missed(results)
    return text + (" Missed: " + "; ".join(misses) + "." if misses else "")


def markdown(results: list[dict], meta: dict, reading: str) -> str:
    cmds = "\n".join(c for r in results for c in r["commands"])
    missing = [m for m in meta["models"] if m not in {r["model"] for r in results}]
    parts = [
        HEADING, "",
        "```bash",
        *[f"{c}   # beside it" if k else c for k, c in enumerate(meta["ran"])],
        meta["argv"] + ("   # the table below" if meta["ran"] else ""),
        "```", "",
        f"Measured {meta['date']} on {meta['machine']}; {meta['versions']}"
        + (f", advkit's code as committed at `{meta['pin'][:7]}` (`--pin`)" if meta["pin"] else "") + ". Per model, `advkit eval -a aa` (standard "
        "AutoAttack: APGD-CE, APGD-T, FAB-T, Square, pyautoattack) and `advkit eval -a fast` on the same first test "
        "points; passes are the model's forward + backward passes (per image) that advkit counted during each attack; "
        "coverage is |broken by both| / |broken by AutoAttack|; ratio is fast's passes / AutoAttack's. Goals: "
        "fast's robust accuracy ≤ AutoAttack's + 0.2 point, coverage ≥ 99 %, ratio ≤ 0.15.", "",
        table(results), "",
    ]
    if missing:
        parts += [f"Not evaluated yet: {', '.join(missing)}.", ""]
    parts += [
        "- **No public robust checkpoint** is in the table: this machine reaches no model hub and no download "
        "(only PyPI), and no RobustBench or Hugging Face checkpoint is cached locally, so none could be evaluated.",
        "- **CIFAR-sized** means the shape and the architecture, not the data: there is no CIFAR-10 offline, so the "
        "model is a CIFAR ResNet-18 at width 16 trained on `fmnist-mini` resized to 32×32 with the grey value copied "
        f"to the three RGB channels; it is evaluated at its training budget (Linf {meta['cifar_eps']}){meta['cifar_n_note']}.",
        "- **LWTA** was trained exactly as the results protocol's `lwta+pgd-at` row (stochastic winners); advkit "
        "can evaluate it deterministically only through the defense's `deterministic` parameter, which the "
        "checkpoint's sidecar carries, so the script evaluates a copy of the checkpoint (same weights) whose "
        "sidecar sets `lwta.deterministic=true` (argmax winner in every block, no Gumbel noise).",
        f"- Wall time of the whole benchmark (training and evaluations, this run): {meta['wall']}. Seconds are "
        "single-threaded on 2 shared cores and move with the machine's load; the passes do not.", "",
        "**Reading.** " + reading, "",
        "<details><summary>Commands</summary>", "", "```bash", cmds, "```", "", "</details>",
    ]
    return "\n".join(parts)
