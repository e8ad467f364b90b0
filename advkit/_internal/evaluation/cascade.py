"""The attacks of a run, in order (AutoAttack's cascade or each alone), and the eps sweep.

Points are judged by a score: the share of the judge's draws that classify them
correctly (:class:`advkit._internal.stochastic.Judge`; 0 or 1 for a deterministic
model, so the scores are the usual counts). A point's robust score is the lowest
of its clean score and its score under every attack (the unperturbed point is in
the ball too); the cascade attacks a point while that score is above 0, so its
worst case equals the independent run's. Clean and robust accuracy are the mean
scores.
"""

from __future__ import annotations

from advkit._internal.evaluation.inputs import say
from advkit._internal.evaluation.planning import make_plan
from advkit._internal.evaluation.report import mean_interval
from advkit._internal.evaluation.runner import swapped_threat
from advkit._internal.evaluation.session import AttackResult, Session, result_of


def clean_pass(s: Session) -> list[dict]:
    """Judge the clean points; set ``s.correct`` (score above 0) and ``s.clean``; the per-sample records."""
    y = s.inputs.y
    judged = s.runner.predict("clean", list(range(s.n)))
    s.clean = {i: score for i, (_, score) in judged.items()}
    s.correct = [i for i in range(s.n) if s.clean[i] > 0]
    samples = []
    for i in range(s.n):
        pred, score = judged[i]
        rec = {"index": i, "label": int(y[i]), "clean_pred": pred, "clean_correct": score > 0,
               "broken_by": "", "norm": None}
        if s.draws > 1:
            rec |= {"clean_score": score, "robust_score": score}
        samples.append(rec)
    return samples


def cascade(s: Session, attacks, independent: bool) -> tuple[list[AttackResult], dict[int, float], list[dict]]:
    """Run the attacks in order; return their results, the robust score of every point and the per-sample records."""
    samples = clean_pass(s)
    robust = {i: s.clean[i] for i in range(s.n)}  # the lowest score so far
    results = []
    s.plan = make_plan(s, attacks, independent)
    mode = "alone" if independent else "cascade"
    for k, atk in enumerate(attacks):
        res = result_of(atk)
        points = s.correct if independent else [i for i in s.correct if robust[i] > 0]
        if s.plan is not None:
            s.plan.attacks[k].points, s.plan.current = len(points), k
        ran, res.seconds, spent = s.runner.attack(
            f"{'ind' if independent else 'cascade'}:{k}:{atk.name}", atk, points, key=f"{k}:{atk.name}",
            label=f"{atk.name} ({mode} {k + 1}/{len(attacks)})", plan=s.plan, k=k)
        res.passes = spent.as_dict()
        res.passes_per_point = {kind: round(res.passes[kind] / len(points), 1) if points else 0
                                for kind in ("forward", "backward")}
        if independent:
            res.independent_accuracy = sum(min(s.clean[i], ran[i]["score"]) for i in s.correct) / s.n
        res.attempted = len(points)
        res.broken = sum(1 for i in points if ran[i]["broken"] and robust[i] > 0)
        res.dropped = sum(1 for r in ran.values() if r["dropped"])
        for i in points:
            score = ran[i]["score"]
            if score < robust[i]:  # this attack lowered the point's score: it is the worst case so far
                robust[i] = score
                samples[i]["broken_by"], samples[i]["norm"] = atk.name, ran[i]["norm"]
                if s.draws > 1:
                    samples[i]["robust_score"] = score
        res.accuracy = sum(robust.values()) / s.n
        if s.draws > 1:  # the points' scores after this attack; gone once the next one lowers them
            res.score_interval = mean_interval(list(robust.values()))
        if atk.stats.get("mode_restored"):
            say(s.inputs.notes, f"attack {atk.name!r} put the model in training mode (on "
                                f"{atk.stats['mode_restored']} batch(es)); advkit switched it back to eval mode "
                                f"before judging its output")
        results.append(res)
    return results, robust, samples


def sweep(s: Session, attacks: list[str], budgets: list[tuple[float, str]]) -> list[dict]:
    """Independent accuracy of every attack, and the worst case, at each budget (mean scores)."""
    rows = []
    for eps, label in budgets:
        t = s.inputs.threat.with_eps(eps)
        worst = {i: s.clean[i] for i in s.correct}
        row = {"eps": t.eps, "eps_label": label, "attacks": {}}
        for k, name in enumerate(attacks):
            atk = s.build(name, t)
            with swapped_threat(s.runner, t):
                res, _, _ = s.runner.attack(f"sweep:{t.eps:.8g}:{k}:{atk.name}", atk, s.correct, key=f"{k}:{atk.name}",
                                            label=f"{atk.name} at eps {label} ({len(rows) + 1}/{len(budgets)})")
            row["attacks"][atk.name] = sum(min(s.clean[i], res[i]["score"]) for i in s.correct) / s.n
            for i in s.correct:
                worst[i] = min(worst[i], res[i]["score"])
        row["worst_case"] = sum(worst.values()) / s.n
        rows.append(row)
    return rows
