"""report.html for one model version: one self-contained page (PNG plots inlined, no CDN, no script).

Why a page and not metrics.json alone: the person deciding "promote, hold or roll back" should
see at a glance how the candidate compares with the champion in every segment, why the gate
decided what it did, which features drive it and whether its scores are calibrated.

Why self-contained, with its own Content-Security-Policy: the page is served next to Airflow's UI
and its text comes from data (tenant ids, feature names). It loads nothing (no script, font, style
sheet or image from elsewhere; plots are data: PNGs) and says so in a <meta> CSP that allows only
its one <style> block (by hash) and data: images, so even a page served without a CSP header runs
nothing. A report is never worth a lost registration: a plot that fails becomes a note saying why,
and page() turns any other failure into a short page that says the report failed and why.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
from typing import Any, Callable, Mapping, Sequence

from feedloop.training.counterfactual import DEBIASED_METRICS, ESTIMATOR, ESTIMATORS, EXPLORE_METRICS, gated_estimate
from feedloop.training.evaluate import METRICS
from feedloop.quality.overview import FORCE_ACCEPTED, NOT_VALIDATED, QUARANTINED, STATES, WARNED_VIEW, DayStatus

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}.pass{color:#1a7f37}.fail{color:#c62828;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f4f4f4;padding:1px 4px}
td.text{text-align:left}"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CSP = f"default-src 'none'; img-src data:; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'"
_LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}

log = logging.getLogger(__name__)


def page(**inputs: Any) -> bytes:
    """render(**inputs), or, if that fails, a page that says the report failed and why (logged too)."""
    try:
        return render(**inputs)
    except Exception as exc:  # noqa: BLE001 - the version is registered with this page instead
        version = inputs.get("version", "?")
        log.exception("report.html of %s could not be rendered; registering a page that says why", version)
        return _document(f"feedloop ranker {version}", f"<h1>Ranker {_e(version)}</h1><p class='fail'>The report "
                         f"could not be rendered: {_e(type(exc).__name__)}: {_e(exc)}.</p><p>metrics.json, "
                         "gate.json and manifest.json of this version hold every figure it would have shown.</p>")


def _document(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\"><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>").encode()


def render(*, version: str, metrics: Mapping[str, Any], gate: Mapping[str, Any], manifest: Mapping[str, Any],
           history: Sequence[Mapping[str, Any]], quality: Sequence[DayStatus] | None = None) -> bytes:
    """The page. history: earlier versions as [{"version", "overall": {metric: value}}], oldest first;
    quality: the training window's days as validation left them (None: the window is not known)."""
    cand, champ = metrics["candidate"], metrics.get("champion")
    verdict = "PROMOTABLE" if gate["promotable"] else "BLOCKED"
    parts = [
        f"<h1>Ranker {_e(version)}</h1>",
        f"<p>Gate: <span class='{'pass' if gate['promotable'] else 'fail'}'>{verdict}</span> — "
        f"{_e(gate['summary'])}</p>",
        "<h2>Candidate vs champion, position-debiased (held-out day)</h2>", _counterfactual(metrics, gate),
        "<h2>Raw metrics on the logged lists (held-out day)</h2>",
        "<p>Measured on the lists as they were logged: the live model ranked them and users clicked what it put "
        "on top, so these favour the logging policy (the champion). The floors use them; the comparison does "
        "not.</p>", _overall_table(metrics),
        "<h2>Gate checks</h2>", _checks_table(gate["checks"]),
        "<h2>Raw metrics per segment (logged lists)</h2>",
        _plot(_segments_plot, cand, champ, metrics.get("popularity")),
        _segments_table(cand, champ),
        "<h2>Metric history</h2>", _plot(_history_plot, history, version, cand["overall"]),
        "<h2>Data quality of the training window</h2>", _quality_table(quality, manifest),
        "<h2>Feature importance (gain)</h2>", _plot(_importance_plot, metrics.get("feature_importance") or {}),
        "<h2>Scores: calibration and distribution</h2>", _plot(_calibration_plot, metrics.get("calibration") or {}),
        "<h2>Lineage</h2>", _lineage(metrics, manifest),
    ]
    return _document(f"feedloop ranker {version}", "\n".join(parts))


