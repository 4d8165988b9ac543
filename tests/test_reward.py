r"""Grading table of onerl.reward: what a careful human grader would say, category by category.

Each case is (answer as the model boxed it, gold, expected reason).  The answer is embedded in a realistic
response; every case goes through the full pipeline (extraction, fast paths, worker pool).
"""
import ast
import dataclasses
import pathlib
import time

import pytest

from onerl.reward import (REASONS, ReasonCounter, Verdict, Verifier, close_default_verifiers, count_reasons,
                          extract_answer, format_reward, score, score_batch)

C, W, N, P = "correct", "wrong", "no_answer", "parse_error"


def respond(answer: str) -> str:
    return ("We set up the equation and solve it step by step. Substituting back, both sides agree, "
            f"so the result checks out.\n\nTherefore, the final answer is $\\boxed{{{answer}}}$.")


PAPER = [  # the 1-shot RLVR paper's pi_1 example and the recipe's spot checks of its training reward
    ("12.80", "12.8", C), (r"\frac{64}{5}", "12.8", C), ("12.7", "12.8", W), ("12.8", "12.8", C),
    ("4/3", r"\frac{4}{3}", C), (r"\dfrac{4}{3}", r"\frac{4}{3}", C), ("1.3333", r"\frac{4}{3}", W),
    (r"24 \text{ divisors}", "24", C),
    (r"50\%", "0.5", W),  # decided: a percent sign is a unit, values are never rescaled by 100
]
EVAL_GRADER_FLAWS = [  # the paper's eval grader accepts these; a careful grader does not
    ("1", "100", W), ("13536", "13535", W), ("[3,4]", "(3,4]", W), ("100", "1", W),
    ("x^{2}+1", "x^2+1", C), ("x^2+1", "x^{2}+1", C), (r"2^{10}", "2^{10}", C),  # the training reward's ^{ flaw
]
FRACTIONS = [
    (r"\frac43", r"\frac{4}{3}", C), (r"\frac{8}{6}", r"\frac{4}{3}", W), (r"-\frac{3}{8}", r"-\frac{3}{8}", C),
    (r"\frac{-3}{8}", r"-\frac{3}{8}", C), ("-0.375", r"-\frac{3}{8}", C), (r"\frac{3}{8}", r"-\frac{3}{8}", W),
    (r"1\frac{4}{5}", r"\frac{9}{5}", C), (r"\frac{9}{5}", r"1\frac{4}{5}", C), ("0.5", r"\frac12", C),
    (r"\tfrac{1}{2}", "0.5", C), (r"\frac{24}{2}", "12", W), (r"\frac{12}{1}", "12", W), ("9/5", "1.8", C),
]
NUMBERS = [
    ("0.0000672", ".0000672", C), ("0.0000671", "0.0000672", W), ("10,080", "10080", C),
    ("10080", r"10,\!080", C), ("11111111100", r"11,\! 111,\! 111,\! 100", C), ("12.0", "12", C),
    ("12.000001", "12", W), ("3.2101", "3.21", C), ("3.22", "3.21", W), (r"4.5\times 10^{33}", "4.5e33", C),
    ("4.6e33", "4.5e33", W), ("2^{10}-1", "1023", W), (r"3 \cdot 4", "12", W), ("1023", "1023", C),
    ("5", "-5", W), ("+5", "5", C), ("x = 12", "12", C), ("1,000,000", "1000000", C), ("1000000", "10^{6}", C),
]
LATEX_FORMS = [
    (r"\sqrt{2}", r"\sqrt2", C), (r"11\sqrt{2}", r"11\sqrt2", C), (r"\frac{1}{\sqrt{3}}", r"\frac{\sqrt{3}}{3}", C),
    ("0.57735", r"\frac{\sqrt{3}}{3}", W), (r"\pi \cdot 12", r"12\pi", C), ("37.699", r"12\pi", W),
    (r"\sqrt{20}", r"2\sqrt{5}", C), (r"2\sqrt{6}", r"2\sqrt{5}", W), ("3x+x^{3}-6", "x^3+3x-6", C),
    ("x^3+3x-7", "x^3+3x-6", W), ("3r^2", "3R^2", W), ("3R^{2}", "3R^2", C), ("(a+5)(b+2)", "ab+2a+5b+10", C),
    ("7i-2", "-2+7i", C), ("-2-7i", "-2+7i", W), (r"\cot x", r"\frac{\cos x}{\sin x}", C),
    (r"\sin x", r"\cot x", W), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", C),
    ("n(n+1)", "n^2+n", C), (r"\frac{x^2-1}{x-1}", "x+1", C), (r"\frac{\sin 2x}{2}", r"\sin x\cos x", C),
]
UNITS = [
    (r"864 \mbox{ inches}^2", "864", C), (r"90^\circ", "90", C), ("90", r"90^\circ", C),
    (r"\frac{\pi}{2}", r"90^\circ", W), (r"\$18.90", "18.90", C), ("18.9", r"\$18.90", C),
    (r"5.4 \text{ cents}", "5.4", C), ("24 divisors", "24", C), (r"15\text{ cm}^2", r"15\mbox{ cm}^2", C),
    (r"10\%", "10", C), ("10", r"10\%", C), ("0.1", r"10\%", W),
]
INTERVALS = [
    ("(3,4]", "(3,4]", C), (r"\left(3, 4\right]", "(3,4]", C), (r"(-\infty, 0]", r"(-\infty,0]", C),
    (r"(-\infty,0)", r"(-\infty,0]", W), (r"(3,\infty)\cup(-\infty,2)", r"(-\infty,2)\cup(3,\infty)", C),
    (r"(-\infty,2]\cup(3,\infty)", r"(-\infty,2)\cup(3,\infty)", W), (r"x \in [-2,7]", "[-2,7]", C),
    (r"[\frac{\pi^2}{8},\frac{5\pi^2}{4}]", r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]", C),
    ("(2,12)", "(2,12]", W),
]
SETS = [
    ("1,-2", "-2, 1", C), (r"\{1,-2\}", "1,-2", C), ("1", "1,-2", W), ("1,-2,3", "1,-2", W),
    (r"1+\sqrt{19}, 1-\sqrt{19}", r"1 \pm \sqrt{19}", C), (r"-2, 1+\sqrt{5}, 1-\sqrt{5}", r"\{1\pm\sqrt{5},-2\}", C),
    (r"1+\sqrt{5}, -2", r"\{1\pm\sqrt{5},-2\}", W), (r"x=2 \text{ or } x=3", "2, 3", C),
    (r"2 \text{ and } 3", "3,2", C),
    (r"\emptyset", r"\varnothing", C), (r"\{5\}", "5", C), ("3, 5, 7", "3,5,7", C), ("3, 5", "3,5,7", W),
]
TUPLES = [
    ("(8,-2)", "(8,-2)", C), ("(-2,8)", "(8,-2)", W), ("(8,-2,0)", "(8,-2)", W), ("[8,-2]", "(8,-2)", W),
    ("(1,-16,-4,43)", "(1,-16,-4,43)", C), (r"\left(\frac{3}{2}, -13\right)", r"(\frac{3}{2},-13)", C),
    ("(1.5,-13)", r"(\frac{3}{2},-13)", C), ("(1.5,-12)", r"(\frac{3}{2},-13)", W),
    ("(1,8,19),(2,7,13)", "(2,7,13),(1,8,19)", C),
]
MATRICES = [
    (r"\begin{pmatrix}-1&0\\0&-1\end{pmatrix}", r"\begin{pmatrix}-1&0\\0&-1\end{pmatrix}", C),
    (r"\begin{bmatrix} -1 & 0 \\ 0 & -1 \end{bmatrix}", r"\begin{pmatrix}-1&0\\0&-1\end{pmatrix}", C),
    (r"\begin{pmatrix}-1&0\\0&1\end{pmatrix}", r"\begin{pmatrix}-1&0\\0&-1\end{pmatrix}", W),
    (r"\begin{pmatrix}-\frac{1}{3}\\\frac{2}{3}\\\frac{5}{3}\end{pmatrix}",
     r"\begin{pmatrix}-1/3\\2/3\\5/3\end{pmatrix}", C),
    (r"\begin{pmatrix}1&2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", W),
]
EQUATIONS = [
    ("x=5", "5", C), ("5", "x=5", C), ("y=5", "x=5", W), ("y = 2x + 3", "2x+3", C), ("y=3+2x", "y=2x+3", C),
    ("5x-7y+11z+4=0", "5x-7y+11z+4=0", C), ("x^2+y^2=25", "y^2+x^2=25", C), ("x^2+y^2=26", "x^2+y^2=25", W),
    ("x^2+y^2-25", "x^2+y^2=25", W), (r"k \geq 2", r"2 \leq k", C), ("k>2", r"k\geq 2", W),
    ("f(x)=2x", "2x", C),
]
TEXT = [
    (r"\text{Evelyn}", r"\text{Evelyn}", C), ("Evelyn", r"\text{Evelyn}", C), ("evelyn", r"\text{Evelyn}", C),
    (r"\text{Navin}", r"\text{Evelyn}", W), (r"\text{even}", r"\text{even}", C), (r"\text{odd}", r"\text{even}", W),
    ("C", r"\text{(C)}", C), ("(C)", r"\text{(C)}", C), (r"\textbf{(C)}", r"\text{(C)}", C), ("(c)", r"\text{(C)}", C),
    ("(B)", r"\text{(C)}", W), (r"\text{(C)} 12", r"\text{(C)}", W),
]
BASES = [
    ("204_5", "204_5", C), ("204_{5}", "204_5", C), ("204", "204_5", C), ("54", "204_5", W),
    ("204_{6}", "204_5", W), ("4210_{5}", "4210_5", C), ("2516_8", "2516_{8}", C),
]
TABLE = {"paper": PAPER, "eval-grader flaws": EVAL_GRADER_FLAWS, "fractions": FRACTIONS, "numbers": NUMBERS,
         "latex forms": LATEX_FORMS, "units and percent": UNITS, "intervals": INTERVALS, "sets and lists": SETS,
         "tuples": TUPLES, "matrices": MATRICES, "equations": EQUATIONS, "text and choices": TEXT,
         "bases": BASES}
