"""Run several policies over several seeds on one benchmark and summarize them side by side."""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

from metaaugment.comparison.launch import (
    JOBS_FILE,
    LOCAL_JOBS_DIR,
    SUBMITIT_DIR,
    LaunchOptions,
    PlannedRun,
    launch,
)
from metaaugment.comparison.sweep_file import Variant
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import (
    read_text_capped,
    refuse_linked_folders,
    remove_stale_temporary_files,
    write_bytes,
    write_text,
)
from metaaugment.infra.schema import clip
from metaaugment.run.config import RunConfig
from metaaugment.run.config_file import MAX_FILE_BYTES
from metaaugment.run.devices import resolve_device
from metaaugment.run.folder import RunDirectory, folder_name
from metaaugment.run.loop import check_global_batch, policy_and_learner, run_kind
from metaaugment.spec import BenchmarkKind, benchmark_kind
from metaaugment.steptools.stats import mean_std


def kind_of(records: Sequence["RunRecord"]) -> BenchmarkKind:
    """The benchmark kind of a comparison's runs (results.json 'kind'; older runs: classification)."""
    kinds = {r.results.get("kind", "classification") for r in records}
    if len(kinds) != 1:
        raise ValueError(f"a comparison mixes benchmark kinds: {sorted(kinds)}")
    return benchmark_kind(kinds.pop())


@dataclass
class RunRecord:
    """One finished run of a comparison: its variant's name (the policy's, for the --policies
    short form), seed, folder and results.json."""

    policy: str
    seed: int
    path: Path
    results: dict[str, Any]


@dataclass
class PolicySummary:
    """Per-policy aggregate over seeds: metric -> list of per-seed values."""

    policy: str
    seeds: list[int]
    values: dict[str, list[float]]
    wall_times: list[float]
    kind: BenchmarkKind

    @property
    def metrics(self) -> tuple[tuple[str, str, bool], ...]:
        """(metric, title, percent) columns of this benchmark kind, headline first."""
        return tuple((c.metric, c.title, c.percent) for c in self.kind.columns)

    def stat(self, metric: str) -> tuple[float, float]:
        """(mean, std) of `metric` over seeds."""
        return mean_std(self.values[metric])


def plan_comparison(base: RunConfig, variants: Sequence[str | Variant], seeds: Sequence[int], out: Path,
                    policy_options: dict[str, dict[str, Any]] | None = None,
                    processes: int = 1) -> list[PlannedRun]:
    """Every (variant, seed) run of a comparison, in table order, in out/<variant>/seed<k>;
    each run's settings are checked here, before any trains (on `processes` ranks each). A
    variant given as a policy name takes its options from `policy_options[name]`."""
    chosen = [v if isinstance(v, Variant) else Variant(folder_name(v), v, dict((policy_options or {}).get(v, {})))
              for v in variants]
    names = [v.name for v in chosen]
    if len(set(names)) != len(names):
        raise UserError(f"the compared variants need distinct names (got {', '.join(names)})")
    for name in names:  # each names a folder beside the comparison's own files
        if name in RESERVED_NAMES:
            raise UserError(f"variant name {name!r} is the name of a file the comparison writes; choose another")
        if len(name.encode()) > MAX_VARIANT_BYTES:
            raise UserError(f"variant name {name[:40]!r}... is {len(name.encode())} bytes long; a variant names a "
                            f"folder and a log file, so at most {MAX_VARIANT_BYTES}")
    # each run resolved once, here: its policy's benchmark defaults join its options
    runs = [PlannedRun(v.name, seed, v.apply(base, seed).resolve(), Path(out) / v.name / f"seed{seed}")
            for v in chosen for seed in seeds]
    checked_devices = set()
    for run in runs:
        if run.config.device not in checked_devices:  # a device this machine lacks, before any job starts
            resolve_device(run.config.device)
            checked_devices.add(run.config.device)
        kind = run_kind(run.config)
        policy_and_learner(run.config, kind)
        check_global_batch(run.config, processes, kind)
    return runs