def _overall_table(metrics: Mapping[str, Any]) -> str:
    rows = [("candidate", metrics["candidate"]["overall"])]
    if metrics.get("champion"):
        champ = metrics["champion"]
        cannot = " (cannot be scored on these rows: its feature set differs)" if champ.get("unscorable") else ""
        rows.append((f"champion {champ['version']}{cannot}", champ["overall"]))
    if metrics.get("popularity"):
        rows.append(("popularity baseline", metrics["popularity"]["overall"]))
    head = "<tr><th></th>" + "".join(f"<th>{m}</th>" for m in METRICS) + "<th>query groups</th><th>rows</th></tr>"
    body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_num(m.get(k))}</td>" for k in METRICS)
                   + f"<td>{m.get('groups', 'n/a')}</td><td>{m.get('rows', 'n/a')}</td></tr>" for name, m in rows)
    return f"<table>{head}{body}</table>"


def _checks_table(checks: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th>check</th><th>scope</th><th>metric</th><th>candidate</th><th>champion</th>"
            "<th>difference [interval]</th><th>limit</th><th>support</th><th>verdict</th><th>result</th></tr>")
    body = "".join(
        f"<tr><td>{_e(c['kind'])}</td><td>{_e(c['scope'])}</td><td>{_e(c['metric'])}"
        f"{' (' + _e(c['estimator']) + ')' if c.get('estimator') else ''}</td>"
        f"<td>{_num(c['candidate'])}</td><td>{_num(c.get('champion'))}</td>"
        f"<td>{_diff(c) if c.get('diff') is not None else ''}</td><td>{_num(c['limit'])}</td>"
        f"<td>{c.get('support') or ''}</td><td>{_e(c.get('verdict') or '')}</td>"
        f"<td class='{'pass' if c['passed'] else 'fail'}'>{'pass' if c['passed'] else 'FAIL'}</td></tr>"
        for c in checks)
    return f"<table>{head}{body}</table>"


def _counterfactual(metrics: Mapping[str, Any], gate: Mapping[str, Any]) -> str:
    """The figures the gate compares: debiased and exploration-only, with their bootstrap intervals, and the plot."""
    if "debiased" not in metrics["candidate"]:
        return "<p>No counterfactual figures: this version was evaluated before they existed.</p>"
    boot = metrics.get("bootstrap") or {}
    level = f"{boot.get('confidence', 0.95) * 100:g}%"
    scorers = [("candidate", metrics["candidate"])]
    champ = metrics.get("champion")
    if champ and "debiased" in champ:
        scorers.append((f"champion {champ['version']}", champ))
    if metrics.get("popularity"):
        scorers.append(("popularity baseline", metrics["popularity"]))
    paired = metrics.get("paired")
    estimates = metrics.get("estimates") or {}
    parts = [f"<p>Intervals: {level} percentile bootstrap over lists ({boot.get('resamples')} resamples, seed "
             f"{boot.get('seed')}); a difference is paired (same lists, same resamples).</p>"]
    for estimate, names, title in (("debiased", DEBIASED_METRICS, f"Debiased ({ESTIMATOR}), all lists"),
                                   ("explore", EXPLORE_METRICS, "Exploration lists only (random candidates, "
                                                                "random order, never trained on)")):
        rows = [(name, block[estimate]["overall"]) for name, block in scorers]
        if paired:
            rows.append(("candidate − champion", paired[estimate]["overall"]))
        head = "<tr><th></th>" + "".join(f"<th>{m}</th>" for m in names) + "<th>lists</th></tr>"
        body = "".join(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{_interval(scope.get(m))}</td>" for m in names)
                       + f"<td>{scope['lists']}</td></tr>" for name, scope in rows)
        parts.append(f"<h3>{_e(title)}</h3><p class='small'>{_e(estimates.get(estimate, ''))}</p>"
                     f"<table>{head}{body}</table>")
    metric = (gate.get("comparison") or {}).get("metric") or "ndcg@10"
    gated = gated_estimate(paired)
    judged_on = (paired or {}).get("judged_on")
    parts.append(f"<h3>{_e(metric)} ({_e(ESTIMATORS[gated])}) per segment: what the gate compared</h3>"
                 + (f"<p class='small'>On {_e(judged_on)}.</p>" if judged_on else "")
                 + _segments(scorers, paired, metric, gated))
    parts.append(_plot(_interval_plot, scorers, paired, metric, gated, tolerance=judged_tolerance(gate, metric),
                       segment_tolerance=(gate.get("thresholds") or {}).get("segment_tolerance")))
    return "".join(parts)


