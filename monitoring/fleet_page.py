"""The fleet's pages: ``fleet.html`` (every model and agent in every environment, side by side) and
``model-<name>.html`` per model (versions with lineage, the rollout timeline with its gate results
and rollbacks, the audit trail, two versions compared), rendered from ``monitoring.fleet``'s views.

Like the dashboard preview (``preview_render``), each page is one self-contained HTML file: no
script, font, stylesheet or image from anywhere, and a Content-Security-Policy that forbids them.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from typing import Any, Sequence

from stagewise.monitoring.fleet import EnvironmentView

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f2f3f3;color:#16191f;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
header{padding:14px 24px;background:#232f3e;color:#fff}header h1{margin:0;font-size:20px}header p{margin:2px 0 0;color:#d5dbdb;font-size:13px}
main{padding:16px 24px;max-width:1600px;margin:0 auto}
section{background:#fff;border:1px solid #d5dbdb;border-radius:4px;padding:12px 16px;margin:0 0 16px}
h2{font-size:16px;margin:0 0 8px}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #eaeded;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1d8102}.bad{color:#d13212}.warn{color:#8a6d3b}.dim{color:#687078}
.cell div{margin:0 0 2px}.tag{display:inline-block;border-radius:3px;padding:0 5px;font-size:12px;background:#eaeded}
a{color:#0073bb}code{background:#f2f3f3;padding:0 3px;border-radius:3px;font-size:12px}
svg.timeline{width:100%;height:220px;display:block}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _page(title: str, subtitle: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{_CSP}"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body><header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header><main>{body}</main></body></html>")


def page_name(model: str) -> str:
    """File name of a model's page: ``model-<name>.html`` (other characters as ``_``)."""
    return "model-" + re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".html"


def _path_text(path: Sequence[dict[str, Any]]) -> str:
    return " → ".join(f"{p.get('environment')} v{p.get('version')}" for p in path)


def _serving_text(model: dict[str, Any]) -> list[str]:
    sv, r = model["serving"], model["rollout"]
    lines = [f"champion v{sv['champion']}" if sv["champion"] is not None else "no champion"]
    if sv["challenger"] is not None and r:
        where = "shadow" if r["shadow"] else f"{r['weight']:g}% (step {r['step'] + 1} of {len(r['plan'])}: {r['plan']})"
        lines.append(f"challenger v{sv['challenger']} at {where}" + (" · paused" if r["paused"] else ""))
    return lines


def _gates_text(gates: dict[str, Any] | None) -> str:
    if not gates:
        return "no gate evaluated yet"
    parts = [f"{g['metric']}={'-' if g['value'] is None else format(g['value'], '.4g')} {g['outcome']}" for g in gates["gates"]]
    return f"{gates['action']}: " + ", ".join(parts)