def run_comparison(base: RunConfig, variants: Sequence[str | Variant], seeds: Sequence[int], out: Path,
                   policy_options: dict[str, dict[str, Any]] | None = None,
                   console: Console | None = None, show_progress: bool = True,
                   overwrite: bool = False, launch_options: LaunchOptions | None = None,
                   trust_code: bool = False) -> list[RunRecord]:
    """Train every (variant, seed) into out/<variant>/seed<k> (`plan_comparison`), reusing
    finished runs and resuming unfinished ones; `overwrite` first removes what earlier runs
    wrote, so every run trains again from the start; a folder holding a different
    configuration is an error. `launch_options` choose where the runs train (run.launch:
    here, one after another, by default). Returns the records in table order; a run still
    training (launched without waiting) has no record. `trust_code` reaches `train`."""
    console = console or Console(stderr=True)
    options = launch_options or LaunchOptions()
    runs = plan_comparison(base, variants, seeds, out, policy_options, options.nproc_per_node)
    check_table_owner(out, list(dict.fromkeys(run.name for run in runs)), overwrite)
    for run in runs:  # every folder checked before anything trains or is submitted
        refuse_linked_folders(out, run.path)
        refuse_linked_folders(out, Path(out) / LOCAL_JOBS_DIR)
        folder = RunDirectory(run.path)
        if overwrite and folder.owned():  # what earlier runs wrote goes (their own files only)
            with folder.locked():
                folder.prepare(run.config.to_dict(), overwrite=True)
        elif folder.check(run.config.to_dict(), resume=True) and folder.finished:
            # a finished run's results are read back: damaged ones stop us here
            refuse_other_process_count(run.path, folder.read_results(), options.nproc_per_node)
    results = launch(runs, out, options, console, show_progress, trust_code)
    return [RunRecord(run.name, run.seed, run.path, results[run.key]) for run in runs
            if results.get(run.key) is not None]


def refuse_other_process_count(path: Path, results: dict[str, Any], processes: int) -> None:
    """UserError when a finished run was trained on another number of processes than the
    comparison asks for: its results are not what this comparison would train (float sums
    in another order), so it is not silently reused."""
    environment = results.get("environment")
    trained_on = environment.get("processes", 1) if isinstance(environment, dict) else 1
    if trained_on != processes:
        raise UserError(f"{path} holds a finished run trained on {trained_on} process(es); this comparison asks for "
                        f"{processes} (--nproc-per-node): pass --overwrite to train it again, or compare into "
                        f"another --out")


def tabled_variants(out: Path) -> list[str] | None:
    """The variants whose table `out` holds (comparison.csv's first column), or None when it
    holds none."""
    path = Path(out) / "comparison.csv"
    if not path.is_file():
        return None
    text = read_text_capped(path, "comparison table", MAX_FILE_BYTES)  # a table has a row per variant
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise UserError(f"{path} cannot be read ({error}); move it away or pass --overwrite") from None
    if not rows or not rows[0] or rows[0][0] != "policy":
        raise UserError(f"{path} is not a comparison table; move it away or pass --overwrite")
    return [row[0] for row in rows[1:] if row]


TABLE_FILES = ("comparison.csv", "comparison.md", "comparison.png")
RESERVED_NAMES = frozenset({*TABLE_FILES, JOBS_FILE, LOCAL_JOBS_DIR, SUBMITIT_DIR})
MAX_VARIANT_BYTES = 200  # a file name has 255; its job log adds -seedK.log