def judged_tolerance(gate: Mapping[str, Any], metric: str) -> float | None:
    """The tolerance the overall comparison of `metric` was judged with (gate.json's check): the configured one,
    or narrower where promotion.tolerance_widths capped it by the interval."""
    limit = next((c["limit"] for c in gate.get("checks") or () if c.get("kind") == "comparison"
                  and c.get("scope") == "overall" and c.get("metric") == metric and c.get("limit") is not None), None)
    return -limit if limit is not None else (gate.get("thresholds") or {}).get("tolerance")


def _segments(scorers: Sequence[tuple[str, Mapping[str, Any]]], paired: Mapping[str, Any] | None,
              metric: str, estimate: str) -> str:
    head = ("<tr><th>segment</th><th>lists</th>" + "".join(f"<th>{_e(name)}</th>" for name, _ in scorers)
            + ("<th>candidate − champion</th>" if paired else "") + "</tr>")
    body = []
    for scope in ["overall", *scorers[0][1][estimate]["segments"]]:
        cells = [_scope(block[estimate], scope) for _, block in scorers]
        diff = f"<td>{_interval(_scope(paired[estimate], scope).get(metric))}</td>" if paired else ""
        body.append(f"<tr><td>{_e(scope)}</td><td>{cells[0].get('lists', 'n/a')}</td>"
                    + "".join(f"<td>{_interval(c.get(metric))}</td>" for c in cells) + f"{diff}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _scope(block: Mapping[str, Any], scope: str) -> Mapping[str, Any]:
    return (block["overall"] if scope == "overall" else block["segments"].get(scope)) or {}


def _segments_table(cand: Mapping[str, Any], champ: Mapping[str, Any] | None) -> str:
    head = "<tr><th>segment</th><th>groups</th>" + "".join(
        f"<th>{m}</th><th>Δ vs champion</th>" for m in ("auc", "ndcg@10")) + "</tr>"
    body = []
    for scope, seg in cand["segments"].items():
        other = (champ or {}).get("segments", {}).get(scope, {})
        cells = "".join(f"<td>{_num(seg.get(m))}</td><td>{_delta(seg.get(m), other.get(m))}</td>"
                        for m in ("auc", "ndcg@10"))
        body.append(f"<tr><td>{_e(scope)}</td><td>{seg.get('groups')}</td>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _quality_table(days: Sequence[DayStatus] | None, manifest: Mapping[str, Any]) -> str:
    """Hours per state for each day trained on, with the hours that were not clean named."""
    if days is None:
        return "<p>Training window unknown: the dataset lineage has no window_start / window_end.</p>"
    if not days:
        return "<p>The training window holds no days.</p>"
    head = ("<tr><th>day</th>" + "".join(f"<th>{_e(s)}</th>" for s in STATES)
            + "<th>validation run</th><th>notes</th></tr>")
    rows = []
    for d in days:
        notes = "; ".join(f"{h.hour:02d}: {h.state}" + (f" ({h.why})" if h.why else "")
                          for h in d.hours if h.state in (QUARANTINED, WARNED_VIEW, FORCE_ACCEPTED, NOT_VALIDATED))
        cells = "".join(f"<td class='{'fail' if s == QUARANTINED and d.counts[s] else ''}'>{d.counts[s]}</td>"
                        for s in STATES)
        rows.append(f"<tr><td>{d.day}</td>{cells}<td>{_e(d.run_id or 'not validated')}</td>"
                    f"<td class='text'>{_e(notes) or '-'}</td></tr>")
    lineage = manifest.get("lineage") or {}
    excluded = lineage.get("excluded_hours") or {}
    left_out = ("<p><b>Left out of the training set</b> (dataset.on_quarantined: exclude):</p><ul>"
                + "".join(f"<li>{_e(part)}: {_e(why)}</li>" for part, why in excluded.items()) + "</ul>"
                if excluded else "<p>No hour was left out of the training set.</p>")
    return (f"<p>As the validation recorded it when this version was registered; data range "
            f"{_e(lineage.get('window_start'))} … {_e(lineage.get('window_end'))} (end exclusive).</p>"
            f"<table>{head}{''.join(rows)}</table>{left_out}")


def _lineage(metrics: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    lineage = manifest.get("lineage") or {}
    items = {
        "logical date": manifest.get("logical_date"),
        "data range": f"{lineage.get('window_start')} … {lineage.get('window_end')} (end exclusive)"
        if lineage.get("window_start") else "unknown (no window in the dataset lineage)",
        "training run": manifest.get("run_uri"),
        "dataset": manifest.get("dataset_uri"),
        "holdout rows / query groups": f"{metrics['holdout']['rows']} / {metrics['holdout']['lists']}",
        "code version": manifest.get("code_version"),
        "objective": (manifest.get("feature_manifest") or {}).get("objective"),
        "ONNX parity max |diff|": f"{_num(metrics['parity']['max_abs_diff'])}, scaled "
                                  f"{_num(metrics['parity'].get('max_scaled_diff'))} on {metrics['parity']['rows']} "
                                  f"rows (threshold {metrics['parity']['threshold']} on the scaled figure)",
    }
    items.update({f"lineage: {k}": v for k, v in lineage.items() if not isinstance(v, (dict, list))})
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(str(v))}</code></td></tr>"
                               for k, v in items.items()) + "</table>"


def _segments_plot(cand, champ, popularity):
    import matplotlib.pyplot as plt

    scopes = list(cand["segments"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(scopes) + 1.5), squeeze=False)
    for ax, metric in zip(axes[0], ("auc", "ndcg@10")):
        series = [("candidate", cand, "#1f77b4"), ("champion", champ, "#ff7f0e"), ("popularity", popularity, "#aaa")]
        series = [s for s in series if s[1]]
        height = 0.8 / len(series)
        for i, (name, block, color) in enumerate(series):
            values = [(block["segments"].get(s) or {}).get(metric) or 0.0 for s in scopes]
            ax.barh([y + i * height for y in range(len(scopes))], values, height=height, label=name, color=color)
        ax.set_yticks([y + 0.4 - height / 2 for y in range(len(scopes))], scopes)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.legend(loc="lower right", fontsize=8)
    return fig


def _interval_plot(scorers, paired, metric, estimate, *, tolerance, segment_tolerance):
    """Left: each scorer's metric of `estimate` (the block the gate compared) per scope with its interval;
    right: candidate - champion with its paired interval against -tolerance (overall) and -segment_tolerance
    (segments)."""
    import matplotlib.pyplot as plt

    scopes = ["overall", *scorers[0][1][estimate]["segments"]]
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(11, 0.45 * len(scopes) + 1.6), squeeze=False)
    left = axes[0][0]
    colors = ("#1f77b4", "#ff7f0e", "#aaa")
    height = 0.8 / len(scorers)
    for i, ((name, block), color) in enumerate(zip(scorers, colors)):
        for y, scope in enumerate(scopes):
            figure = _scope(block[estimate], scope).get(metric) or {}
            if figure.get("value") is None:
                continue
            left.errorbar(figure["value"], y + i * height, xerr=[[figure["value"] - figure["low"]],
                                                                  [figure["high"] - figure["value"]]],
                          fmt="o", color=color, capsize=3, label=name if y == 0 else None)
    left.set_yticks([y + 0.4 - height / 2 for y in range(len(scopes))], scopes)
    left.invert_yaxis()
    left.set_title(f"{metric} ({ESTIMATORS[estimate]})")
    left.legend(loc="best", fontsize=8)
    left.grid(alpha=0.3)
    if paired:
        right = axes[0][1]
        for y, scope in enumerate(scopes):
            figure = _scope(paired[estimate], scope).get(metric) or {}
            if figure.get("value") is None:
                continue
            right.errorbar(figure["value"], y, xerr=[[figure["value"] - figure["low"]], [figure["high"] - figure["value"]]],
                           fmt="o", color="#333", capsize=3)
        for limit, style, label in ((tolerance, "--", "-tolerance"), (segment_tolerance, ":", "-segment_tolerance")):
            if limit is not None:
                right.axvline(-limit, color="#c62828", linestyle=style, label=label)
        right.axvline(0, color="#888", linewidth=0.8)
        right.set_yticks(range(len(scopes)), scopes)
        right.invert_yaxis()
        right.set_title(f"candidate - champion, {metric}")
        right.legend(loc="best", fontsize=8)
        right.grid(alpha=0.3)
    return fig


