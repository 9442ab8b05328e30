"""Rendering eval reports: the metric table, comparisons, the controllability matrix."""

from __future__ import annotations

from personadlg.cli._console import err, out, table


def render_report(result: dict) -> None:
    """Rich tables of an eval report (or of a --compare result)."""
    from rich.table import Table

    systems = result.get("systems") or {result.get("input", "generations"): result}
    names = list(next(iter(systems.values()))["metrics"])
    first = next(iter(systems.values()))
    t = Table(title=f"eval: {first['n']:,} generations", title_justify="left", header_style="bold")
    t.add_column("metric")
    for path in systems:
        t.add_column(str(path).rsplit("/", 1)[-1] if len(systems) > 1 else "value", justify="right")
    if len(systems) == 1:
        t.add_column("95% CI", justify="right")
    t.add_column("", justify="center")
    for name in names:
        m0 = first["metrics"][name]
        row = [name]
        for sys_ in systems.values():
            m = sys_["metrics"].get(name)
            row.append("-" if m is None or m["value"] is None else f"{m['value']:.2f}")
        if len(systems) == 1:
            ci = m0.get("ci95")
            row.append(f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        row.append("↑" if m0["higher_is_better"] else "↓")
        t.add_row(*row)
    for name, reason in first.get("skipped", {}).items():
        t.add_row(name, *(["skipped"] * len(systems)), *([reason] if len(systems) == 1 else []), "")
    out.print(t)
    render_judges(systems)
    render_comparisons(result)
    for name in names:
        by_attr = first["metrics"][name].get("by_attribute")
        if by_attr:
            out.print(
                table(
                    f"{name} by attribute",
                    ["attribute", "value"],
                    [[a, round(v, 2)] for a, v in by_attr.items()],
                )
            )
    sig = Table(title="signatures", title_justify="left", header_style="bold", show_lines=False)
    sig.add_column("metric")
    sig.add_column("signature", style="dim", overflow="fold")
    for name in names:
        sig.add_row(name, first["metrics"][name]["signature"])
    out.print(sig)
    render_agreement(systems)
    for alarm in [s.get("collapse") for s in systems.values()]:
        if alarm and alarm.get("alarm"):
            err.print(f"warning: {alarm['message']}", markup=False, highlight=False)
    by_target = first.get("by_target")
    if by_target:
        focus = [c for c in names if c.startswith("personalization")] or names[:4]
        rows = [
            [key, row["n"], *[None if row.get(c) is None else round(row[c], 2) for c in focus]]
            for key, row in by_target.items()
        ]
        title = "by target (every metric per target is in the --json / --out report)"
        out.print(table(title, ["target", "n", *focus], rows, justify_numbers=False))
        render_controllability(first)


def render_comparisons(result: dict) -> None:
    """--compare: each system's difference from the first, with paired 95% intervals and p-values."""
    comp = result.get("comparisons")
    if not comp:
        return
    rows = []
    for system, metrics in comp["vs_base"].items():
        for name, d in metrics.items():
            lo, hi = d["ci95"]
            rows.append(
                [
                    str(system).rsplit("/", 1)[-1],
                    name,
                    f"{d['diff']:+.2f}",
                    f"[{lo:+.2f}, {hi:+.2f}]",
                    f"{d['p']:.4f}",
                    d["method"],
                ]
            )
    base = str(comp["base"]).rsplit("/", 1)[-1]
    out.print(
        table(
            f"difference from {base} on the same {comp['n']:,} examples (paired)",
            ["system", "metric", "Δ", "95% CI", "p", "method"],
            rows,
            justify_numbers=False,
        )
    )


def render_controllability(report: dict) -> None:
    """The controllability matrix: per target combination, the accuracy on each targeted attribute."""
    from personadlg.data.attributes import parse_targets
    from personadlg.metrics.matrix import controllability_matrix

    attrs, rows = controllability_matrix(report)
    if not rows or len(attrs) < 2:
        return
    body = []
    for key, n, values, mean in rows:
        target = parse_targets(key)
        cells = [
            "" if values.get(a) is None else f"{target.get(a, '')} {values[a]:.1f}" for a in attrs
        ]
        body.append([*cells, n, "" if mean is None else f"{mean:.1f}"])
    out.print(
        table(
            "controllability: personalization-acc of each targeted aspect, per target combination",
            [*attrs, "n", "mean"],
            body,
            justify_numbers=False,
        )
    )


def render_judges(systems: dict) -> None:
    """The LLM judge: per judge metric, judged / failed / cached / sent and cost; then the failures."""
    many = len(systems) > 1
    rows = []
    notes = []
    for path, sys_ in systems.items():
        short = str(path).rsplit("/", 1)[-1]
        for name, m in sys_["metrics"].items():
            j = m.get("judge")
            if not isinstance(j, dict) or "judged" not in m:
                continue
            rows.append(
                [
                    *([short] if many else []),
                    name,
                    m["judged"],
                    m["failed"],
                    m["cached"],
                    m["requests"],
                    f"{m['cost']:.4f}",
                ]
            )
            where = f"{short}: " if many else ""
            if m["failed"]:
                why = ", ".join(f"{k} {v}" for k, v in (m.get("failed_by") or {}).items())
                more = m["failed"] - len(m["failed_ids"])
                notes.append(
                    f"{where}{name}: {m['failed']} failed ({why}), left out of the value: "
                    + ", ".join(m["failed_ids"])
                    + (f" and {more} more" if more > 0 else "")
                )
            if m.get("note"):
                notes.append(f"{where}{name}: {m['note']}")
            if m.get("stopped"):
                notes.append(f"{where}{name}: stopped early ({m['stopped']})")
    if not rows:
        return
    judge = next(
        m["judge"] for s in systems.values() for m in s["metrics"].values() if "judge" in m
    )
    out.print(
        table(
            f"LLM judge: {judge['model']} at {judge['base_url']} (sent = requests sent now, "
            "retries included; cached = answered from the judge cache)",
            [*(["system"] if many else []), "metric", "judged", "failed", "cached", "sent", "USD"],
            rows,
        )
    )
    for line in notes:
        out.print(line, markup=False, highlight=False)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def render_agreement(systems: dict) -> None:
    """Cohen's κ between the LLM judge's yes/no and the classifiers' argmax == target."""
    many = len(systems) > 1
    for path, sys_ in systems.items():
        a = sys_.get("agreement")
        if not a:
            continue
        rows = []
        for attr, e in [*a["by_attribute"].items(), ("pooled", a["pooled"])]:
            rows.append(
                [
                    attr,
                    e["n"],
                    _pct(e["agreement"]),
                    _pct(e["judge_yes"]),
                    _pct(e["classifier_yes"]),
                    "-" if e["kappa"] is None else f"{e['kappa']:.3f}",
                    e.get("kappa_note", ""),
                ]
            )
        short = str(path).rsplit("/", 1)[-1]
        out.print(
            table(
                f"agreement of {a['between'][0]} with {a['between'][1]}"
                + (f" ({short})" if many else "")
                + ": Cohen's κ on the (example, attribute) pairs both scored",
                ["attribute", "n", "agree %", "judge yes %", "classifier yes %", "κ", "note"],
                rows,
                justify_numbers=False,
            )
        )
