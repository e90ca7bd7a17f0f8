"""What a validation says, for people: failures as observed vs expected, Data Docs HTML, the alert text.

Why its own module: the same failure description goes into status.json, the quarantine marker,
the day's index page and the Slack / email alert, so an on-call engineer reads the same words
everywhere and can act from the alert alone.
"""

from __future__ import annotations

import functools
import html
from typing import Any

_NOT_EXPECTATIONS = {"batch_id", "column", "row_condition", "condition_parser", "result_format"}
_EXAMPLES = 5


def failure(partition: str, result: Any, *, docs: str | None = None) -> dict[str, Any]:
    """One failed GX ExpectationValidationResult as plain observed-vs-expected text.

    column and failing_rows (GX's unexpected_count; None for table-level checks) are kept apart for
    alerts; docs names the hour's Data Docs page that shows the result (hour=HH/<docs>.html).
    """
    cfg = result.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column")
    failing_rows = (result.result or {}).get("unexpected_count")
    return {
        "partition": partition,
        "check": cfg.meta.get("check", cfg.type),
        "scope": cfg.meta.get("scope", ""),
        "severity": cfg.meta.get("severity", "block"),
        "expectation": f"{cfg.type}({column})" if column else cfg.type,
        "expected": ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items() if k not in _NOT_EXPECTATIONS) or "-",
        "observed": _observed(result),
        "column": column,
        "failing_rows": None if failing_rows is None else int(failing_rows),
        "docs": docs,
    }


def _observed(result: Any) -> str:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return f"error: {info.get('exception_message')}"
    res = result.result or {}
    if "observed_value" in res:
        return _short(res["observed_value"])
    if "unexpected_count" in res:
        examples = res.get("partial_unexpected_list") or []
        return (f"{res['unexpected_count']} of {res.get('element_count', '?')} rows unexpected "
                f"({res.get('unexpected_percent') or 0:.2f}%), e.g. {_short(examples[:_EXAMPLES])}")
    return _short(res)


def _short(value: Any, limit: int = 160) -> str:
    text = str(_plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_line(f: dict[str, str]) -> str:
    scope = f" [{f['scope']}]" if f.get("scope") else ""
    return (f"{f['partition']} {f['check']}{scope}: {f['expectation']} "
            f"expected {f['expected']}; observed {f['observed']}")


def plain_values(suite_result: Any) -> Any:
    """numpy scalars and arrays in each result's figures as plain Python, in place; returns suite_result.

    Why: GX's Data Docs format an observed value with repr(), which under numpy 2 is "np.float64(0.08)":
    every such cell raised inside the renderer (a traceback logged per cell, the value missing from the
    page; 27 a day in the metrics suite's pages)."""
    for one in suite_result.results:
        if one.result:
            one.result = _plain(one.result)
    return suite_result


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values, through dicts, lists and tuples (alerts read 5, not
    np.int32(5))."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalar (-> int / float / bool) or array
        return value.tolist()
    return value


def data_docs(result: Any) -> str:
    """GX's own Data Docs page for one validation result (self-contained HTML)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    return _page_view().render(ValidationResultsPageRenderer().render(result))


@functools.cache
def _page_view() -> Any:
    """One view per process: its jinja Environment keeps the compiled templates (a new view per page
    recompiled ~17 templates each time, about 40% of a day's validation in a profile)."""
    from great_expectations.render.view import DefaultJinjaPageView

    view = DefaultJinjaPageView()
    view.env.auto_reload = False  # its templates ship in the GX package: no stat() of each one per page
    return view


def index_html(summary: dict[str, Any]) -> str:
    """The day's landing page: one row per hour with its state, failures, warnings and links to Data Docs."""
    esc = html.escape
    rows = []
    for hour, h in sorted(summary["hours"].items()):
        problems = "<br>".join(esc(failure_line(f)) for f in h.get("failures", [])) or "-"
        warnings = "<br>".join(esc(failure_line(f)) for f in h.get("warnings", [])) or "-"
        skipped = "<br>".join(esc(f"{s['check']} {s['scope']}: {s['reason']}") for s in h.get("skipped", [])) or "-"
        accepted = h.get("accepted")
        note = f"<br><i>accepted: {esc(accepted['reason'])} ({esc(accepted['by'])})</i>" if accepted else ""
        if again := h.get("revalidation"):
            note += (f"<br><i>re-validated at {esc(again['at'])} ({esc(again['changed'])}); before: "
                     f"{esc(again['previous_state'])}; the changed objects: {esc(again['objects_state'])}</i>")
        links = " ".join(f'<a href="hour={hour}/{name}.html">{name}</a>' for name in h.get("docs", []))
        rows.append(f"<tr class='{esc(h['state'])}'><td>{hour}</td><td>{esc(h['state'])}{note}</td>"
                    f"<td>{h.get('row_count', 0)}</td><td>{problems}</td><td>{warnings}</td><td>{skipped}</td>"
                    f"<td>{links}</td></tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>feedloop validation {esc(summary['day'])}</title>
<style>body{{font-family:sans-serif}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
.failed{{background:#fdd}}.accepted{{background:#ffd}}.warned{{background:#fec}}.passed{{background:#dfd}}
</style></head><body>
<h1>Engagement validation, {esc(summary['day'])}</h1>
<p>run {esc(summary['run_id'])} at {esc(summary['validated_at'])}: {esc(summary['verdict'])}</p>
<p>Blocking failures quarantine their hour (left out of training); warnings are recorded and alerted,
the hour trains. Severity per check: quality.severity in include/config/feedloop.yaml.</p>
<table><tr><th>hour</th><th>state</th><th>rows</th><th>blocking failures (observed vs expected)</th>
<th>warnings</th><th>skipped</th><th>Data Docs</th></tr>{''.join(rows)}</table></body></html>"""


def verdict_message(summary: dict[str, Any], report_uri: str, report_url: str) -> str:
    """The text a failing validation raises with; the alert carries it verbatim."""
    failed = [h for h in summary["hours"].values() if h["state"] == "failed"]
    lines = [f"Validation of {summary['day']} failed: {len(failed)} of {len(summary['hours'])} hour partition(s) "
             f"quarantined."]
    lines += [f"- {failure_line(f)}" for f in summary.get("day_failures", [])]
    lines += [f"- {failure_line(f)}" for h in failed for f in h["failures"]]
    lines.append(f"Report: {report_uri} ({report_url})")
    return "\n".join(lines)
