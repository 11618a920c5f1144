"""Result rows → the paper's tables: mean ± 95 % CI over seeds, the model before the edit and the
retrained model as reference rows, a method marked best only where it is significantly best, and
paired comparisons on the same seeds.

Each column has a direction (``max``: higher is better, ``min``: lower is better); for losses
on the edited data, higher is better (the retrained model never saw those examples).
"""

from __future__ import annotations

import math

import pandas as pd

from . import cost
from .columns import Column
from .methods import METHODS
from .oracle import COLUMNS as ORACLE_COLUMNS
from .oracle import OF_THE_ORACLE
from .rows import PREFIX
from .rows import column as row_column
from .selectors import SELECTORS
from .stats import mean_ci, paired, significantly_best
from .tasks import TASKS

BEFORE = ("before", "before the edit")  # the reference line of the model before the edit


OF_THE_ORACLE_ITSELF = {"gap_to_retrain": 0.0, **OF_THE_ORACLE, **cost.OF_THE_ORACLE}
PER_RUN = {c.metric for c in cost.COLUMNS}  # one value per run, whichever iterate is reported


def table_columns(task: str) -> tuple[Column, ...]:
    """A task's table: its own columns, the oracle-relative ones of :mod:`gif_bench.oracle`, then
    the cost of :mod:`gif_bench.cost`."""
    return (*TASKS[task].columns, *ORACLE_COLUMNS, *cost.COLUMNS)


def edit_methods() -> list[str]:
    """The methods that edit the trained model, in registry order (every one but the oracle)."""
    return [m.name for m in METHODS.values() if not m.oracle]


def oracle() -> str:
    """The method whose result is the retrained model (the table's last reference line)."""
    return next(m.name for m in METHODS.values() if m.oracle)


def label(method: str) -> str:
    """A method's (or the ``before`` line's) label in tables and figures."""
    if method == BEFORE[0]:
        return BEFORE[1]
    return METHODS[method].label if method in METHODS else method


def selector_label(selector: str) -> str:
    spec = SELECTORS[selector] if selector in SELECTORS else None
    return spec.label if spec is not None and spec.label else selector


def summarize(rows: pd.DataFrame, task: str, iterate: str = "best") -> pd.DataFrame:
    """One line per (method, selector, MR): ``<metric>_mean``, ``<metric>_std``, ``seeds``,
    ``collapsed`` (runs stopped as a collapse, see ``update.max_val_drop``); a ``before`` line
    first and the oracle's (retraining's) line last; ``best`` lists the metrics whose best value
    (among the edit methods) that line holds.

    ``iterate``: ``best`` (the iterate chosen on validation, the paper's protocol) or
    ``final`` (the last one).
    """
    columns = table_columns(task)
    metrics = [c.metric for c in columns]
    prefix = PREFIX[iterate]
    reference = oracle()
    edits = rows[rows["method"] != reference]
    per_seed = rows.groupby("seed").first()  # every row of a seed has the same before_ and retrain_
    per_seed = per_seed.assign(seed=per_seed.index)
    lines = [_line(BEFORE[0], "", math.nan, per_seed, metrics, PREFIX["before"])]
    for (method, selector, mr), group in edits.groupby(["method", "selector", "mr"], sort=False):
        lines.append(_line(method, selector, mr, group, metrics, prefix))
    lines.append(_line(reference, "", math.nan, per_seed, metrics, PREFIX["retrain"], reference=True))
    table = pd.DataFrame([line for line, _ in lines])
    by_seed = [values for _, values in lines]
    order = {m: i for i, m in enumerate((BEFORE[0], *edit_methods(), reference))}
    table = table.sort_values(["method", "selector", "mr"], key=lambda c: c.map(order) if c.name == "method" else c)
    by_seed = [by_seed[i] for i in table.index]
    table = table.reset_index(drop=True)
    table["best"], table["tied"] = _best(table, columns, by_seed)
    return table


