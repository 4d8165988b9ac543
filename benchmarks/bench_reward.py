r"""Throughput and latency of the math reward (onerl.reward) against math-verify called directly.

The benchmark builds its own MATH-style gold set procedurally (integers, fractions, decimals, radicals,
multiples of pi, intervals, tuples, unordered lists, polynomials, equations, complex numbers, matrices,
bases, degrees, percentages, text and multiple-choice answers, and a few expressions with functions or
relations that only the symbolic checker can settle -- about 0.5% of golds by default, close to their
share among MATH500 golds; ``--expression-weight`` raises it) and for every gold writes a response of a
few hundred characters ending in a boxed answer that is either the gold as written, an equivalent form
(``\frac{64}{5}`` for ``12.8``, reordered terms, ``x = ...``, a unit, another bracket spelling...) or a
wrong answer (off by one, an unreduced fraction, a flipped interval end, a rounded decimal, an
unevaluated expression...); a few responses have no box or are truncated inside one.  Every
(response, gold) pair is distinct, so neither the cache nor in-batch de-duplication helps the headline.

Measured (the reward with ``--workers`` symbolic worker processes):

* headline: ``Verifier.score_batch`` over all pairs, cache disabled -> verdicts per second;
* per-item latency: ``Verifier.score`` one pair at a time on other, fresh pairs, cache disabled -> p50 /
  p99 / max;
* cached: the same batch again with a warm cache;
* baseline: ``math_verify.parse`` + ``math_verify.verify`` with default settings on a sample, in this
  process, and (informative) the same sample split over ``--workers`` processes.

Prints a table, then one JSON line.  Use ``--n`` to shrink the run.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import Counter, defaultdict
from fractions import Fraction

FILLER = [
    "First, let us restate the problem in terms of the quantities we know.",
    "We can simplify the expression by combining like terms: $3x + 2x = 5x$.",
    "Substituting $n = {a}$ into the equation gives ${a}^2 - {b} = {c}$.",
    "Note that the discriminant is $b^2 - 4ac = {c}$, which is positive.",
    "Checking the edge case separately, we see that it does not satisfy the constraint.",
    "By the Pythagorean theorem, $a^2 + b^2 = c^2$, so the hypotenuse is $\\sqrt{{{b}}}$.",
    "Multiplying both sides by ${a}$ we obtain a linear equation in one variable.",
    "Let me double-check this computation: ${a} \\times {b} = {p}$, which matches.",
    "The sum of the roots is $-\\frac{{b}}{{a}}$ by Vieta's formulas.",
    "Since the function is increasing on this interval, the minimum occurs at the left endpoint.",
]
ENDINGS = [
    "Therefore, the final answer is $\\boxed{{{ans}}}$.",
    "So the answer is \\boxed{{{ans}}}.",
    "Thus we conclude that the value is $\\boxed{{{ans}}}$",
    "The final answer is $\\boxed{{{ans}}}$. I hope it is correct.",
]


def _frac(f: Fraction) -> str:
    if f.denominator == 1:
        return str(f.numerator)
    sign = "-" if f < 0 else ""
    return f"{sign}\\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def make_item(rng: random.Random, expression_weight: float = 0.5):
    """One (category, gold, answer, label) with label 'same' / 'equivalent' / 'wrong'."""
    cat = rng.choices(
        ["integer", "fraction", "decimal", "sqrt", "pi", "interval", "tuple", "list", "polynomial", "equation",
         "complex", "matrix", "base", "degrees", "percent", "text", "choice", "expression"],
        weights=[34, 12, 5, 7, 4, 4, 5, 4, 6, 2, 2, 2, 2, 3, 2, 3, 3, expression_weight])[0]
    label = rng.choices(["same", "equivalent", "wrong"], weights=[45, 20, 35])[0]
    r = rng.randint
    a, b, c = r(2, 99), r(2, 99), r(1, 999)
    if cat == "integer":
        n = r(-50, 99999)
        gold = str(n)
        eq = [f"{n:,}", f"x = {n}", f"{n} \\text{{ ways}}", f"{n}.0"]
        wrong = [str(n + rng.choice([-2, -1, 1, 10])), f"{n} + 1", f"{n}\\cdot 2", str(n * 100)]
    elif cat == "fraction":
        f = Fraction(a, b) if a % b else Fraction(a, b + 1)
        f = f if f.denominator > 1 else Fraction(a, a + 1)
        gold = _frac(f)
        eq = [f"{f.numerator}/{f.denominator}", gold.replace("\\frac", "\\dfrac"),
              f"\\tfrac{{{f.numerator}}}{{{f.denominator}}}"]
        rounded = f"{float(f):.3f}" if Fraction(f"{float(f):.3f}") != f else f"{float(f) + 0.001:.3f}"
        wrong = [f"\\frac{{{2 * f.numerator}}}{{{2 * f.denominator}}}", rounded, _frac(f + 1)]
    elif cat == "decimal":
        v = Fraction(r(1, 9999), rng.choice([10, 100, 1000]))
        v = v if v.denominator > 1 else v + Fraction(1, 10)
        gold = f"{float(v):g}"
        eq = [gold + "0", _frac(v), f"{float(v):g}\\text{{ cm}}"]
        wrong = [f"{float(v) + 0.1:g}", f"{float(v) * 10:g}", str(round(float(v)) + 1)]
    elif cat == "sqrt":
        k, m = r(2, 12), rng.choice([2, 3, 5, 6, 7, 10, 11, 13])
        gold = f"{k}\\sqrt{{{m}}}" if rng.random() < 0.6 else f"\\frac{{{k}\\sqrt{{{m}}}}}{{{k + 1}}}"
        eq = [f"\\sqrt{{{k * k * m}}}" if "frac" not in gold else f"\\frac{{{k}}}{{{k + 1}}}\\sqrt{{{m}}}",
              gold.replace("\\sqrt{", "\\sqrt {")]
        wrong = [gold.replace(f"{{{m}}}", f"{{{m + 1}}}"), f"{k * math.sqrt(m):.4f}", f"{k}\\sqrt{{{m}}}+1"]
    elif cat == "pi":
        k = r(2, 60)
        gold = f"{k}\\pi" if rng.random() < 0.6 else f"\\frac{{{k}\\pi}}{{{k + 1}}}"
        eq = [f"\\pi \\cdot {k}" if "frac" not in gold else f"\\frac{{{k}}}{{{k + 1}}}\\pi", gold + " \\text{ units}"]
        wrong = [gold.replace(str(k), str(k + 1), 1), f"{k * math.pi:.3f}", f"{k}"]
    elif cat == "interval":
        lo, hi = sorted(rng.sample(range(-20, 30), 2))
        o, cl = rng.choice("(["), rng.choice(")]")
        flip = {"(": "[", "[": "(", ")": "]", "]": ")"}
        if rng.random() < 0.7:
            gold = f"{o}{lo},{hi}{cl}"
            eq = [f"\\left{o} {lo}, {hi} \\right{cl}", gold.replace(",", ", ")]
            wrong = [flip[o] + gold[1:], f"{o}{lo},{hi + 1}{cl}", f"{o}{lo - 1},{hi}{cl}"]
        else:
            gold = f"(-\\infty,{lo})\\cup({hi},\\infty)"
            eq = [gold.replace("(", "\\left(").replace(")", "\\right)"), f"({hi},\\infty)\\cup(-\\infty,{lo})"]
            wrong = [f"(-\\infty,{lo}]\\cup[{hi},\\infty)", f"(-\\infty,{lo})\\cup({hi + 1},\\infty)", f"({lo},{hi})"]
    elif cat == "tuple":
        xs = [r(-20, 20) for _ in range(rng.choice([2, 2, 3]))]
        gold = "(" + ",".join(map(str, xs)) + ")"
        eq = ["\\left(" + ", ".join(map(str, xs)) + "\\right)", "(" + ", ".join(map(str, xs)) + ")"]
        wrong = ["(" + ",".join(map(str, xs[::-1] if xs[0] != xs[-1] else [x + 1 for x in xs])) + ")",
                 "(" + ",".join(map(str, xs[:-1])) + ")", "[" + ",".join(map(str, xs)) + "]"]
    elif cat == "list":
        xs = sorted(set(r(-20, 40) for _ in range(rng.choice([2, 3, 4]))))
        xs = xs if len(xs) > 1 else [xs[0], xs[0] + 3]
        gold = ", ".join(map(str, xs))
        eq = [", ".join(map(str, xs[::-1])), "\\{" + ",".join(map(str, xs)) + "\\}",
              " \\text{ and } ".join(map(str, xs))]
        wrong = [", ".join(map(str, xs[:-1])), ", ".join(map(str, xs + [99])), " or ".join(map(str, xs[:1]))]
    elif cat == "polynomial":
        p, q, s = r(1, 9), r(-9, 9) or 1, r(-20, 20) or 2
        v = rng.choice("xtnk")
        gold = f"{p}{v}^2{q:+d}{v}{s:+d}".replace(f"1{v}^2", f"{v}^2") if p == 1 else f"{p}{v}^2{q:+d}{v}{s:+d}"
        eq = [f"{q}{v}{s:+d}+{p}{v}^{{2}}", f"{s}{q:+d}{v}+{p}{v}^2", f"{v}({p}{v}{q:+d}){s:+d}"]
        wrong = [f"{p}{v}^2{q + 1:+d}{v}{s:+d}", f"{p}{v}^2{q:+d}{v}{s - 1:+d}",
                 f"{p}{v.upper()}^2{q:+d}{v.upper()}{s:+d}"]
    elif cat == "equation":
        m, k = r(-9, 9) or 3, r(-20, 20)
        gold = f"y = {m}x {k:+d}"
        eq = [f"{m}x{k:+d}", f"y={k}{m:+d}x", f"y = {m}x {k:+d}"]
        wrong = [f"y = {m + 1}x {k:+d}", f"y = {m}x {k + 1:+d}", f"x = {m}y {k:+d}"]
    elif cat == "complex":
        x, y = r(-20, 20), r(1, 20)
        gold = f"{x}+{y}i"
        eq = [f"{y}i{x:+d}", f"{x} + {y}i", f"{x}+{y}\\,i"]
        wrong = [f"{x}-{y}i", f"{x + 1}+{y}i", f"{y + 1}{x:+d}i"]
    elif cat == "matrix":
        xs = [r(-9, 9) for _ in range(rng.choice([2, 3, 4]))]
        rows = "\\\\".join(map(str, xs)) if len(xs) != 4 else f"{xs[0]}&{xs[1]}\\\\{xs[2]}&{xs[3]}"
        gold = f"\\begin{{pmatrix}}{rows}\\end{{pmatrix}}"
        eq = [gold.replace("pmatrix", "bmatrix"), gold.replace("\\\\", " \\\\ ")]
        wrong = [gold.replace(str(xs[0]), str(xs[0] + 1), 1), f"\\begin{{pmatrix}}{xs[0]}\\end{{pmatrix}}"]
    elif cat == "base":
        base = rng.choice([2, 5, 6, 8, 9])
        n = r(base, 3000)
        digits = ""
        while n:
            digits, n = str(n % base) + digits, n // base
        gold = f"{digits}_{base}" if rng.random() < 0.5 else f"{digits}_{{{base}}}"
        eq = [f"{digits}_{{{base}}}", digits]
        wrong = [f"{int(digits, base)}", f"{digits}1_{{{base}}}"]
    elif cat == "degrees":
        d = r(1, 359)
        gold = f"{d}^\\circ"
        eq = [str(d), f"{d}^{{\\circ}}", f"{d} \\text{{ degrees}}"]
        wrong = [str(d + 1), f"\\frac{{{d}\\pi}}{{180}}", str(180 - d) if d != 90 else "45"]
    elif cat == "percent":
        pc = r(1, 99)
        gold = f"{pc}\\%"
        eq = [str(pc), f"{pc}%"]
        wrong = [f"{pc / 100:g}", f"{pc + 1}\\%"]
    elif cat == "text":
        word = rng.choice(["Evelyn", "Navin", "even", "odd", "ellipse", "parabola", "east", "Tuesday"])
        gold = f"\\text{{{word}}}"
        eq = [word, word.lower(), f"\\textbf{{{word}}}"]
        wrong = [rng.choice(["Alice", "circle", "north", "Monday"]), f"\\text{{not {word}}}"]
    elif cat == "expression":  # functions and relations: these need the symbolic checker
        k, m = r(2, 9), r(2, 30)
        gold, eq, wrong = rng.choice([
            ("\\sin x\\cos x", ["\\frac{\\sin 2x}{2}", "\\cos x\\sin x"], ["\\sin 2x", "\\cos x"]),
            (f"e^{{{k}x}}", [f"\\exp({k}x)", f"e^{{x{k}}}"], [f"e^{{{k + 1}x}}", f"{k}e^{{x}}"]),
            (f"2\\ln {k}", [f"\\ln {k * k}", f"\\ln({k}^2)"], [f"\\ln {k * k + 1}", f"\\ln {k}"]),
            (f"x^2+y^2={m}", [f"y^2+x^2={m}", f"x^{{2}}+y^{{2}}={m}"], [f"x^2+y^2={m + 1}", f"x^2-y^2={m}"]),
            (f"k \\geq {m}", [f"{m} \\leq k", f"k\\ge {m}"], [f"k > {m}", f"k \\geq {m + 1}"]),
        ])
    else:  # choice
        letter = rng.choice("ABCDE")
        gold = f"\\text{{({letter})}}"
        eq = [letter, f"({letter})", f"\\textbf{{({letter})}}"]
        other = chr((ord(letter) - 64) % 5 + 65)
        wrong = [other, f"({other})"]
    answer = gold if label == "same" else rng.choice(eq if label == "equivalent" else wrong)
    return cat, gold, answer, label


def make_response(rng: random.Random, answer: str) -> tuple[str, bool]:
    """A response of a few hundred characters, and whether it ends with a complete boxed answer."""
    nums = {k: rng.randint(2, 300) for k in "abcp"}
    body = " ".join(rng.choice(FILLER).format(**nums) for _ in range(rng.randint(3, 6)))
    kind = rng.random()
    if kind < 0.03:
        return body + " Hence the result follows.", False          # no box
    if kind < 0.05:
        return body + " So the answer is $\\boxed{" + answer[: max(1, len(answer) // 2)], False  # truncated
    return body + " " + rng.choice(ENDINGS).format(ans=answer), True


def build(n: int, seed: int, expression_weight: float = 0.5):
    rng = random.Random(seed)
    seen, items = set(), []
    while len(items) < n:
        cat, gold, answer, label = make_item(rng, expression_weight)
        response, boxed = make_response(rng, answer)
        if (response, gold) in seen:
            continue
        seen.add((response, gold))
        items.append((cat, gold, response, label != "wrong" and boxed))
    return items


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def _mathverify_one(pair):
    from math_verify import parse, verify
    response, gold = pair
    return bool(verify(parse("$" + gold + "$"), parse(response)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of (response, gold) pairs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=5.0, help="per-item symbolic deadline (s)")
    ap.add_argument("--latency-sample", type=int, default=2000)
    ap.add_argument("--mathverify-sample", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expression-weight", type=float, default=0.5,
                    help="weight of golds with functions/relations (0.5 ~ 0.5%% of golds, about their share "
                         "in MATH500; raise it to stress the symbolic path)")
    args = ap.parse_args()

    from onerl.reward import Verifier, count_reasons

    items = build(args.n, args.seed, args.expression_weight)
    responses = [it[2] for it in items]
    golds = [it[1] for it in items]
    # Latency is measured on other pairs, so that no worker has seen them (sympy and parser caches).
    fresh = build(args.latency_sample, args.seed + 1, args.expression_weight)

    with Verifier(workers=args.workers, deadline_s=args.deadline, cache_size=0) as v:
        v.start()                                    # start the worker processes (not timed)
        t0 = time.perf_counter()
        verdicts = v.score_batch(responses, golds)
        batch_s = time.perf_counter() - t0
        stats_batch = v.stats()
        lat = []
        for _, g, r, _ in fresh:
            t = time.perf_counter()
            v.score(r, g)
            lat.append(time.perf_counter() - t)
        stats = v.stats()
    with Verifier(workers=args.workers, deadline_s=args.deadline) as cached:
        cached.start().score_batch(responses, golds)
        t0 = time.perf_counter()
        cached.score_batch(responses, golds)
        cached_s = time.perf_counter() - t0

    m = min(args.mathverify_sample, len(items))
    sample = list(zip(responses[:m], golds[:m]))
    t0 = time.perf_counter()
    mv = [_mathverify_one(p) for p in sample]
    mv_s = time.perf_counter() - t0
    import multiprocessing as mp
    with mp.get_context("fork").Pool(args.workers) as p:
        t0 = time.perf_counter()
        p.map(_mathverify_one, sample, chunksize=16)
        mv_par_s = time.perf_counter() - t0

    # Agreement with the benchmark's own labels (correct for 'same'/'equivalent' unless the response has
    # no complete box) and with math-verify, per category.
    per_cat = defaultdict(Counter)
    for (cat, gold, response, expected), verdict in zip(items, verdicts):
        per_cat[cat]["n"] += 1
        per_cat[cat]["ours_ok"] += verdict.correct == expected
    for i, ok in enumerate(mv):
        cat = items[i][0]
        per_cat[cat]["mv_n"] += 1
        per_cat[cat]["agree"] += ok == verdicts[i].correct
        per_cat[cat]["mv_ok"] += ok == items[i][3]

    rate = len(items) / batch_s
    mv_rate = m / mv_s
    print(f"{'category':12} {'n':>6} {'ours vs label':>14} {'math-verify vs label':>21} {'agree':>7}")
    for cat in sorted(per_cat):
        c = per_cat[cat]
        mvn = max(1, c["mv_n"])
        print(f"{cat:12} {c['n']:6d} {c['ours_ok'] / c['n']:14.3f} {c['mv_ok'] / mvn:21.3f} {c['agree'] / mvn:7.3f}")
    print()
    print(f"pairs {len(items)} (all distinct), workers {args.workers}, deadline {args.deadline}s, cache off")
    print(f"reasons           {count_reasons(verdicts)}")
    print(f"decided by        fast {stats_batch['fast']}  symbolic {stats_batch['symbolic']}  "
          f"guarded {stats_batch['guarded']}")
    print(f"headline          {rate:10.0f} verdicts/s  ({batch_s:.2f} s)")
    print(f"latency (n={len(lat)})  p50 {statistics.median(lat) * 1e3:.3f} ms  p99 {_pct(lat, 0.99) * 1e3:.3f} ms  "
          f"max {max(lat) * 1e3:.1f} ms")
    print(f"cached            {len(items) / cached_s:10.0f} verdicts/s")
    print(f"math-verify       {mv_rate:10.0f} verdicts/s in-process ({m} pairs), "
          f"{m / mv_par_s:.0f} verdicts/s over {args.workers} processes")
    print(f"timeouts {stats['timeouts']}  respawns {stats['respawns']}  max symbolic item {stats['max_item_s']:.3f} s")
    print(json.dumps({
        "n": len(items), "workers": args.workers, "deadline_s": args.deadline,
        "expression_weight": args.expression_weight,
        "verdicts_per_s": round(rate, 1), "p50_ms": round(statistics.median(lat) * 1e3, 4),
        "p99_ms": round(_pct(lat, 0.99) * 1e3, 4), "max_ms": round(max(lat) * 1e3, 2),
        "cached_verdicts_per_s": round(len(items) / cached_s, 1),
        "mathverify_verdicts_per_s": round(mv_rate, 1),
        "mathverify_parallel_verdicts_per_s": round(m / mv_par_s, 1),
        "speedup_vs_mathverify": round(rate / mv_rate, 2),
        "symbolic_items": stats_batch["symbolic"], "timeouts": stats["timeouts"],
        "max_item_s": round(stats["max_item_s"], 4),
        "label_accuracy": round(sum(c["ours_ok"] for c in per_cat.values()) / len(items), 4),
        "mathverify_label_accuracy": round(sum(c["mv_ok"] for c in per_cat.values()) / m, 4),
    }))


if __name__ == "__main__":
    main()