def _history_plot(history, version, overall):
    import matplotlib.pyplot as plt

    points = [*history, {"version": version, "overall": overall}]
    fig, ax = plt.subplots(figsize=(11, 3.2))
    for metric in ("auc", "ndcg@10", "map"):
        ax.plot(range(len(points)), [p["overall"].get(metric) for p in points], marker="o", label=metric)
    ax.set_xticks(range(len(points)), [p["version"] for p in points], rotation=30, ha="right", fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _importance_plot(importance: Mapping[str, float]):
    import matplotlib.pyplot as plt

    ranked = sorted(importance.items(), key=lambda kv: kv[1])[-25:]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(ranked) + 1))
    ax.barh([k for k, _ in ranked], [v for _, v in ranked], color="#1f77b4")
    ax.set_xlabel("total gain")
    return fig


def _calibration_plot(cal: Mapping[str, Any]):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    left.plot(cal.get("mean_score", []), cal.get("positive_rate", []), marker="o")
    left.set_xlabel("mean score in decile")
    left.set_ylabel("positive rate (label_binary)")
    left.grid(alpha=0.3)
    edges = cal.get("hist_edges", [])
    if len(edges) > 1:
        width = edges[1] - edges[0]
        right.bar(edges[:-1], cal["hist_negative"], width=width, align="edge", color="#bbb", label="label_binary = 0")
        right.bar(edges[:-1], cal["hist_positive"], width=width, align="edge", bottom=cal["hist_negative"],
                  color="#1f77b4", label="label_binary = 1")
        right.legend(fontsize=8)
    right.set_xlabel("score")
    right.set_ylabel("rows")
    return fig