CASES = [(cat, *case) for cat, cases in TABLE.items() for case in cases]

RESPONSES = [  # whole responses: extraction rules (response, gold, mode, expected reason)
    (r"\boxed{2} and \boxed{3}", "2, 3", "train", C),
    (r"So $x = \boxed{2}$, $\boxed{3}$.", "3,2", "train", C),
    (r"\boxed{2} or \boxed{3}", "2", "train", W),
    (r"\boxed{2} \text{ or } \boxed{3}", "2, 3", "train", W),
    (r"First \boxed{5}. Then more work shows that was wrong, so finally \boxed{7}.", "7", "train", C),
    (r"First \boxed{5}. Then more work shows that was wrong, so finally \boxed{7}.", "5", "train", W),
    (r"\boxed{\boxed{5}}", "5", "train", C),
    (r"\boxed 5", "5", "train", C), (r"so $\boxed 5$.", "5", "train", C), (r"\fbox{5}", "5", "train", C),
    (r"\boxed{\{1,2\}}", "1,2", "train", C),
    ("no box here, the answer is 5", "5", "train", N), ("no box here, the answer is 5", "5", "eval", C),
    ("The final answer is $12.8$. I hope it is correct.", "12.8", "eval", C),
    ("The final answer is $12.8$. I hope it is correct.", "12.8", "train", N),
    ("Work.\nAnswer: 12.8", "12.8", "eval", C),
    ("The volume is 12.8 cubic units, i.e. V = 12.8", "12.8", "eval", N),  # never the last number
    ("V = 12.8", "12.8", "train", N),
    (r"\boxed{5", "5", "train", P), (r"the answer is \boxed{}", "5", "train", N),
    (r"<think>maybe \boxed{3}</think> so \boxed{5}", "5", "train", C),
    (r"<think>maybe \boxed{3}</think> so \boxed{5}", "3", "train", W),
    (r"<think>long reasoning that never ends \boxed{5}", "5", "train", N),
    ("<|im_start|>user\nWhat is 2+3? Put the final answer within \\boxed{5}.<|im_end|>\n"
     "<|im_start|>assistant\nIt is five.", "5", "train", N),  # the prompt's box never counts
    ("\\boxed{5\x00}", "5", "train", P), ("\x00" * 100 + r"\boxed{5}", "5", "train", C),
    (r"\boxed{2 \text{ or } 3}", "2", "train", W),
    (r"\boxed{5}", "", "train", W), ("no box", "", "train", N),  # an empty gold matches nothing
    (r"\boxed{\text{ }}", "5", "train", N),
]


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=1, deadline_s=10.0, cache_size=0, warm_up=False) as v:
        yield v


