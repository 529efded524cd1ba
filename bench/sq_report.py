"""search_quality results: saving the JSON, reading timelines, and the markdown table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))


def trials_to(timeline: list[list[Any]], goal: float) -> int | None:
    """The first trial whose best-so-far reached ``goal`` seconds, or None."""
    for _, trial, best in timeline:
        if best is not None and best <= goal:
            return int(trial)
    return None


def time_to(timeline: list[list[Any]], goal: float) -> float | None:
    """Seconds until the best-so-far reached ``goal``, or None."""
    for t, _, best in timeline:
        if best is not None and best <= goal:
            return float(t)
    return None


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(results: dict[str, Any]) -> str:
    """One row per workload, the suite's median latency ratio, and the warm-start line."""
    lines = [f"search_quality ({results['mode']}): {results['trials']} trials per workload, "
             f"{results['per_batch']} per batch, pipeline depth {results.get('pipeline_depth')}, "
             f"cost model {results.get('cost_model', 'metaschedule')}, target {json.dumps(results.get('target'))}", "",
             "| workload | tunehub ms | MS ms | latency ratio (≤0.9) | wall tunehub s | wall MS s | wall ratio | "
             "tunehub s to MS final (ratio, ≤0.5) | GFLOP/s tunehub | vs numpy | vs untuned |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    for name, w in results["workloads"].items():
        ours, ms_ = w["tunehub"]["final_secs"], w["metaschedule"]["final_secs"]
        ratios.append(w["latency_ratio"])
        gflops = w["flops"] / ours / 1e9
        vs_np = (w["numpy_secs"] / ours) if w["numpy_secs"] else None
        vs_un = (w["untuned_secs"] / ours) if w["untuned_secs"] else None
        ms_np = f" (MS {w['numpy_secs'] / ms_:.2f})" if w["numpy_secs"] else ""
        reach = w["tunehub_secs_to_ms_final"]
        lines.append(
            f"| {name} | {ours * 1e3:.3f} | {ms_ * 1e3:.3f} | {w['latency_ratio']:.2f} | {w['tunehub']['wall_s']:.0f} | "
            f"{w['metaschedule']['wall_s']:.0f} | {w['wall_ratio']:.2f} | "
            f"{_fmt(reach, '.0f')} ({_fmt(w['reach_ratio'], '.2f')}) | {gflops:.1f} | {_fmt(vs_np, '.2f')}{ms_np} | "
            f"{_fmt(vs_un, '.0f')}× |")
    if ratios:
        lines += ["", f"suite median latency ratio tunehub/MetaSchedule: {statistics.median(ratios):.2f} (target ≤ 0.90)"]
    ws = results.get("warm_start")
    if ws:
        lines += ["", f"warm start on {ws['target']} after {', '.join(ws['related'])}: goal {ws['goal_secs'] * 1e3:.3f} ms "
                  f"(95 % of cold best {ws['cold_best_secs'] * 1e3:.3f} ms); trials to goal: cold "
                  f"{ws['cold_trials_to_goal']}, warm {ws['warm_trials_to_goal']} → ratio {_fmt(ws['ratio'], '.2f')} "
                  f"(target ≤ 0.30); warm best {ws['warm_best_secs'] * 1e3:.3f} ms"]
    return "\n".join(lines)