def _plot(draw: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """One figure as an inline PNG, or a note saying why it could not be drawn (the page renders either way).

    Labels come from data (segment values, feature names, version ids): with text.parse_math off,
    matplotlib draws them as typed instead of parsing `$...$` as math, which raises on a tenant id
    like `x$^$y`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with matplotlib.rc_context(_LITERAL_TEXT):
            fig = draw(*args, **kwargs)
            try:
                buf = io.BytesIO()
                fig.tight_layout()
                fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
            finally:
                plt.close(fig)
    except Exception as exc:  # noqa: BLE001 - a plot is never worth a lost registration
        log.warning("report plot %s could not be drawn: %s: %s", draw.__name__, type(exc).__name__, exc)
        return (f"<p class='fail'>This plot could not be drawn ({_e(draw.__name__.strip('_'))}): "
                f"{_e(type(exc).__name__)}: {_e(exc)}. The tables on this page hold its figures.</p>")
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _interval(figure: Mapping[str, Any] | None) -> str:
    if not figure or figure.get("value") is None:
        return "n/a"
    return f"{figure['value']:.4f} [{figure['low']:.4f}, {figure['high']:.4f}]"


def _diff(check: Mapping[str, Any]) -> str:
    return f"{check['diff']:+.4f} [{check['low']:+.4f}, {check['high']:+.4f}]"


def _delta(value: float | None, reference: float | None) -> str:
    return "" if value is None or reference is None else f"{value - reference:+.4f}"


def _e(text: Any) -> str:
    return html.escape(str(text))
