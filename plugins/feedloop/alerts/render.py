"""An alert's content drawn for Slack (mrkdwn) and for email (HTML), and the one message that resolves an incident.

Why apart from the content: what an alert says (feedloop.alerts.content) is stored in the incident
record; how it is drawn is each channel's business, and escaping is where a message goes wrong.
"""

from __future__ import annotations

import html
from typing import Any


def subject(content: dict[str, Any]) -> str:
    if content["kind"] == "rollback":
        return f"[feedloop] {content['headline']}"
    verb = "warns" if content["kind"] == "validation warnings" else "failed"
    return (f"[feedloop] {content['dag_id']}.{content['check']} {verb} for {content['day']}: "
            f"{content['kind']}, {content['headline']}")


def slack_text(content: dict[str, Any], *, footer: str = "") -> str:
    """Slack mrkdwn: &, <, > escaped; links as <url|label>."""
    icon = {"rollback": ":leftwards_arrow_with_hook:", "validation warnings": ":warning:"}.get(content["kind"],
                                                                                         ":rotating_light:")
    lines = [f"{icon} *{_esc(subject(content))}*"]
    lines += [f"{_esc(k)}: {_esc(str(v))}" for k, v in content["fields"]]
    if content["details"]:
        lines.append(f"{_esc(content['details_title'])}:")
        lines += [f"• {_esc(d)}" for d in content["details"]]
    lines += [f"{_esc(label)}: <{_esc(url)}|open>" for label, url in content["links"]]
    lines.append("What to do:")
    for i, (text, command) in enumerate(content["actions"], 1):
        lines.append(f"{i}. {_esc(text)}" + (f": `{_esc(command)}`" if command else ""))
    if footer:
        lines.append(f"_{_esc(footer)}_")
    return "\n".join(lines)


def email_html(content: dict[str, Any], *, footer: str = "") -> str:
    esc = html.escape
    parts = [f"<h3>{esc(subject(content))}</h3>"]
    parts += [f"<div>{esc(k)}: {esc(str(v))}</div>" for k, v in content["fields"]]
    if content["details"]:
        parts.append(f"<p>{esc(content['details_title'])}:</p><ul>"
                     + "".join(f"<li>{esc(d)}</li>" for d in content["details"]) + "</ul>")
    parts += [f'<div>{esc(label)}: <a href="{esc(url)}">open</a></div>' for label, url in content["links"]]
    parts.append("<p>What to do:</p><ol>" + "".join(
        f"<li>{esc(text)}" + (f": <code>{esc(command)}</code>" if command else "") + "</li>"
        for text, command in content["actions"]) + "</ol>")
    if footer:
        parts.append(f"<p><i>{esc(footer)}</i></p>")
    return "\n".join(parts)


def resolved_lines(record: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """(subject, links, lines) of the one message that closes an incident."""
    head = f"[feedloop] RESOLVED {record['dag_id']}.{record['check']} for {record['day']}"
    lines = [f"Resolved: {record['resolution']['text']}",
             f"Was: {record['kind']}, {record['headline']}",
             f"Failed {record['count']} time(s) from {record['opened_at']} to {record['last_seen']}; runs: "
             + ", ".join(record["runs"])]
    return head, [("Airflow run", record["resolution"]["run_url"])], lines


def resolved_slack(record: dict[str, Any]) -> str:
    head, found, lines = resolved_lines(record)
    return "\n".join([f":white_check_mark: *{_esc(head)}*", *map(_esc, lines),
                      *(f"{_esc(label)}: <{_esc(url)}|open>" for label, url in found)])


def resolved_email(record: dict[str, Any]) -> tuple[str, str]:
    head, found, lines = resolved_lines(record)
    esc = html.escape
    body = "\n".join([f"<h3>{esc(head)}</h3>", *(f"<div>{esc(line)}</div>" for line in lines),
                      *(f'<div>{esc(label)}: <a href="{esc(url)}">open</a></div>' for label, url in found)])
    return f"Re: {subject(record)}", body


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