def _line(
    method: str, selector: str, mr: float, group: pd.DataFrame, metrics, prefix: str, reference: bool = False
) -> tuple[dict, dict[str, pd.Series]]:
    """The line's cells, and each metric's values indexed by seed (for the paired tests)."""
    line = {"method": method, "selector": selector, "mr": mr, "seeds": len(group)}
    edited = (
        prefix in (PREFIX["final"], PREFIX["best"]) and not reference and "stop_reason" in group
    )  # reference lines edit nothing
    line["collapsed"] = int((group["stop_reason"] == "collapse").sum()) if edited else math.nan
    by_seed: dict[str, pd.Series] = {}
    for m in metrics:
        col = f"{prefix}{m}"
        if m == "gap_to_retrain":  # best_gap_to_retrain / gap_to_retrain; the retrained model's is 0
            col = {PREFIX[m]: row_column("gap_to_retrain", m) for m in ("final", "best")}.get(prefix, "")
        elif m in PER_RUN:
            col = m if prefix in (PREFIX["final"], PREFIX["best"]) else ""
        values = pd.to_numeric(group[col], errors="coerce") if col in group else pd.Series(dtype=float)
        if reference and m in OF_THE_ORACLE_ITSELF:
            values = pd.Series([OF_THE_ORACLE_ITSELF[m]] * len(group))
        line[f"{m}_mean"], line[f"{m}_ci"] = mean_ci(values.to_numpy(dtype=float) if len(values) else [])
        line[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        seeds = group["seed"].to_numpy() if "seed" in group else range(len(values))
        by_seed[m] = pd.Series(values.to_numpy(dtype=float), index=list(seeds)[: len(values)])
    return line, by_seed


def _best(table: pd.DataFrame, columns, by_seed: list[dict[str, pd.Series]]) -> tuple[list[str], list[str]]:
    """Per line, the metrics it is significantly best in (:func:`stats.significantly_best`,
    paired on seeds, among the edit methods), and those it shares an unresolved top with."""
    edits = [i for i in table.index if table.loc[i, "method"] in edit_methods()]
    best: list[list[str]] = [[] for _ in range(len(table))]
    tied: list[list[str]] = [[] for _ in range(len(table))]
    for metric, better in ((c.metric, c.better) for c in columns if c.better is not None):
        winner, ties = significantly_best({i: by_seed[i][metric] for i in edits}, better)
        if winner is not None:
            best[winner].append(metric)
        for i in ties:
            tied[i].append(metric)
    return [",".join(m) for m in best], [",".join(m) for m in tied]


def _cell(mean: float, ci: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _digits(metric: str) -> int:
    return 3 if metric.endswith("loss") or metric == "f1" or metric.startswith("kl_") else 2


def _label(line: pd.Series) -> tuple[str, str]:
    name = label(line["method"])
    mr = "–" if math.isnan(line["mr"]) else f"{100 * line['mr']:.3g} %"
    return name, mr


TIE = " ≈"  # a cell in an unresolved top: no method is significantly better than the others there


def formatted(table: pd.DataFrame, task: str, bold: tuple[str, str]) -> pd.DataFrame:
    """The table as strings: 'mean ± half-width of the 95 % CI' cells (n = the ``seeds``
    column), the significantly best wrapped in ``bold`` (open, close), the tied top marked ≈."""
    out = []
    for _, line in table.iterrows():
        name, mr = _label(line)
        collapsed = "–" if pd.isna(line.get("collapsed", math.nan)) else str(int(line["collapsed"]))
        cells = {"method": name, "MR": mr, "seeds": str(line["seeds"]), "collapsed": collapsed}
        best = set(filter(None, line["best"].split(",")))
        tied = set(filter(None, str(line.get("tied", "")).split(",")))
        for metric, better in ((c.metric, c.better) for c in table_columns(task)):
            text = _cell(line[f"{metric}_mean"], line[f"{metric}_ci"], _digits(metric))
            text = f"{bold[0]}{text}{bold[1]}" if metric in best else text + (TIE if metric in tied else "")
            arrow = {"max": " ↑", "min": " ↓", None: ""}[better]
            cells[f"{metric}{arrow}"] = text
        out.append(cells)
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, task: str) -> str:
    return formatted(table, task, ("**", "**")).to_markdown(index=False)


_TEX = (
    ("_", r"\_"),
    ("%", r"\%"),
    ("&", r"\&"),
    ("±", r"$\pm$"),
    ("≈", r"$\approx$"),
    ("↑", r"$\uparrow$"),
    ("↓", r"$\downarrow$"),
)


def _tex(text: str) -> str:
    for plain, tex in _TEX:
        text = text.replace(plain, tex)
    return text


def to_latex(table: pd.DataFrame, task: str) -> str:
    text = formatted(table, task, ("\x00", "\x01")).map(_tex)  # markers for the bold survive the escaping
    text = text.map(lambda s: s.replace("\x00", r"\textbf{").replace("\x01", "}"))
    text.columns = [_tex(c) for c in text.columns]
    return text.to_latex(index=False, escape=False, column_format="ll" + "r" * (len(text.columns) - 2))


def _named(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(selector=table["selector"].map(selector_label))


def selector_table_markdown(table: pd.DataFrame) -> str:
    """:func:`selector_table` as Markdown, the selectors by name."""
    return _named(table).to_markdown(index=False, floatfmt=".2f")


def selector_table_latex(table: pd.DataFrame) -> str:
    """:func:`selector_table` as LaTeX, the selectors by name."""
    text = _named(table).map(lambda v: f"{v:.2f}" if isinstance(v, float) else _tex(str(v)))
    text.columns = [_tex(c) for c in text.columns]
    return text.to_latex(index=False, escape=False, column_format="l" + "r" * (len(text.columns) - 1))


def selector_stats(rows: pd.DataFrame, iterate: str = "best", metric: str = "test_acc") -> pd.DataFrame:
    """GIF's ``metric`` per (selector, MR): ``mean``, ``std``, ``ci`` (half-width of the 95 %
    Student-t interval) and ``n`` over seeds. The MR-100 % run (selector ``all``, which is every
    selector's choice there) is repeated for each selector."""
    col = row_column(metric, iterate)
    gif = rows[rows["method"] == "gif"].assign(value=lambda d: pd.to_numeric(d[col], errors="coerce"))
    full = gif[gif["selector"] == "all"]
    parts = gif[gif["selector"] != "all"]
    both = pd.concat([parts, *(full.assign(selector=s) for s in parts["selector"].unique())])
    groups = both.groupby(["selector", "mr"])["value"]
    out = groups.agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    out["ci"] = groups.apply(lambda v: mean_ci(v)[1])
    return out.reset_index()


def selector_table(
    rows: pd.DataFrame, iterate: str = "best", metric: str = "test_acc", with_ci: bool = False
) -> pd.DataFrame:
    """Figure 3 as a table: one line per selector, one column per MR (%), the mean of ``metric``
    over seeds (see :func:`selector_stats`); ``with_ci``: cells ``mean ± CI (n)`` as text."""
    stats = selector_stats(rows, iterate, metric)
    if with_ci:
        stats = stats.assign(
            mean=[f"{m:.2f} ± {c:.2f} (n={n})" for m, c, n in zip(stats["mean"], stats["ci"], stats["n"])]
        )
    table = stats.pivot(index="selector", columns="mr", values="mean")
    table.columns = [f"{100 * mr:.3g} %" for mr in table.columns]
    return table.reset_index()


def _edit_groups(rows: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    edits = rows[rows["method"].isin(edit_methods())]
    return {key: g.set_index("seed") for key, g in edits.groupby(["method", "selector", "mr"], sort=False)}


def _pairs(groups: dict, pairs: list[tuple[tuple, tuple]], task: str, iterate: str) -> pd.DataFrame:
    """For each (line, against) pair of (method, selector, MR) keys, per directed metric of
    ``task``: ``n`` common seeds, the mean difference (line − against), its 95 % CI, the paired
    t-test's p and, from 6 pairs, Wilcoxon's (:func:`stats.paired`)."""
    prefix = PREFIX[iterate]
    out = []
    for key, base_key in pairs:
        for column in (c for c in table_columns(task) if c.better is not None):
            col = "best_gap_to_retrain" if column.metric == "gap_to_retrain" and prefix else prefix + column.metric
            if col not in groups[key] or col not in groups[base_key]:
                continue
            values = pd.to_numeric(groups[key][col], errors="coerce")
            result = paired(values, pd.to_numeric(groups[base_key][col], errors="coerce"))
            where = {"method": key[0], "selector": key[1], "mr": key[2]}
            against = f"{label(base_key[0])} {base_key[2]:g}"
            verdict = _verdict(result.mean_diff, result.p_t, column.better)
            out.append({**where, "against": against, "metric": column.metric, **vars(result), "verdict": verdict})
    return pd.DataFrame(out)


def _verdict(mean_diff: float, p: float, better: str, alpha: float = 0.05) -> str:
    """``better`` / ``worse`` (the line against the other, at p < ``alpha``) or ``tie``."""
    if not p < alpha or mean_diff == 0:
        return "tie"
    return "better" if (mean_diff > 0) == (better == "max") else "worse"


def _table_keys(rows: pd.DataFrame, task: str, iterate: str, groups: dict) -> list[tuple]:
    table = summarize(rows, task, iterate)
    keys = [(r["method"], r["selector"], r["mr"]) for _, r in table.iterrows()]
    return [k for k in keys if k in groups]


def paired_against(rows: pd.DataFrame, task: str, iterate: str = "best", against: str = "gif") -> pd.DataFrame:
    """Every edit line against ``against``'s (its first line, e.g. GIF at the smallest MR of the
    sweep) on the same seeds, per directed metric (see :func:`_pairs`)."""
    groups = _edit_groups(rows)
    base_keys = [k for k in groups if k[0] == against]
    if not base_keys:
        return pd.DataFrame()
    base_key = min(base_keys, key=lambda k: k[2])
    keys = _table_keys(rows, task, iterate, groups)
    return _pairs(groups, [(k, base_key) for k in keys if k != base_key], task, iterate)


def changed_verdicts(published: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    """The verdicts against GIF (:func:`paired_against`) that differ between one experiment's
    runs at the published recipes and at the tuned ones, per method and metric (a method's MR
    may differ between the two): each recipe's verdict, mean difference and p. A comparison one
    side could not make (a metric its rows lack) is left out."""
    keys, kept = ["method", "metric"], ["verdict", "mean_diff", "p_t"]
    if published.empty or tuned.empty:
        return pd.DataFrame(columns=[*keys, *(f"{k}_{r}" for r in ("published", "tuned") for k in kept)])
    both = published[keys + kept].merge(tuned[keys + kept], on=keys, suffixes=("_published", "_tuned"))
    measured = both["mean_diff_published"].notna() & both["mean_diff_tuned"].notna()  # rows older than a metric lack it
    return both[measured & (both["verdict_published"] != both["verdict_tuned"])].reset_index(drop=True)


def paired_in_order(rows: pd.DataFrame, task: str, iterate: str = "best") -> pd.DataFrame:
    """Each method's first line (smallest MR) against the next method's, in the table's order
    (the order methods are registered in: the paper's, GIF > freezing > projecting > Koh &
    Liang > second-order; the other families are left out), on the same seeds, per directed
    metric (see :func:`_pairs`). A
    positive difference on a ``max`` metric, or a negative one on a ``min`` metric, at p < 0.05
    is the paper's order holding; the opposite sign at p < 0.05 is a reversal."""
    groups = _edit_groups(rows)
    firsts: dict[str, tuple] = {}
    for key in _table_keys(rows, task, iterate, groups):
        if key[0] in METHODS and METHODS[key[0]].family == "paper":
            firsts.setdefault(key[0], key)
    keys = list(firsts.values())
    return _pairs(groups, list(zip(keys, keys[1:])), task, iterate)


def selector_pairs(
    rows: pd.DataFrame, iterate: str = "best", metric: str = "test_acc", against: str = "random"
) -> pd.DataFrame:
    """The selector study's paired comparisons: at each MR below 100 %, every selector's GIF
    ``metric`` against ``against``'s on the same seeds (the paper: highest-k > random >
    lowest-k), as :func:`stats.paired` gives it."""
    col = row_column(metric, iterate)
    gif = rows[(rows["method"] == "gif") & (rows["selector"] != "all")]
    out = []
    for mr, at_mr in gif.groupby("mr"):
        by = {s: pd.to_numeric(g.set_index("seed")[col], errors="coerce") for s, g in at_mr.groupby("selector")}
        if against not in by:
            continue
        for selector in (s for s in SELECTORS if s in by and s != against):
            result = paired(by[selector], by[against])
            verdict = _verdict(result.mean_diff, result.p_t, "max")
            out.append(
                {
                    "selector": selector,
                    "mr": mr,
                    "against": against,
                    "metric": metric,
                    **vars(result),
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(out)