def check_table_owner(out: Path, names: Sequence[str], overwrite: bool) -> None:
    """A UserError when `out` holds the table of another set of variants than `names` (a
    comparison is never silently replaced), unless `overwrite`; and, even with `overwrite`,
    when a table file's place holds a link or a folder (found now, not after training)."""
    for name in TABLE_FILES:
        path = Path(out) / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise UserError(f"{path} is a link or a folder, not a table this program wrote; move it away")
    if overwrite:
        return
    tabled = tabled_variants(out)
    if tabled is not None and set(tabled) != set(names):
        shown = clip(", ".join(name if name.isprintable() else repr(name) for name in tabled))
        raise UserError(f"{out} holds the table of another comparison ({shown}), not of "
                        f"{clip(', '.join(names))}: give another --out, or pass --overwrite to replace it (its "
                        f"runs train again)")


def summarize(records: Sequence[RunRecord]) -> list[PolicySummary]:
    """Group run records by policy, in first-seen order."""
    kind = kind_of(records)
    summaries: dict[str, PolicySummary] = {}
    for r in records:
        s = summaries.setdefault(r.policy, PolicySummary(r.policy, [], {c.metric: [] for c in kind.columns}, [], kind))
        s.seeds.append(r.seed)
        for metric in (c.metric for c in kind.columns):
            value = r.results["metrics"].get(metric)
            s.values[metric].append(float("nan") if value is None else float(value))
        s.wall_times.append(float(r.results.get("wall_time_s", float("nan"))))
    return list(summaries.values())


def format_stat(mean: float, std: float, percent: bool, seeds: int = 2) -> str:
    """'97.50 ± 0.31' (percent) or '0.1234 ± 0.0040'; the mean alone for a single seed,
    whose spread is unknown, not zero; '-' for a metric the runs do not report (ProtoNets'
    pre-update scores)."""
    if math.isnan(mean):
        return "-"
    if seeds < 2:
        return format_value(mean, percent)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if percent else f"{mean:.4f} ± {std:.4f}"


def comparison_csv(summaries: Sequence[PolicySummary]) -> str:
    """One row per policy: seeds, then mean and std of each summary metric, then time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["policy", "n_seeds", "seeds"]
    for metric, _, _ in summaries[0].metrics:
        header += [f"{metric}_mean", f"{metric}_std"]
    writer.writerow(header + ["wall_time_s_mean"])
    for s in summaries:
        row: list[Any] = [s.policy, len(s.seeds), " ".join(map(str, s.seeds))]
        for metric, _, _ in s.metrics:
            mean, std = s.stat(metric)
            # one seed: the spread is unknown, not zero (empty, as the md table shows the mean alone)
            # not reported (nan): empty cells, as the md table shows '-'
            row += ["", ""] if math.isnan(mean) else [f"{mean:.6f}", f"{std:.6f}" if len(s.seeds) > 1 else ""]
        writer.writerow(row + [f"{mean_std(s.wall_times)[0]:.2f}"])
    return buffer.getvalue()


def comparison_markdown(benchmark: str, summaries: Sequence[PolicySummary], records: Sequence[RunRecord]) -> str:
    """A summary table (mean ± std over seeds) and a per-run table."""
    columns = summaries[0].metrics
    titles = [t + (" (%)" if p else "") for _, t, p in columns]  # units with each column: MSE is not in %
    lines = [f"# {benchmark}: policy comparison", "",
             "Mean ± sample standard deviation over seeds (the mean alone for one seed).", "",
             "| policy | seeds | " + " | ".join(titles) + " | time / run (s) |",
             "|---|---|" + "---|" * len(columns) + "---|"]
    for s in summaries:
        cells = [format_stat(*s.stat(m), p, len(s.seeds)) for m, _, p in columns]
        lines.append(f"| {s.policy} | {len(s.seeds)} | " + " | ".join(cells) + f" | {mean_std(s.wall_times)[0]:.1f} |")
    lines += ["", "## Runs", "", "| policy | seed | " + " | ".join(titles) + " | folder |",
              "|---|---|" + "---|" * len(columns) + "---|"]
    for r in records:
        m = r.results["metrics"]
        cells = [format_value(m.get(key), percent) for key, _, percent in columns]
        lines.append(f"| {r.policy} | {r.seed} | " + " | ".join(cells) + f" | {r.path} |")
    return "\n".join(lines) + "\n"


def format_value(value: float | None, percent: bool) -> str:
    """'97.50' (percent) or '0.1234'; '-' when missing."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


