"""The reconciliation report: one business date's summary as a single HTML page.

The page must survive being mailed, archived and printed years later, so it
carries everything inline (CSS, an SVG chart) and nothing that runs or loads:
no JavaScript, fonts, images or links to fetch. Colour always comes with
words (PASS, FAIL, the verdict itself), so a black-and-white print still
reads.

Rendering is pure: the caller (the cut-over) writes the string atomically.
Every string from the summary is escaped, because file paths, keys and
details come from files that outsiders send us.

The chart draws one panel per currency: minor units of JPY, CNY and BHD are
not comparable amounts, so bars share a scale only within one currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from possim.wire.money import Currency, currency, format_major

# Colours are chosen dark enough to read as text on white, and the tints
# light enough that black text over them still prints.
_GREEN, _AMBER, _RED = "#1a7f37", "#9a6700", "#cf222e"
_TINTS = {_GREEN: "#dafbe1", _AMBER: "#fff8c5", _RED: "#ffebe9"}

VERDICT_COLOURS = {
    "balanced": _GREEN,
    "resolved": _GREEN,
    "open exceptions": _AMBER,
    "invariant failed": _RED,
}
"""Verdict -> colour; a verdict outside this map is refused rather than shown uncoloured."""

STATE_ORDER = ("exception", "suspense", "resolved")
"""Discrepancies are listed in this order: what still needs a person comes first."""
_STATE_COLOURS = dict(zip(STATE_ORDER, (_RED, _AMBER, _GREEN)))

MATCHED_FILL, UNMATCHED_FILL = "#2f6fb0", "#e08a1e"
"""Blue and orange: distinct for the common colour-blindnesses and in greyscale."""

# Chart geometry, in SVG user units (1 unit = 1 CSS px at natural size).
CHART_LABEL_WIDTH = 190
CHART_PLOT_WIDTH = 560
CHART_VALUE_WIDTH = 170
_CHART_WIDTH = CHART_LABEL_WIDTH + CHART_PLOT_WIDTH + CHART_VALUE_WIDTH
_LEGEND_HEIGHT = 28
_ROW_HEIGHT = 46
_BAR_HEIGHT = 15
_AXIS_HEIGHT = 34
_TICKS = 4
_LABEL_CHARS = 28

_CSS = """
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0 auto; max-width: 1180px; padding: 24px 28px 40px; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 20px; border-bottom: 3px solid #1f2328;
         padding-bottom: 12px; }
