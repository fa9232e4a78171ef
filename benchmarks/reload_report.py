"""The reload benchmark's summary: medians, ratios, targets and the printed tables."""

from __future__ import annotations

import math
import statistics
from typing import Any

from .reload_trials import DJANGO, NO_PRELOAD, OURS, WATCHFILES
from .servers import print_table

#: The targets, as ratios runserver_plus / Django in the same run.
PY_EDIT_MAX = {"testproject": 0.25, "large": 0.3}
TEMPLATE_MAX = 0.3  # testproject only
SYNTAX_FIX_MAX = 0.4
COLD_START_MAX = 1.05
IDLE_CPU_MAX = 0.25
INOTIFY_MAX = 0.1  # against django-watchfiles, with the large tree
WARM_PSS_MAX = 1.0  # the warm process's PSS against the worker's

TITLES = {
    "testproject": "testproject",
    "large": "large project",
}


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


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def timing_summary(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians and extremes over the trials that completed; None when none did."""
    summary: dict[str, Any] = {}
    for name, all_runs in trials.items():
        runs = [run for run in all_runs if run["seconds"] is not None]
        seconds = [run["seconds"] for run in runs]
        starts = [start for run in all_runs for start in run.get("starts", [])]
        ready = [run["warm_ready_s"] for run in runs if "warm_ready_s" in run]
        floor = [run["floor_s"] for run in runs if "floor_s" in run]
        summary[name] = {
            "trials": len(all_runs),
            "completed": len(runs),
            "with_errors": sum(1 for run in all_runs if "error" in run),
            "median_s": median_or_none(seconds),
            "p90_s": p90(seconds) if seconds else None,
            "min_s": min(seconds) if seconds else None,
            "max_s": max(seconds) if seconds else None,
            "failed_requests": sum(run.get("failed", 0) for run in runs),
            "max_failed_per_trial": max(
                (run.get("failed", 0) for run in runs), default=0
            ),
            "mtime_bumps": sum(1 for run in runs if run.get("mtime_bumped")),
            # runserver_plus only: how its workers started (-v 2 lines), and
            # how long its next warm process took to be ready (-v 3 lines).
            "worker_starts": len(starts),
            "warm_starts": sum(1 for s in starts if s.startswith("warm")),
            "cold_reasons": sorted({s for s in starts if s.startswith("cold")}),
            "preloaded_median": median_or_none(
                [int(s.split()[1]) for s in starts if s.startswith("warm")]
            ),
            "warm_ready_median_s": median_or_none([r for r in ready if r is not None]),
            "warm_ready_max_s": max((r for r in ready if r is not None), default=None),
            "warm_never_ready": sum(1 for r in ready if r is None),
            # reload_floor.py after each of runserver_plus's .py saves.
            "floor_median_s": median_or_none(floor),
        }
    summary["ratio_median"] = ratio(
        summary[OURS]["median_s"], summary[DJANGO]["median_s"]
    )
    if WATCHFILES in summary:
        summary["ratio_median_watchfiles"] = ratio(
            summary[OURS]["median_s"], summary[WATCHFILES]["median_s"]
        )
    summary["ratio_floor"] = ratio(
        summary[OURS]["floor_median_s"], summary[DJANGO]["median_s"]
    )
    if NO_PRELOAD in summary:
        summary["ratio_median_no_preload"] = ratio(
            summary[NO_PRELOAD]["median_s"], summary[DJANGO]["median_s"]
        )
    return summary


def target(title: str, value: float, maximum: float, unit: str = "x") -> dict[str, Any]:
    return {
        "title": title,
        "value": value,
        "maximum": maximum,
        "unit": unit,
        # NaN (nothing to compare) fails.
        "passed": value <= maximum,
    }


def syntax_summary(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    syn = timing_summary(trials)
    for name, runs in trials.items():
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
        syn[name]["broken_after_median_s"] = median_or_none(shown)
        syn[name]["clean_trials"] = sum(
            1 for run in runs if "error" not in run and run["fixed_code_served"]
        )
    return syn


def idle_summary(idle: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        name: {
            k: v
            for k, v in item.items()
            if k not in ("per_process", "memory") and not k.startswith("inotify_")
        }
        | {
            "pss_kib": item["memory"]["pss_kib"],
            "pss_kib_by_role": item["memory"]["pss_kib_by_role"],
            "warm_identified": item["memory"]["warm_identified"],
            "inotify_watches": item["inotify_watches"],
        }
        for name, item in idle.items()
    }
    summary["ratio_ours_django"] = ratio(
        idle[OURS]["on_cpu_seconds"], idle[DJANGO]["on_cpu_seconds"]
    )
    summary["ratio_ours_django_utime_stime"] = ratio(
        idle[OURS]["cpu_seconds"], idle[DJANGO]["cpu_seconds"]
    )
    roles = idle[OURS]["memory"]["pss_kib_by_role"]
    summary["warm_pss_over_worker_pss"] = ratio(roles.get("warm"), roles.get("worker"))
    summary["pss_ratio_ours_django"] = ratio(
        idle[OURS]["memory"]["pss_kib"], idle[DJANGO]["memory"]["pss_kib"]
    )
    if WATCHFILES in idle:
        summary["inotify_ratio_ours_watchfiles"] = ratio(
            idle[OURS]["inotify_watches"], idle[WATCHFILES]["inotify_watches"]
        )
    return summary


def summarise(raw: dict[str, Any], project: str) -> dict[str, Any]:
    """Summary and targets of one project (``testproject`` or ``large``)."""
    title = TITLES[project]
    py = timing_summary(raw["py_edit"])
    tpl = timing_summary(raw["template_edit"])
    for name, runs in raw["template_edit"].items():
        tpl[name]["restarts"] = sum(1 for run in runs if run["restarted"])
    syn = syntax_summary(raw["syntax_fix"])
    cold: dict[str, Any] = {
        name: {
            "median_s": statistics.median(r["seconds"] for r in runs),
            "p90_s": p90([r["seconds"] for r in runs]),
        }
        for name, runs in raw["cold_start"].items()
    }
    cold["ratio_median"] = ratio(cold[OURS]["median_s"], cold[DJANGO]["median_s"])
    if WATCHFILES in cold:
        cold["ratio_median_watchfiles"] = ratio(
            cold[OURS]["median_s"], cold[WATCHFILES]["median_s"]
        )
    idle = idle_summary(raw["idle"])
    targets = [
        target(
            f"{title}: .py save -> new code: median ours <= "
            f"{PY_EDIT_MAX[project]}x Django (floor {times(py['ratio_floor'])})",
            py["ratio_median"],
            PY_EDIT_MAX[project],
        ),
        target(
            f"{title}: failed requests during our .py reloads == 0",
            py[OURS]["failed_requests"],
            0,
            " requests",
        ),
    ]
    if project == "testproject":
        targets += [
            target(
                f"{title}: template save -> new text: median ours <= "
                f"{TEMPLATE_MAX}x Django",
                tpl["ratio_median"],
                TEMPLATE_MAX,
            ),
            target(
                f"{title}: template saves restarted our worker == 0 times",
                tpl[OURS]["restarts"],
                0,
                " restarts",
            ),
        ]
    targets += [
        target(
            f"{title}: syntax error fixed -> 200: median ours <= "
            f"{SYNTAX_FIX_MAX}x Django",
            syn["ratio_median"],
            SYNTAX_FIX_MAX,
        ),
        target(
            f"{title}: cold start -> first 200: median ours <= "
            f"{COLD_START_MAX}x Django",
            cold["ratio_median"],
            COLD_START_MAX,
        ),
        target(
            f"{title}: idle CPU (schedstat"
            + (", large tree" if project == "testproject" else "")
            + f"): ours <= {IDLE_CPU_MAX}x Django (StatReloader)",
            idle["ratio_ours_django"],
            IDLE_CPU_MAX,
        ),
    ]
    if "inotify_ratio_ours_watchfiles" in idle and project == "testproject":
        targets.append(
            target(
                f"{title}: inotify watches, large tree: ours <= "
                f"{INOTIFY_MAX}x django-watchfiles",
                idle["inotify_ratio_ours_watchfiles"],
                INOTIFY_MAX,
            )
        )
    targets.append(
        target(
            f"{title}: idle PSS of our warm process <= our worker's",
            idle["warm_pss_over_worker_pss"],
            WARM_PSS_MAX,
        )
    )
    # Not speed targets: checks that the measurements mean what they say.
    targets.append(
        target(
            f"{title}: syntax error: our error page shown and the fix served "
            "(failed trials)",
            syn[OURS]["trials"] - syn[OURS]["clean_trials"],
            0,
            " trials",
        )
    )
    not_warm = sum(
        item[OURS]["worker_starts"] - item[OURS]["warm_starts"]
        for item in (py, tpl, syn)
    )
    targets.append(
        target(
            f"{title}: our restarts that did not start warm (-v 2 lines)",
            not_warm,
            0,
            " restarts",
        )
    )
    targets.append(
        target(
            f"{title}: idle: one warm process, the one the supervisor said was "
            "ready (-v 3), beside supervisor and worker",
            0 if idle[OURS]["warm_identified"] else 1,
            0,
            " mismatches",
        )
    )
    return {
        "py_edit": py,
        "template_edit": tpl,
        "syntax_fix": syn,
        "cold_start": cold,
        "idle": idle,
        "targets": targets,
    }


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.0f} ms"


def times(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def print_report(
    summary: dict[str, Any], raw: dict[str, Any], project: str, about: str
) -> None:
    """The table of one project, then its idle threads and PASS/FAIL lines."""
    names = [n for n in (OURS, DJANGO, WATCHFILES) if n in raw["cold_start"]]
    has_wf = WATCHFILES in names
    header = ("measurement", *names, "ours/Django", *(["ours/wf"] if has_wf else []))
    rows: list[tuple[str, ...]] = [header]

    def row(title: str, cells: dict[str, str], *ratios: str) -> None:
        shown = list(ratios) + [""] * (1 + has_wf - len(ratios))
        rows.append((title, *(cells.get(n, "") for n in names), *shown))

    def timing_rows(item: dict[str, Any], title: str) -> None:
        row(
            f"{title}: median",
            {n: ms(item[n]["median_s"]) for n in names},
            times(item["ratio_median"]),
            *([times(item["ratio_median_watchfiles"])] if has_wf else []),
        )
        row(
            "    p90",
            {n: ms(item[n]["p90_s"]) for n in names},
            times(ratio(item[OURS]["p90_s"], item[DJANGO]["p90_s"])),
            *(
                [times(ratio(item[OURS]["p90_s"], item[WATCHFILES]["p90_s"]))]
                if has_wf
                else []
            ),
        )
        row(
            "    min - max",
            {n: f"{ms(item[n]['min_s'])} - {ms(item[n]['max_s'])}" for n in names},
        )
        if any(item[n]["with_errors"] for n in names):
            row(
                "    trials with errors (see above)",
                {n: f"{item[n]['with_errors']}/{item[n]['trials']}" for n in names},
            )

    def warm_row(item: dict[str, Any]) -> None:
        ours = item[OURS]
        if not ours["worker_starts"]:
            return
        preloaded = ours["preloaded_median"]
        row(
            "    our workers started warm (modules preloaded)",
            {
                OURS: f"{ours['warm_starts']}/{ours['worker_starts']}"
                + (f" ({preloaded:.0f})" if preloaded is not None else "")
            },
        )
        if ours["cold_reasons"]:
            row("    cold starts: " + "; ".join(ours["cold_reasons"])[:60], {})
        if ours["warm_ready_median_s"] is not None:
            row(
                "    next warm process ready after: median / max",
                {
                    OURS: f"{ms(ours['warm_ready_median_s'])} / "
                    f"{ms(ours['warm_ready_max_s'])}"
                    + (
                        f", {ours['warm_never_ready']} never"
                        if ours["warm_never_ready"]
                        else ""
                    )
                },
            )

    def failed_row(item: dict[str, Any]) -> None:
        row(
            "    failed requests (total / worst save)",
            {
                n: f"{item[n]['failed_requests']} / {item[n]['max_failed_per_trial']}"
                for n in names
            },
        )

    py = summary["py_edit"]
    timing_rows(py, ".py save -> new code served")
    failed_row(py)
    warm_row(py)
    if py[OURS]["floor_median_s"] is not None:
        row(
            "    floor: the work left after a save, alone (reload_floor.py)",
            {OURS: ms(py[OURS]["floor_median_s"])},
            times(py["ratio_floor"]),
        )
    if NO_PRELOAD in py:
        ref = py[NO_PRELOAD]
        row(
            "    reference: ours with --no-preload: median / p90",
            {OURS: f"{ms(ref['median_s'])} / {ms(ref['p90_s'])}"},
            times(py["ratio_median_no_preload"]),
        )
        row(
            "    --no-preload: failed requests (total / worst)",
            {OURS: f"{ref['failed_requests']} / {ref['max_failed_per_trial']}"},
        )
    tpl = summary["template_edit"]
    timing_rows(tpl, "template save -> new text served")
    failed_row(tpl)
    row(
        "    saves that restarted the serving process",
        {n: str(tpl[n]["restarts"]) for n in names},
    )
    syn = summary["syntax_fix"]
    timing_rows(syn, "syntax error fixed -> 200 again")
    row(
        "    non-200 polls after the fix (total)",
        {n: str(syn[n]["non_200_before_recovery"]) for n in names},
    )
    row(
        "    fixed code served at first 200",
        {n: f"{syn[n]['fixed_code_served']}/{syn[n]['trials']}" for n in names},
    )
    warm_row(syn)
    cold = summary["cold_start"]
    row(
        "cold start -> first 200 from /hello/: median",
        {n: ms(cold[n]["median_s"]) for n in names},
        times(cold["ratio_median"]),
        *([times(cold["ratio_median_watchfiles"])] if has_wf else []),
    )
    row(
        "    p90",
        {n: ms(cold[n]["p90_s"]) for n in names},
        times(ratio(cold[OURS]["p90_s"], cold[DJANGO]["p90_s"])),
    )
    idle = summary["idle"]
    window = idle[OURS]["window_seconds"]
    row(
        f"idle CPU over {window:.0f} s (schedstat)",
        {
            n: f"{idle[n]['on_cpu_seconds'] * 1000:.1f} ms "
            f"({idle[n]['on_cpu_percent_of_one_core']:.3f}%)"
            for n in names
        },
        times(idle["ratio_ours_django"]),
        *(
            [
                times(
                    ratio(
                        idle[OURS]["on_cpu_seconds"],
                        idle[WATCHFILES]["on_cpu_seconds"],
                    )
                )
            ]
            if has_wf
            else []
        ),
    )
    row(
        "    utime+stime (10 ms ticks)",
        {n: f"{idle[n]['cpu_seconds']:.2f} s" for n in names},
        times(idle["ratio_ours_django_utime_stime"]),
    )
    row(
        "inotify watches",
        {n: str(idle[n]["inotify_watches"]) for n in names},
        "",
        *(
            [times(idle["inotify_ratio_ours_watchfiles"])]
            if "inotify_ratio_ours_watchfiles" in idle
            else []
        ),
    )
    row(
        "idle PSS, whole process group",
        {n: mib(idle[n]["pss_kib"]) for n in names},
        times(idle["pss_ratio_ours_django"]),
        *(
            [times(ratio(idle[OURS]["pss_kib"], idle[WATCHFILES]["pss_kib"]))]
            if has_wf
            else []
        ),
    )
    row(
        "    by process",
        {
            n: ", ".join(
                f"{role} {mib(kib)}" for role, kib in idle[n]["pss_kib_by_role"].items()
            )
            for n in names
        },
    )
    row(
        "    our warm process / our worker",
        {OURS: times(idle["warm_pss_over_worker_pss"])},
    )
    row(
        "modules imported by the serving process",
        {n: str(idle[n]["modules_in_worker"]) for n in names},
    )
    print(f"\n=== {TITLES[project]}: {about}")
    print_table(rows)
    for name in names:
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


def print_targets(targets: list[dict[str, Any]]) -> None:
    print()
    for item in targets:
        verdict = "PASS" if item["passed"] else "FAIL"
        unit = item["unit"]
        value = times(item["value"]) if unit == "x" else f"{item['value']}{unit}"
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