LABEL_COLUMNS = 16  # a variant's name wraps at this width under its point and in the legend


def wrap_label(name: str, columns: int = LABEL_COLUMNS) -> str:
    """A variant name on lines of at most `columns` characters where it can break (after a
    comma, around '=', '-' or '_'; a longer word is split), so that long sweep names stay
    under their own point."""
    words = re.split(r"(?<=[,=_\-])|\s+", name)
    lines, line = [], ""
    for word in (w for w in words if w):
        while len(word) > columns:  # an unbreakable run of characters
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:columns])
            word = word[columns:]
        joined = f"{line} {word}" if line and not line.endswith((",", "=", "_", "-")) else line + word
        if len(joined) > columns and line:
            lines.append(line)
            line = word
        else:
            line = joined
    if line:
        lines.append(line)
    return "\n".join(lines)


def plot_comparison(path: Path, benchmark: str, summaries: Sequence[PolicySummary],
                    records: Sequence[RunRecord]) -> None:
    """PNG: the headline test metric per policy (mean ± std, seeds as dots) and mean
    validation curves (`comparison_figure`)."""
    import matplotlib.pyplot as plt

    fig = comparison_figure(benchmark, summaries, records)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_bytes(Path(path), buffer.getvalue())


def comparison_figure(benchmark: str, summaries: Sequence[PolicySummary], records: Sequence[RunRecord]) -> Any:
    """The comparison's matplotlib figure: the headline test metric per variant (left; names
    wrapped by `wrap_label`, the panel widened with the number of variants) and the mean
    validation curves (right; the legend below the panel when it has many entries)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    kind = summaries[0].kind
    metric, title, percent = summaries[0].metrics[0]
    scale = 100.0 if percent else 1.0
    unit = " (%)" if percent else ""
    curve_key = kind.validation_curve
    labels = [wrap_label(s.policy) for s in summaries]
    label_lines = max(label.count("\n") + 1 for label in labels)
    # each variant gets 1.1 inches of the left panel (room for LABEL_COLUMNS characters at 10 pt)
    left_width = max(5.5, 1.1 * len(summaries) + 1.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(left_width + 5.5, 4.2 + 0.18 * label_lines),
                                      gridspec_kw={"width_ratios": [left_width, 5.5]})
    # Points with error bars, not bars: a bar's length reads as the value, so a bar chart
    # must start at 0, where the differences between policies vanish; points may start at a
    # floor near the values without overstating them.
    for i, s in enumerate(summaries):
        mean, std = s.stat(metric)
        left.errorbar(i, scale * mean, yerr=scale * std if len(s.seeds) > 1 else None, fmt="o", capsize=5,
                      color=f"C{i}", markersize=8)
        left.scatter([i] * len(s.seeds), [scale * v for v in s.values[metric]], color="black", s=12, zorder=3)
    # each point's n (its seeds) under its name: a mean of one seed is not a mean of five
    left.set_xticks(range(len(summaries)), [f"{label}\n(n={len(s.seeds)})" for label, s in zip(labels, summaries)],
                    fontsize=9)
    left.set_xlim(-0.6, len(summaries) - 0.4)
    better = "higher" if kind.higher_is_better else "lower"
    left.set_ylabel(f"{title}{unit}, {better} is better")
    spread = "mean ± std over seeds, seeds as dots" if any(len(s.seeds) > 1 for s in summaries) else \
        "one seed each: no spread"
    left.set_title(f"{benchmark}: {title} ({spread})", fontsize=10)
    left.grid(axis="y", alpha=0.3)
    all_values = [scale * v for s in summaries for v in s.values[metric]]
    all_values += [scale * (mean + sign * std) for s in summaries for mean, std in [s.stat(metric)] for sign in (-1, 1)
                   if len(s.seeds) > 1]
    left.set_ylim(*honest_range([v for v in all_values if v == v], percent))
    # Few-shot runs also show the pre-update score on meta-train tasks (dashed): high values
    # there mean the model answers without reading the support set (memorization).
    curve_keys = [(curve_key, "-", "")]
    if kind.pre_update_curve is not None:
        curve_keys.append((kind.pre_update_curve, "--", " train pre-update"))
    plotted: set[int] = set()
    dashed = False  # a learner without pre-update scores (ProtoNets) draws no dashed curve
    for i, s in enumerate(summaries):
        for key, style, suffix in curve_keys:
            curves = []
            for r in records:
                if r.policy == s.policy:
                    epochs = [x for x in RunDirectory(r.path).read_metrics() if x.get("kind") == "epoch" and key in x]
                    curves.append({x["epoch"]: scale * x[key] for x in epochs})
            common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if common:
                right.plot(common, [sum(c[e] for c in curves) / len(curves) for e in common], style, marker=".",
                           label=wrap_label(s.policy + suffix, 2 * LABEL_COLUMNS), color=f"C{i}")
                plotted.update(common)
                dashed = dashed or style == "--"
    right.set_xlabel("epoch")
    if 0 < len(plotted) <= 12:  # whole epochs only: every epoch a tick, or integer ticks
        right.set_xticks(sorted(plotted))
    else:
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel(curve_key.replace("_", " ") + unit)
    title = curve_key.replace("_", " ") + (" (solid), train pre-update (dashed)" if dashed else "")
    right.set_title(f"{title}, mean over seeds", fontsize=10)
    if plotted:
        right.legend(fontsize=8)
    fig.tight_layout()
    return fig


MIN_PERCENT_SPAN = 10.0  # percentage points: a y axis never zooms in further on accuracies
MIN_RELATIVE_SPAN = 0.2  # other metrics (MSE): a span of at least 20% of the largest value


def honest_range(values: Sequence[float], percent: bool) -> tuple[float, float]:
    """A y range for the comparison's points: every value (and mean ± std) inside with a
    margin, at least MIN_PERCENT_SPAN points for percentages (within [0, 100]) or
    MIN_RELATIVE_SPAN of the largest magnitude for other metrics (from 0 when every value is
    non-negative and they differ by 20% or more), so that one seed's point or a 0.2-point
    difference does not fill the axis."""
    if not values:
        return (0.0, 100.0) if percent else (0.0, 1.0)
    low, high = min(values), max(values)
    minimum = MIN_PERCENT_SPAN if percent else MIN_RELATIVE_SPAN * max(abs(low), abs(high), 1e-12)
    span = max(high - low, minimum)
    middle = (low + high) / 2
    low, high = middle - 0.6 * span, middle + 0.6 * span
    if percent:  # shift, not clip, at the ends: the span stays
        low, high = (low - (high - 100.0), 100.0) if high > 100.0 else (low, high)
        low, high = (0.0, high - low) if low < 0.0 else (low, high)
        return max(0.0, low), min(100.0, high)
    if min(values) >= 0 and min(values) < 0.8 * max(values):  # non-negative values that differ by 20%+: from 0
        low = 0.0
    return low, high


def write_comparison(out: Path, benchmark: str, records: Sequence[RunRecord]) -> dict[str, Path]:
    """Write comparison.csv, comparison.md and comparison.png into `out`; returns their paths."""
    summaries = summarize(records)
    out = Path(out)
    remove_stale_temporary_files(out)  # of a table write killed midway
    paths = {"csv": out / "comparison.csv", "md": out / "comparison.md", "png": out / "comparison.png"}
    write_text(paths["csv"], comparison_csv(summaries))
    write_text(paths["md"], comparison_markdown(benchmark, summaries, records))
    plot_comparison(paths["png"], benchmark, summaries, records)
    return paths