h1 { font-size: 24px; margin: 0; }
h2 { font-size: 17px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; break-after: avoid; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.verdict { display: inline-block; margin: 0; padding: 4px 14px; border: 2px solid; border-radius: 6px;
           font-size: 16px; font-weight: 700; text-transform: uppercase; letter-spacing: .04em; }
.meta { flex-basis: 100%; margin: 0; color: #59636e; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #d8dee4; text-align: left; vertical-align: top; }
thead th { background: #f3f5f7; border-bottom: 2px solid #afb8c1; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
        overflow-wrap: break-word; }
.sub { display: block; color: #59636e; font-size: 12px; font-weight: normal; }
.date { white-space: nowrap; }
.badge { display: inline-block; padding: 0 7px; border: 1px solid; border-radius: 4px; font-size: 12px;
         font-weight: 700; letter-spacing: .03em; white-space: nowrap; }
.note { color: #59636e; font-style: italic; }
.chart { display: block; width: 100%; max-width: 920px; height: auto; margin: 4px 0 12px; }
.chart text { font: 12px system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", Arial, sans-serif; fill: #1f2328; }
.chart .tick { fill: #59636e; font-size: 11px; }
@page { margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  table { font-size: 8.5pt; }
  th, td { padding: 3px 4px; }
  .code, .sub { font-size: 7.5pt; }
  thead { display: table-header-group; }
  tr, .chart { break-inside: avoid; }
}
"""


def render_report(summary: Mapping[str, Any]) -> str:
    """Render the reconciliation engine's summary of one business date as one HTML5 page.

    Unknown verdicts and discrepancy states raise ValueError: a report that
    cannot say which way the day went must not look like one that can.
    """
    verdict = str(summary["verdict"])
    if verdict not in VERDICT_COLOURS:
        known = ", ".join(VERDICT_COLOURS)
        raise ValueError(f"reconciliation summary: unknown verdict {verdict!r} (expected one of {known})")
    date = str(summary["business_date"])
    discrepancies = _ordered(_rows(summary, "discrepancies"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Reconciliation {_e(date)} \u2014 {_e(verdict)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        _header(summary, date, verdict, discrepancies),
        _section("sources", "Sources", _sources(_rows(summary, "sources"))),
        _section("invariants", "Money invariants", _invariants(_rows(summary, "invariants"))),
        _section("channels", "Matched and unmatched amounts by channel", _chart(_rows(summary, "channels"))),
        _section("classes", "Discrepancy classes", _classes(_rows(summary, "classes"))),
        _section("batches", "Settlement batches", _batches(_rows(summary, "batches"))),
        _section("discrepancies", "Discrepancies", _discrepancies(discrepancies)),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _rows(summary: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    """An absent list reads as an empty one: a quiet day may leave sections out."""
    return summary.get(key) or ()


def _money(minor: int | None, code: str) -> str:
    """Amounts read as "1,234.50 CNY"; a missing one (no host row, no file row) is a dash, not a zero."""
    if minor is None:
        return "\u2014"
    if not code:  # a count (the invariants that count rows), or an item no source gave a currency
        return f"{minor:,}"
    cur = currency(str(code))
    return f"{_grouped(minor, cur)} {cur.alpha}"


def _grouped(minor: int, cur: Currency) -> str:
    """format_major with thousands separators, which a reader of long amounts needs."""
    text = format_major(minor, cur)
    sign = "-" if text.startswith("-") else ""
    whole, dot, fraction = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction}"


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _age(days: Any) -> str:
    return "1 day" if int(days) == 1 else f"{_count(days)} days"


def _coloured(colour: str) -> str:
    return f"color:{colour};border-color:{colour};background-color:{_TINTS[colour]}"


def _header(summary: Mapping[str, Any], date: str, verdict: str, discrepancies: Sequence[Mapping[str, Any]]) -> str:
    css_class = "verdict-" + verdict.replace(" ", "-")
    states = {state: sum(1 for d in discrepancies if d["state"] == state) for state in STATE_ORDER}
    tally = ", ".join(f"{state} {n}" for state, n in states.items())
    meta = (
        f"Run {_e(summary.get('run', ''))} \u00b7 generated {_e(summary.get('generated_at', ''))} \u00b7 "
        f"{len(discrepancies)} discrepancies ({_e(tally)})"
    )
    return (
        "<header>"
        f"<h1>Reconciliation report <span class=\"business-date\">{_e(date)}</span></h1>"
        f'<p class="verdict {css_class}" data-verdict="{_e(verdict)}" style="{_coloured(VERDICT_COLOURS[verdict])}">'
        f"{_e(verdict)}</p>"
        f'<p class="meta">{meta}</p>'
        "</header>"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(headers: Iterable[tuple[str, bool]], rows: Iterable[str]) -> str:
    """headers are (title, numeric); numeric columns are right-aligned like their cells."""
    head = "".join(f'<th scope="col"{_num(numeric)}>{_e(title)}</th>' for title, numeric in headers)
    body = "\n".join(rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _num(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _td(text: str, numeric: bool = False) -> str:
    return f"<td{_num(numeric)}>{_e(text)}</td>"


def _sources(sources: Sequence[Mapping[str, Any]]) -> str:
    if not sources:
        return _note("No source files were read.")
    rows = (
        f"<tr>{_td(s['kind'])}<td class=\"code\">{_e(s['path'])}</td>{_td(_count(s['records']), True)}</tr>"
        for s in sources
    )
    return _table((("Kind", False), ("File", False), ("Records", True)), rows)


def _invariants(invariants: Sequence[Mapping[str, Any]]) -> str:
    if not invariants:
        return _note("No invariants were checked.")
    rows = []
    for inv in invariants:
        passed = bool(inv["passed"])
        word, colour = ("PASS", _GREEN) if passed else ("FAIL", _RED)
        badge = f'<span class="badge badge-{word.lower()}" style="{_coloured(colour)}">{word}</span>'
        code = inv.get("currency", "")
        rows.append(
            f'<tr data-invariant="{_e(inv["name"])}">'
            f"<td>{badge}</td>"
            f'<th scope="row">{_e(inv["name"])}<span class="sub">{_e(inv.get("rule", ""))}</span></th>'
            f"{_td(_money(inv.get('left'), code), True)}{_td(_money(inv.get('right'), code), True)}"
            f"{_td(inv.get('detail', ''))}</tr>"
        )
    return _table((("Result", False), ("Invariant", False), ("Left", True), ("Right", True), ("Detail", False)), rows)


def _chart(channels: Sequence[Mapping[str, Any]]) -> str:
    if not channels:
        return _note("No settled transactions on this business date.")
    by_currency: dict[str, list[Mapping[str, Any]]] = {}
    for row in channels:
        by_currency.setdefault(str(row["currency"]), []).append(row)
    return "\n".join(_chart_panel(code, rows) for code, rows in by_currency.items())


def _chart_panel(code: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """One currency's bars, all scaled to its largest amount (which spans the full plot width)."""
    cur = currency(code)
    largest = max(max(abs(int(r["matched_amount"])), abs(int(r["unmatched_amount"]))) for r in rows)
    plot_top = _LEGEND_HEIGHT
    height = plot_top + _ROW_HEIGHT * len(rows) + _AXIS_HEIGHT
    x0 = CHART_LABEL_WIDTH
    out = [
        f"<h3>{_e(cur.alpha)} ({_e(cur.numeric)})</h3>",
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" data-currency="{_e(cur.numeric)}" '
        f'width="{_CHART_WIDTH}" height="{height}" viewBox="0 0 {_CHART_WIDTH} {height}">',
        f"<title>Matched and unmatched amounts by channel, {_e(cur.alpha)}</title>",
        _legend(x0),
    ]
    plot_bottom = plot_top + _ROW_HEIGHT * len(rows)
    for i in range(_TICKS + 1):
        x = x0 + CHART_PLOT_WIDTH * i // _TICKS
        dashed = ' stroke-dasharray="3 3"' if i else ""
        out.append(
            f'<line x1="{x}" y1="{plot_top}" x2="{x}" y2="{plot_bottom + 4}" stroke="#d0d7de"{dashed}/>'
            f'<text class="tick" x="{x}" y="{plot_bottom + 18}" text-anchor="middle">'
            f"{_e(_grouped(largest * i // _TICKS, cur))}</text>"
        )
    out.append(f'<line x1="{x0}" y1="{plot_bottom}" x2="{x0 + CHART_PLOT_WIDTH}" y2="{plot_bottom}" stroke="#59636e"/>')
    for index, row in enumerate(rows):
        out.append(_chart_row(row, cur, largest, plot_top + _ROW_HEIGHT * index))
    out.append("</svg>")
    return "\n".join(out)


def _legend(x0: int) -> str:
    items = []
    for offset, fill, word in ((0, MATCHED_FILL, "Matched"), (110, UNMATCHED_FILL, "Unmatched")):
        x = x0 + offset
        items.append(
            f'<rect x="{x}" y="6" width="14" height="14" fill="{fill}"/>'
            f'<text x="{x + 20}" y="17">{word}</text>'
        )
    return f'<g class="legend">{"".join(items)}</g>'


def _chart_row(row: Mapping[str, Any], cur: Currency, largest: int, top: int) -> str:
    channel = str(row["channel"])
    label = channel if len(channel) <= _LABEL_CHARS else channel[: _LABEL_CHARS - 1] + "\u2026"
    centre = top + _ROW_HEIGHT // 2
    parts = [
        f'<g class="row" data-channel="{_e(channel)}">',
        f'<text x="{CHART_LABEL_WIDTH - 10}" y="{centre + 4}" text-anchor="end"><title>{_e(channel)}</title>'
        f"{_e(label)}</text>",
    ]
    bars = (
        ("matched", MATCHED_FILL, "matched_amount", "matched_count", top + 6),
        ("unmatched", UNMATCHED_FILL, "unmatched_amount", "unmatched_count", top + 8 + _BAR_HEIGHT),
    )
    for kind, fill, amount_key, count_key, y in bars:
        amount = int(row[amount_key])
        # Hundredths of a unit by integer arithmetic: exact enough to print, no float rounding surprises.
        hundredths = abs(amount) * CHART_PLOT_WIDTH * 100 // largest if largest else 0
        width = f"{hundredths // 100}.{hundredths % 100:02d}"
        shown = _money(amount, cur.numeric)
        count = _count(row.get(count_key, 0))
        parts.append(
            f'<rect class="bar bar-{kind}" x="{CHART_LABEL_WIDTH}" y="{y}" width="{width}" height="{_BAR_HEIGHT}" '
            f'fill="{fill}" data-channel="{_e(channel)}" data-currency="{_e(cur.numeric)}" data-kind="{kind}" '
            f'data-amount="{amount}"><title>{_e(channel)} {kind}: {_e(shown)} ({count} transactions)</title></rect>'
            f'<text x="{CHART_LABEL_WIDTH + hundredths // 100 + 6}" y="{y + _BAR_HEIGHT - 3}">{_e(shown)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def _classes(classes: Sequence[Mapping[str, Any]]) -> str:
    if not classes:
        return _note("No discrepancies of any class.")
    rows = (
        f'<tr data-class="{_e(c["class"])}">'
        f'<th scope="row">{_e(c.get("title") or c["class"])}<span class="sub code">{_e(c["class"])}</span></th>'
        f"{_td(_count(c['count']), True)}{_td(_money(c['amount'], c['currency']), True)}"
        f"{_td(c.get('resolution', ''))}"
        f"{_td(_count(c.get('resolved', 0)), True)}{_td(_count(c.get('suspense', 0)), True)}"
        f"{_td(_count(c.get('exception', 0)), True)}</tr>"
        for c in classes
    )
    headers = (
        ("Class", False), ("Count", True), ("Amount", True), ("Resolution", False),
        ("Resolved", True), ("Suspense", True), ("Exception", True),
    )
    return _table(headers, rows)


def _batches(batches: Sequence[Mapping[str, Any]]) -> str:
    if not batches:
        return _note("No settlement batches were cut.")
    rows = []
    for b in batches:
        code = b["currency"]
        rows.append(
            f'<tr data-batch="{_e(b["batch_id"])}">'
            f'<td class="code">{_e(b["batch_id"])}</td>'
            f'<td><span class="code">{_e(b["merchant_id"])}</span><span class="sub">{_e(b["channel"])}</span></td>'
            f"{_td(_count(b['sales_count']), True)}{_td(_money(b['sales_amount'], code), True)}"
            f"{_td(_count(b['refunds_count']), True)}{_td(_money(b['refunds_amount'], code), True)}"
            f"{_td(_money(b['adjustments'], code), True)}{_td(_money(b['fees'], code), True)}"
            f"{_td(_money(b['net'], code), True)}<td class=\"date\">{_e(b.get('value_date', ''))}</td></tr>"
        )
    headers = (
        ("Batch", False), ("Merchant / channel", False), ("Sales", True), ("Sales amount", True),
        ("Refunds", True), ("Refunds amount", True), ("Adjustments", True), ("Fees", True), ("Net", True),
        ("Value date", False),
    )
    return _table(headers, rows)


def _ordered(discrepancies: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Exceptions, then suspense, then resolved; oldest first within a state, then by id."""
    for d in discrepancies:
        if d["state"] not in STATE_ORDER:
            raise ValueError(
                f"reconciliation summary: discrepancy {d.get('id')!r} has unknown state {d['state']!r} "
                f"(expected one of {', '.join(STATE_ORDER)})"
            )
    return sorted(
        discrepancies, key=lambda d: (STATE_ORDER.index(d["state"]), -int(d.get("age_days", 0)), d.get("id", 0))
    )


def _discrepancies(discrepancies: Sequence[Mapping[str, Any]]) -> str:
    if not discrepancies:
        return _note("No discrepancies: every record matched.")
    rows = []
    for d in discrepancies:
        code, state = d["currency"], d["state"]
        badge = f'<span class="badge state-{state}" style="{_coloured(_STATE_COLOURS[state])}">{_e(state)}</span>'
        rows.append(
            f'<tr data-id="{_e(d["id"])}" data-state="{_e(state)}">'
            f"{_td(d['id'], True)}<td>{badge}</td>"
            f"<td>{_e(d['class'])}<span class=\"sub\">{_e(d.get('source', ''))}</span></td>"
            f'<td><span class="code">{_e(d.get("key", ""))}</span>'
            f'<span class="sub">{_e(" ".join(str(v) for v in (d.get("merchant_id"), d.get("channel")) if v))}</span></td>'
            f"{_td(_money(d.get('host_amount'), code), True)}{_td(_money(d.get('file_amount'), code), True)}"
            f"{_td(_money(d.get('amount'), code), True)}"
            f"<td>{_e(d.get('resolution', ''))}<span class=\"sub\">{_e(d.get('detail', ''))}</span></td>"
            f'<td class="date">{_e(d.get("first_seen", ""))}'
            f'<span class="sub">{_age(d.get("age_days", 0))}</span></td>'
            "</tr>"
        )
    headers = (
        ("#", True), ("State", False), ("Class / source", False), ("Key / merchant, channel", False),
        ("Host", True), ("File", True), ("Difference", True), ("Resolution / detail", False), ("First seen", False),
    )
    return _table(headers, rows)