def cell_lines(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``(css class, text)`` lines summarising one model in one environment (terminal and page)."""
    lines = [("", t) for t in _serving_text(model)]
    lines.append(("dim", _gates_text(model["last_gates"])))
    run = model.get("last_run")
    if model["kind"] == "model":
        lines.append(("ok" if run and run["outcome"] == "succeeded" else "bad" if run else "dim",
                      f"last run {run['outcome']} (hourly bucket from {run['hour'][:16]} UTC)" if run else "no run in the window"))
        d = model.get("drift") or {}
        share = d.get("drifted_share")
        lines.append(({"ok": "ok", "drifting": "bad"}.get(d.get("status"), "dim"),
                      f"drift {d.get('status')}" + (f": {share:.0%} of features" if share is not None else "")
                      + (f", {d['alerts']} alerts" if d.get("alerts") else "")))
    alarms = model.get("alarms") or []
    lines.append(("bad" if alarms else "ok", f"{len(alarms)} open alarm" + ("s" if len(alarms) != 1 else "")
                  + (": " + ", ".join(a["name"] for a in alarms) if alarms else "")))
    for role, path in model["paths"].items():
        lines.append(("dim", f"{role}: {_path_text(path)}"))
    return lines


def render_fleet(views: Sequence[EnvironmentView], generated: datetime) -> str:
    """``fleet.html``: one row per model or agent, one column per environment."""
    names = sorted({n for v in views for n in v.models})
    head = "".join(f"<th>{_e(v.environment)} <span class='dim'>account {_e(v.account_id)}</span></th>" for v in views)
    rows = []
    for name in names:
        kind = next(v.models[name]["kind"] for v in views if name in v.models)
        cells = []
        for v in views:
            if v.error:
                cells.append(f"<td class='bad'>not readable: {_e(v.error)}</td>")
            elif name not in v.models:
                cells.append("<td class='dim'>not registered here</td>")
            else:
                body = "".join(f"<div class='{c}'>{_e(t)}</div>" for c, t in cell_lines(v.models[name]))
                cells.append(f"<td class='cell' data-env='{_e(v.environment)}'>{body}</td>")
        rows.append(f"<tr data-model='{_e(name)}'><th><a href='{_e(page_name(name))}'>{_e(name)}</a> "
                    f"<span class='tag'>{_e(kind)}</span></th>{''.join(cells)}</tr>")
    table = f"<section><h2>Models and agents</h2><table><tr><th>name</th>{head}</tr>{''.join(rows)}</table></section>"
    return _page("Stagewise fleet", f"{len(views)} environments, {len(names)} models and agents · read as each account's "
                 f"reader role · {generated.isoformat(timespec='seconds')}", table)


def _timeline_svg(timeline: list[dict[str, Any]]) -> str:
    """The challenger's traffic weight after each rollout event (a step line, 0-100 %), a dot per
    gate evaluation coloured by its worst outcome, a red line and label at each rollback."""
    if not timeline:
        return "<p class='dim'>no rollout yet</p>"
    times = [datetime.fromisoformat(t["at"]).timestamp() for t in timeline]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    w, h, left, right, top, bottom = 1000, 200, 44, 16, 12, 28

    def x(t: float) -> float:
        return left + (t - t0) / span * (w - left - right)

    def y(weight: float) -> float:
        return top + (100 - weight) / 100 * (h - top - bottom)

    points, marks = [], []
    for t, ev in zip(times, timeline):
        points.append(f"{x(t):.1f},{y(ev['weight']):.1f}")
        if ev["rolled_back"]:
            marks.append(f"<line class='rollback' x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{top}' y2='{h - bottom}' stroke='#d13212' "
                         f"stroke-dasharray='4 3'/><text x='{x(t) + (-3 if x(t) > w * 0.8 else 3):.1f}' y='{top + 10}' "
                         f"text-anchor='{'end' if x(t) > w * 0.8 else 'start'}' fill='#d13212' font-size='11'>rollback "
                         f"v{_e(ev['version'])}</text>")
        if ev["gates"]:
            outcomes = {g["outcome"] for g in ev["gates"]}
            color = "#d13212" if "fail" in outcomes else "#8a6d3b" if "inconclusive" in outcomes else "#1d8102"
            title = _e("; ".join(f"{g['metric']}={g['value']} {g['outcome']}" for g in ev["gates"]))
            marks.append(f"<circle class='gate' cx='{x(t):.1f}' cy='{y(ev['weight']):.1f}' r='4' fill='{color}'><title>{title}</title></circle>")
    step = []
    for i, p in enumerate(points):  # hold each weight until the next event
        if i:
            step.append(f"{p.split(',')[0]},{points[i - 1].split(',')[1]}")
        step.append(p)
    axis = "".join(f"<text x='{left - 6}' y='{y(v) + 4:.1f}' text-anchor='end' font-size='11' fill='#687078'>{v}%</text>"
                   f"<line x1='{left}' x2='{w - right}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#eaeded'/>" for v in (0, 50, 100))
    labels = (f"<text x='{left}' y='{h - 8}' font-size='11' fill='#687078'>{_e(timeline[0]['at'][:19])}</text>"
              f"<text x='{w - right}' y='{h - 8}' font-size='11' fill='#687078' text-anchor='end'>{_e(timeline[-1]['at'][:19])}</text>")
    return (f"<svg class='timeline' viewBox='0 0 {w} {h}' preserveAspectRatio='none' role='img' aria-label='rollout timeline'>"
            f"{axis}<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='{' '.join(step)}'/>{''.join(marks)}{labels}</svg>")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><tr>{head}</tr>{body}</table>"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else _e(v)


def _versions(model: dict[str, Any]) -> str:
    rows = []
    for v in model["versions"]:
        val = v["validation"]
        evals = "; ".join(f"{'passed' if e.get('passed') else 'FAILED'} {((e.get('summary') or {}).get('passed'))}/"
                          f"{((e.get('summary') or {}).get('cases'))} on {e.get('dataset')}" for e in v["evaluations"]) or "-"
        rows.append([f"v{v['version']}", _e(v["status"]), _e(v["stage"]), _e(v["created_at"][:19]),
                     f"<code>{_e((v['data_sha256'] or '-')[:16])}</code>",
                     ("passed" if val.get("success") else "-") + (f"<br><span class='dim'>{_e(val.get('result_uri'))}</span>" if val.get("result_uri") else ""),
                     _e(json.dumps(v["hyperparameters"], sort_keys=True)) if v["hyperparameters"] else "-",
                     " ".join(f"{_e(k)}={_num(x)}" for k, x in v["metrics"].items()) or "-", _e(evals),
                     _e(_path_text(v["path"]))])
    return _table(("version", "status", "stage", "created (UTC)", "data sha256", "validation", "hyperparameters", "metrics",
                   "evaluation", "promotion path"), rows)


def _comparison(cmp: dict[str, Any] | None) -> str:
    if not cmp:
        return "<p class='dim'>one version only: nothing to compare</p>"
    a, b = cmp["a"], cmp["b"]

    def side(rows: list[dict[str, Any]]) -> list[list[str]]:
        return [[_e(r["name"]), _num(r["a"]), _num(r["b"]), _num(r["delta"])] for r in rows]

    parts = [f"<h3>Metrics</h3>{_table(('metric', f'v{a}', f'v{b}', 'b - a'), side(cmp['metrics']))}",
             f"<h3>Hyperparameters</h3>{_table(('parameter', f'v{a}', f'v{b}', 'b - a'), side(cmp['hyperparameters']))}",
             "<h3>Feature importance (share of total gain)</h3>"
             + _table(("feature", f"v{a}", f"v{b}"), [[_e(r["feature"]), f"{r['a']:.1%}", f"{r['b']:.1%}"] for r in cmp["importance"]]),
             "<h3>Baseline (training data) differences</h3>"
             + _table(("feature", f"mean v{a}", f"mean v{b}", f"nulls v{a}", f"nulls v{b}"),
                      [[_e(r["feature"]), _num(r["mean_a"]), _num(r["mean_b"]), _num(r["null_a"]), _num(r["null_b"])] for r in cmp["baseline"]])]
    return "".join(parts)


def render_model(name: str, views: Sequence[EnvironmentView], comparisons: dict[str, dict[str, Any] | None],
                 generated: datetime) -> str:
    """``model-<name>.html``: per environment its versions with lineage, rollout timeline, two
    versions compared (``comparisons``: environment -> ``fleet.compare_versions`` or None) and the
    audit trail."""
    sections = ["<p><a href='fleet.html'>← the fleet</a></p>"]
    for v in views:
        model = v.models.get(name)
        if model is None:
            sections.append(f"<section data-env='{_e(v.environment)}'><h2>{_e(v.environment)}</h2><p class='dim'>"
                            f"{'not readable: ' + _e(v.error) if v.error else 'not registered here'}</p></section>")
            continue
        audit = _table(("rev", "at (UTC)", "actor", "action", "version", "reason"),
                       [[_e(a["revision"]), _e(a["at"][:19]), _e(a["actor"]), _e(a["action"]), _e(a["version"]), _e(a["reason"])]
                        for a in model["audit"]])
        serving = " · ".join(_serving_text(model))
        sections.append(
            f"<section data-env='{_e(v.environment)}'><h2>{_e(v.environment)} <span class='dim'>account {_e(v.account_id)}</span></h2>"
            f"<p>{_e(serving)}</p><h3>Versions</h3>{_versions(model)}"
            f"<h3>Rollout timeline (challenger traffic %, gate evaluations, rollbacks)</h3>{_timeline_svg(model['timeline'])}"
            f"<h3>Two versions compared</h3>{_comparison(comparisons.get(v.environment))}"
            f"<h3>Audit trail</h3>{audit}</section>")
    return _page(f"{name}", f"model page · {len(views)} environments · {generated.isoformat(timespec='seconds')}", "".join(sections))
