"""The before/after summary of a run (printed as a table and written to summary.json)."""
from __future__ import annotations


def _first_last(rows: list[dict], key: str):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return (vals[0], vals[-1]) if vals else (None, None)


def summarize(rows: list[dict], wall_s: float) -> dict:
    out: dict = {"wall_s": round(wall_s, 1), "steps": max((r["step"] for r in rows), default=0)}
    names = {"eval/acc_strict": "heldout_strict", "eval/acc_format_free": "heldout_format_free",
             "eval/acc": "heldout_eval_grader", "eval/boxed_rate": "boxed_rate",
             "eval/reflection_rate": "reflection_rate", "eval/response_len": "heldout_len"}
    lines = [f"{'metric':<28}{'before':>10}{'after':>10}"]
    for key, name in names.items():
        before, after = _first_last(rows, key)
        if before is None:
            continue
        out[f"{name}_before"], out[f"{name}_after"] = before, after
        lines.append(f"{name:<28}{before:>10.3f}{after:>10.3f}")
    accs = [r["train/acc"] for r in rows if "train/acc" in r]
    if accs:
        out["train_acc_final"] = accs[-1]
        out["train_acc_first"] = accs[0]
        lines.append(f"{'train_acc (first, final)':<28}{accs[0]:>10.3f}{accs[-1]:>10.3f}")
        hold = [(r["step"], r["eval/acc_strict"]) for r in rows if "eval/acc_strict" in r]
        sat = next((r["step"] for r in rows if r.get("train/acc", 0) >= 0.95), None)
        if sat is not None and hold:
            at_sat = max((a for s, a in hold if s <= sat), default=hold[0][1])
            out["train_saturated_step"] = sat
            out["heldout_gain_after_saturation"] = hold[-1][1] - at_sat
    lines.append(f"wall time {wall_s:.0f} s over {out['steps']} steps")
    out["table"] = "\n".join(lines)
    return out