def test_case_table(verifier):
    responses = [respond(a) for _, a, _, _ in CASES]
    verdicts = verifier.score_batch(responses, [g for _, _, g, _ in CASES])
    failures = [f"[{cat}] {a!r} vs gold {g!r}: expected {want}, got {v.reason}"
                for (cat, a, g, want), v in zip(CASES, verdicts) if v.reason != want]
    assert not failures, "\n".join(failures)


def test_each_case_alone(verifier):
    """One call per case (no batching; the fixture has no cache): the same verdicts."""
    for cat, a, g, want in CASES:
        assert verifier.score(respond(a), g).reason == want, (cat, a, g)


@pytest.mark.parametrize("response,gold,mode,want", RESPONSES)
def test_extraction_rules(verifier, response, gold, mode, want):
    assert verifier.score(response, gold, mode).reason == want


def test_verdict_fields(verifier):
    v = verifier.score(respond(r"\frac{64}{5}"), "12.8")
    assert v == Verdict(correct=True, reward=1.0, reason="correct", answer=r"\frac{64}{5}")
    w = verifier.score(respond("12.7"), "12.8")
    assert (w.correct, w.reward, w.reason, w.answer) == (False, 0.0, "wrong", "12.7")
    n = verifier.score("no box", "12.8")
    assert (n.reward, n.reason, n.answer) == (0.0, "no_answer", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.reward = 0.0  # type: ignore[misc]


def test_cache_and_golds_broadcast():
    with Verifier(workers=1) as v:
        first = v.score_batch([respond("12.80")] * 3, "12.8")
        assert [x.reason for x in first] == [C] * 3
        assert v.stats()["cache_hits"] == 2
    with Verifier(workers=1, cache_size=0) as v:
        v.score_batch([respond("12.80")] * 3, "12.8")
        assert v.stats()["cache_hits"] == 0


def test_module_level_api():
    try:
        assert score(respond("12.80"), "12.8").correct
        assert [x.reason for x in score_batch([respond("1"), "none"], ["1", "1"], workers=1)] == [C, N]
    finally:
        close_default_verifiers()


def test_bad_input_types():
    with pytest.raises(TypeError, match="response"):
        score(5, "5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="gold"):
        score("5", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"responses\[1\]"):
        score_batch(["a", b"b"], ["1", "2"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"golds\[0\]"):
        score_batch(["a"], [1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="golds"):
        score_batch(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="mode"):
        score("a", "b", mode="test")
    with pytest.raises(TypeError, match="response"):
        format_reward(None)  # type: ignore[arg-type]


def test_format_reward():
    assert format_reward(respond("5")) == 1.0
    assert format_reward(r"\boxed{\text{anything}}") == 1.0
    assert format_reward("The answer is 5.") == 0.0
    assert format_reward(r"\boxed{5") == 0.0
    assert format_reward(r"\boxed{}") == 0.0
    assert format_reward(r"\boxed{2} or \boxed{3}") == 0.0


def test_reason_counters():
    verdicts = [Verdict.of(C, "1"), Verdict.of(W, "2"), Verdict.of(C, "1"), Verdict.of(N, None)]
    assert count_reasons(verdicts) == {"correct": 2, "wrong": 1, "no_answer": 1, "parse_error": 0, "timeout": 0}
    counter = ReasonCounter()
    counter.update(verdicts)
    counter.update([Verdict.of("timeout", "x")])
    assert counter.total == 5
    assert counter.as_dict(prefix="reward/")["reward/timeout"] == 1
    assert counter.as_dict(fractions=True)["correct"] == pytest.approx(0.4)
    assert set(counter.as_dict()) == set(REASONS)
    with pytest.raises(ValueError):
        Verdict.of("maybe", None)


def test_extract_answer_api():
    assert extract_answer(respond("42")).answer == "42"
    assert extract_answer("no box").status == "no_answer"
    assert extract_answer(r"\boxed{1} or \boxed{2}").status == "hedged"


def test_no_eval_or_sympify_on_model_text():
    """Static check of our own code: none of eval / exec / sympify / parse_expr / S() is ever called or
    imported, and math-verify is only used for its comparison (``verify``), never its text parser."""
    forbidden = {"eval", "exec", "sympify", "parse_expr", "S", "parse_latex", "compile"}
    package = pathlib.Path(__file__).resolve().parents[1] / "onerl" / "reward"
    files = sorted(package.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                assert name not in forbidden or owner in ("re",), f"{path.name}: call to {name}"
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names}
                assert not names & {"sympify", "parse_expr", "parse", "parse_latex", "S"}, f"{path.name}: {names}"


def test_number_tokens_never_sympified():
    """The symbolic parser reads number tokens with our own code: decimals become exact rationals."""
    import sympy

    from onerl.reward.symbolic import to_sympy

    assert to_sympy("1.5x", False) == sympy.Rational(3, 2) * sympy.Symbol("x", real=True)
    assert to_sympy("0.1", False) == sympy.Rational(1, 10)


def test_fast_path_throughput():
    """Plain-number pairs never touch the worker pool and grade at thousands per second."""
    with Verifier(workers=1, cache_size=0) as v:
        responses = [respond(f"\\frac{{{i}}}{{7}}") if i % 7 else respond(str(i)) for i in range(1, 2001)]
        golds = [f"{i}/7" if i % 7 else str(i) for i in range(1, 2001)]
        t = time.perf_counter()
        verdicts = v.score_batch(responses, golds)
        elapsed = time.perf_counter() - t
        assert all(x.correct for x in verdicts)
        assert v.stats()["symbolic"] == 0 and v.pool.pids() == []
        assert elapsed < 5.0
