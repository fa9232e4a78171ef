"""The reload benchmark's summary: medians, ratios, targets and the printed table."""

from __future__ import annotations

import math
import statistics
from typing import Any

from reload_trials import DJANGO, OURS, WATCHFILES
from servers import print_table


def p90(values: list[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)] if ordered else 0.0


def ratio(ours: float | None, theirs: float | None) -> float:
    if ours is None or theirs is None:
        return float("nan")
    if theirs:
        return ours / theirs
    return 0.0 if not ours else float("inf")


def timing_summary(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians and extremes over the trials that completed; None when none did."""
    summary: dict[str, Any] = {}
    for name, all_runs in trials.items():
        runs = [run for run in all_runs if run["seconds"] is not None]
        seconds = [run["seconds"] for run in runs]
        summary[name] = {
            "trials": len(all_runs),
            "completed": len(runs),
            "with_errors": sum(1 for run in all_runs if "error" in run),
            "median_s": statistics.median(seconds) if seconds else None,
            "p90_s": p90(seconds) if seconds else None,
            "min_s": min(seconds) if seconds else None,
            "max_s": max(seconds) if seconds else None,
            "failed_requests": sum(run.get("failed", 0) for run in runs),
            "max_failed_per_trial": max(
                (run.get("failed", 0) for run in runs), default=0
            ),
            "mtime_bumps": sum(1 for run in runs if run.get("mtime_bumped")),
        }
    summary["ratio_median"] = ratio(
        summary[OURS]["median_s"], summary[DJANGO]["median_s"]
    )
    return summary


def target(title: str, value: float, maximum: float, unit: str = "x") -> dict[str, Any]:
    return {
        "title": title,
        "value": value,
        "maximum": maximum,
        "unit": unit,
        "passed": value <= maximum,
    }


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    py = timing_summary(raw["py_edit"])
    tpl = timing_summary(raw["template_edit"])
    for name, runs in raw["template_edit"].items():
        tpl[name]["restarts"] = sum(1 for run in runs if run["restarted"])
    syn = timing_summary(raw["syntax_fix"])
    for name, runs in raw["syntax_fix"].items():
        done = [run for run in runs if run["seconds"] is not None]
        syn[name]["non_200_before_recovery"] = sum(
            run["non_200_before_recovery"] for run in done
        )
        syn[name]["fixed_code_served"] = sum(
            1 for run in done if run["fixed_code_served"]
        )
        shown = [
            run["broken_after_seconds"]
            for run in done
            if run["broken_after_seconds"] is not None
        ]
        syn[name]["broken_after_median_s"] = statistics.median(shown) if shown else None
        syn[name]["clean_trials"] = sum(
            1 for run in runs if "error" not in run and run["fixed_code_served"]
        )
    cold: dict[str, Any] = {
        name: {
            "median_s": statistics.median(r["seconds"] for r in runs),
            "p90_s": p90([r["seconds"] for r in runs]),
        }
        for name, runs in raw["cold_start"].items()
    }
    cold["ratio_median"] = ratio(cold[OURS]["median_s"], cold[DJANGO]["median_s"])
    idle = raw["idle"]
    idle_ratio = ratio(idle[OURS]["on_cpu_seconds"], idle[DJANGO]["on_cpu_seconds"])
    ticks_ratio = ratio(idle[OURS]["cpu_seconds"], idle[DJANGO]["cpu_seconds"])
    targets = [
        target(
            ".py edit -> new code: median ours <= 0.7x Django", py["ratio_median"], 0.7
        ),
        target(
            "failed requests during our .py reloads == 0",
            py[OURS]["failed_requests"],
            0,
            " requests",
        ),
        target(
            "template edit -> new text: median ours <= 0.3x Django",
            tpl["ratio_median"],
            0.3,
        ),
        target(
            "template edits restarted our worker == 0 times",
            tpl[OURS]["restarts"],
            0,
            " restarts",
        ),
        target(
            "idle CPU (schedstat) with the large tree: ours <= 0.25x Django "
            "(StatReloader)",
            idle_ratio,
            0.25,
        ),
    ]
    watches: dict[str, Any] = {name: idle[name]["inotify_watches"] for name in idle}
    if WATCHFILES in idle:
        watches["ratio_ours_watchfiles"] = ratio(
            idle[OURS]["inotify_watches"], idle[WATCHFILES]["inotify_watches"]
        )
        targets.append(
            target(
                "inotify watches: ours <= 0.1x django-watchfiles",
                watches["ratio_ours_watchfiles"],
                0.1,
            )
        )
    targets.append(
        target(
            "cold start -> first 200: median ours <= 1.1x Django",
            cold["ratio_median"],
            1.1,
        )
    )
    # Not one of the speed targets: a correctness check the syntax phase makes.
    targets.append(
        target(
            "syntax error: our error page shown and the fix served (failed trials)",
            syn[OURS]["trials"] - syn[OURS]["clean_trials"],
            0,
            " trials",
        )
    )
    return {
        "py_edit": py,
        "template_edit": tpl,
        "syntax_fix": syn,
        "cold_start": cold,
        "idle": {
            name: {k: v for k, v in idle[name].items() if k != "per_process"}
            for name in idle
        }
        | {
            "ratio_ours_django": idle_ratio,
            "ratio_ours_django_utime_stime": ticks_ratio,
        },
        "inotify_watches": watches,
        "targets": targets,
    }


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.0f} ms"


def print_report(summary: dict[str, Any], raw: dict[str, Any]) -> None:
    header = ("measurement", OURS, DJANGO, "ours/Django")
    rows: list[tuple[str, ...]] = [header]
    for key, title in (
        ("py_edit", ".py edit -> new code served"),
        ("template_edit", "template edit -> new text served"),
        ("syntax_fix", "syntax error fixed -> 200 again"),
    ):
        item = summary[key]
        rows.append(
            (
                f"{title}: median",
                ms(item[OURS]["median_s"]),
                ms(item[DJANGO]["median_s"]),
                f"{item['ratio_median']:.2f}x",
            )
        )
        rows.append(
            (
                "    p90",
                ms(item[OURS]["p90_s"]),
                ms(item[DJANGO]["p90_s"]),
                f"{ratio(item[OURS]['p90_s'], item[DJANGO]['p90_s']):.2f}x",
            )
        )
        rows.append(
            (
                "    min - max",
                f"{ms(item[OURS]['min_s'])} - {ms(item[OURS]['max_s'])}",
                f"{ms(item[DJANGO]['min_s'])} - {ms(item[DJANGO]['max_s'])}",
                "",
            )
        )
        if item[OURS]["with_errors"] or item[DJANGO]["with_errors"]:
            rows.append(
                (
                    "    trials with errors (see above)",
                    f"{item[OURS]['with_errors']}/{item[OURS]['trials']}",
                    f"{item[DJANGO]['with_errors']}/{item[DJANGO]['trials']}",
                    "",
                )
            )
        if key == "syntax_fix":
            rows.append(
                (
                    "    non-200 polls after the fix (total)",
                    str(item[OURS]["non_200_before_recovery"]),
                    str(item[DJANGO]["non_200_before_recovery"]),
                    "",
                )
            )
            rows.append(
                (
                    "    fixed code served at first 200",
                    f"{item[OURS]['fixed_code_served']}/{item[OURS]['trials']}",
                    f"{item[DJANGO]['fixed_code_served']}/{item[DJANGO]['trials']}",
                    "",
                )
            )
        else:
            rows.append(
                (
                    "    failed requests (total / worst edit)",
                    f"{item[OURS]['failed_requests']} / "
                    f"{item[OURS]['max_failed_per_trial']}",
                    f"{item[DJANGO]['failed_requests']} / "
                    f"{item[DJANGO]['max_failed_per_trial']}",
                    "",
                )
            )
        if key == "template_edit":
            rows.append(
                (
                    "    edits that restarted the serving process",
                    str(item[OURS]["restarts"]),
                    str(item[DJANGO]["restarts"]),
                    "",
                )
            )
    idle = summary["idle"]
    window = idle[OURS]["window_seconds"]
    rows.append(
        (
            f"idle CPU over {window:.0f} s, large tree (schedstat)",
            f"{idle[OURS]['on_cpu_seconds'] * 1000:.1f} ms "
            f"({idle[OURS]['on_cpu_percent_of_one_core']:.3f}%)",
            f"{idle[DJANGO]['on_cpu_seconds'] * 1000:.1f} ms "
            f"({idle[DJANGO]['on_cpu_percent_of_one_core']:.3f}%)",
            f"{idle['ratio_ours_django']:.2f}x",
        )
    )
    rows.append(
        (
            "    utime+stime (10 ms ticks)",
            f"{idle[OURS]['cpu_seconds']:.2f} s",
            f"{idle[DJANGO]['cpu_seconds']:.2f} s",
            f"{idle['ratio_ours_django_utime_stime']:.2f}x",
        )
    )
    watches = summary["inotify_watches"]
    rows.append(
        (
            "inotify watches, large tree (Django: StatReloader)",
            str(watches[OURS]),
            str(watches[DJANGO]),
            "",
        )
    )
    if WATCHFILES in watches:
        rows.append(
            (
                "django-watchfiles: inotify watches / idle CPU",
                f"ours/it {watches['ratio_ours_watchfiles']:.3f}x",
                f"{watches[WATCHFILES]} / "
                f"{idle[WATCHFILES]['on_cpu_seconds'] * 1000:.1f} ms",
                "",
            )
        )
    cold = summary["cold_start"]
    rows.append(
        (
            "cold start -> first 200 from /hello/: median",
            ms(cold[OURS]["median_s"]),
            ms(cold[DJANGO]["median_s"]),
            f"{cold['ratio_median']:.2f}x",
        )
    )
    print_table(rows)
    for name in (OURS, DJANGO):
        parts = []
        for process in raw["idle"][name]["per_process"]:
            busy = sorted(process["threads"], key=lambda t: -t["on_cpu_ms"])
            shown = ", ".join(
                f"{t['name']} {t['on_cpu_ms']:.1f} ms ({t['wakeups_per_s']:.1f}/s)"
                for t in busy
                if t["on_cpu_ms"] >= 0.5
            )
            parts.append(f"{process['role']} [{shown or 'nothing'}]")
        print(f"idle threads of {name} (on-CPU, wake-ups per s): {'; '.join(parts)}")
    print()
    for item in summary["targets"]:
        verdict = "PASS" if item["passed"] else "FAIL"
        unit = item["unit"]
        value = (
            f"{item['value']:.2f}{unit}" if unit == "x" else f"{item['value']}{unit}"
        )
        print(f"{verdict}  {item['title']}: {value}")


def json_safe(value: Any) -> Any:
    """NaN and infinities (ratios against nothing) as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
