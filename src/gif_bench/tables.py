"""Result rows → the paper's tables: mean ± std over seeds, the model before the edit and the
retrained model as reference rows, the best method per column marked.

Each column has a direction (``max``: higher is better, ``min``: lower is better); for losses
on the edited data, higher is better (the retrained model never saw those examples).
"""

from __future__ import annotations

import math

import pandas as pd

from .oracle import COLUMNS as ORACLE_COLUMNS
from .oracle import OF_THE_ORACLE
from .registry import METHODS, SELECTORS, TASKS, Column

BEFORE = ("before", "before the edit")  # the reference line of the model before the edit


OF_THE_ORACLE_ITSELF = {"gap_to_retrain": 0.0, **OF_THE_ORACLE}


def table_columns(task: str) -> tuple[Column, ...]:
    """A task's table: its own columns, then the oracle-relative ones of :mod:`gif_bench.oracle`."""
    return (*TASKS[task].columns, *ORACLE_COLUMNS)


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
    prefix = {"best": "best_", "final": ""}[iterate]
    reference = oracle()
    edits = rows[rows["method"] != reference]
    per_seed = rows.groupby("seed").first()  # every row of a seed has the same before_ and retrain_
    lines = [_line(BEFORE[0], "", math.nan, per_seed, metrics, "before_")]
    for (method, selector, mr), group in edits.groupby(["method", "selector", "mr"], sort=False):
        lines.append(_line(method, selector, mr, group, metrics, prefix))
    lines.append(_line(reference, "", math.nan, per_seed, metrics, "retrain_", reference=True))
    table = pd.DataFrame(lines)
    order = {m: i for i, m in enumerate((BEFORE[0], *edit_methods(), reference))}
    table = table.sort_values(["method", "selector", "mr"], key=lambda c: c.map(order) if c.name == "method" else c)
    table = table.reset_index(drop=True)
    table["best"] = _best(table, columns)
    return table


def _line(
    method: str, selector: str, mr: float, group: pd.DataFrame, metrics, prefix: str, reference: bool = False
) -> dict:
    line = {"method": method, "selector": selector, "mr": mr, "seeds": len(group)}
    edited = prefix in ("", "best_") and not reference and "stop_reason" in group  # reference lines edit nothing
    line["collapsed"] = int((group["stop_reason"] == "collapse").sum()) if edited else math.nan
    for m in metrics:
        col = f"{prefix}{m}"
        if m == "gap_to_retrain":  # best_gap_to_retrain / gap_to_retrain; the retrained model's is 0
            col = {"best_": "best_gap_to_retrain", "": "gap_to_retrain"}.get(prefix, "")
        values = pd.to_numeric(group[col], errors="coerce") if col in group else pd.Series(dtype=float)
        if reference and m in OF_THE_ORACLE_ITSELF:
            values = pd.Series([OF_THE_ORACLE_ITSELF[m]] * len(group))
        line[f"{m}_mean"] = values.mean() if len(values) else math.nan
        line[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
    return line


def _best(table: pd.DataFrame, columns) -> list[str]:
    edits = table["method"].isin(edit_methods())
    marks: list[list[str]] = [[] for _ in range(len(table))]
    for metric, better in ((c.metric, c.better) for c in columns if c.better is not None):
        values = table.loc[edits, f"{metric}_mean"].dropna()
        if values.empty:
            continue
        target = values.max() if better == "max" else values.min()
        for i in values.index[values == target]:
            marks[i].append(metric)
    return [",".join(m) for m in marks]


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(metric: str) -> int:
    return 3 if metric.endswith("loss") or metric == "f1" or metric.startswith("kl_") else 2


def _label(line: pd.Series) -> tuple[str, str]:
    name = label(line["method"])
    mr = "–" if math.isnan(line["mr"]) else f"{100 * line['mr']:g} %"
    return name, mr


def formatted(table: pd.DataFrame, task: str, bold: tuple[str, str]) -> pd.DataFrame:
    """The table as strings: 'mean ± std' cells, the best wrapped in ``bold`` (open, close)."""
    out = []
    for _, line in table.iterrows():
        name, mr = _label(line)
        collapsed = "–" if pd.isna(line.get("collapsed", math.nan)) else str(int(line["collapsed"]))
        cells = {"method": name, "MR": mr, "seeds": str(line["seeds"]), "collapsed": collapsed}
        best = set(filter(None, line["best"].split(",")))
        for metric, better in ((c.metric, c.better) for c in table_columns(task)):
            text = _cell(line[f"{metric}_mean"], line[f"{metric}_std"], _digits(metric))
            arrow = {"max": " ↑", "min": " ↓", None: ""}[better]
            cells[f"{metric}{arrow}"] = f"{bold[0]}{text}{bold[1]}" if metric in best else text
        out.append(cells)
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame, task: str) -> str:
    return formatted(table, task, ("**", "**")).to_markdown(index=False)


_TEX = (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"))


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
    """GIF's ``metric`` per (selector, MR): ``mean`` and ``std`` over seeds. The MR-100 % run
    (selector ``all``, which is every selector's choice there) is repeated for each selector."""
    col = {"best": f"best_{metric}", "final": metric}[iterate]
    gif = rows[rows["method"] == "gif"].assign(value=lambda d: pd.to_numeric(d[col], errors="coerce"))
    full = gif[gif["selector"] == "all"]
    parts = gif[gif["selector"] != "all"]
    both = pd.concat([parts, *(full.assign(selector=s) for s in parts["selector"].unique())])
    return both.groupby(["selector", "mr"])["value"].agg(["mean", "std"]).reset_index()


def selector_table(rows: pd.DataFrame, iterate: str = "best", metric: str = "test_acc") -> pd.DataFrame:
    """Figure 3 as a table: one line per selector, one column per MR (%), the mean of ``metric``
    over seeds (see :func:`selector_stats`)."""
    table = selector_stats(rows, iterate, metric).pivot(index="selector", columns="mr", values="mean")
    table.columns = [f"{100 * mr:g} %" for mr in table.columns]
    return table.reset_index()
