"""A load run's report: one JSON document, and an HTML page a performance engineer can forward.

The page carries its two plots (latency histogram, TPS over time) as PNGs
inside it (data: URIs) and nothing that runs or loads, so it opens from a
mail attachment or a CI artifact as it is. Plots are drawn with matplotlib
on its Agg backend: no screen, no GUI toolkit.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from possim.wire.atomic import atomic_text

HISTOGRAM_BINS = 60
REPORT_MODE = 0o644
"""Readable by others: the CI user who collects a report is often not the one who ran the load."""


def write_report(report: dict[str, Any], latencies_ms: Sequence[float], json_path: Path | None,
                 html_path: Path | None) -> None:
    """Write the JSON and/or HTML report, each to a temporary name renamed into place (never half-written).
    `latencies_ms` (every answered transaction's) feed the histogram; the JSON keeps only their percentiles."""
    if json_path is not None:
        with atomic_text(json_path, mode=REPORT_MODE) as out:
            out.write(json.dumps(report, indent=2))
    if html_path is not None:
        with atomic_text(html_path, mode=REPORT_MODE) as out:
            out.write(render_html(report, latencies_ms))


def render_html(report: dict[str, Any], latencies_ms: Sequence[float]) -> str:
    figures = report["figures"]
    latency = figures["latency_ms"]
    rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td>{k['count']:,}</td><td>{k['approved']:,}</td>"
        f"<td>{_ms(k['latency_ms'], 'p50')}</td><td>{_ms(k['latency_ms'], 'p99')}</td></tr>"
        for kind, k in figures["kinds"].items()
    )
    codes = "".join(f"<tr><td>{html.escape(code)}</td><td>{count:,}</td></tr>"
                    for code, count in figures["response_codes"].items())
    run = report["run"]
    title = f"possim load — {run['terminals']} terminals, {run['dialect']}, {html.escape(run['target'])}"
    verdict = report.get("verdict") or ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 24px; color: #1f2328; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 10px; text-align: right; }}
th {{ background: #f6f8fa; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; height: auto; display: block; margin: 8px 0 16px; }}
.fail {{ color: #cf222e; font-weight: 600; }} .pass {{ color: #1a7f37; font-weight: 600; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(run['mode'])}, {run['duration_s']:.1f} s of load, mix {html.escape(run['mix'])}, started
{html.escape(run['started'])}. <span class="{'fail' if verdict.startswith('FAIL') else 'pass'}">{html.escape(verdict)}</span></p>
<table><tr><th>transactions</th><th>TPS</th><th>approved TPS</th><th>error rate</th><th>timeouts</th>
<th>reversals (approved)</th></tr>
<tr><td>{figures['transactions']:,}</td><td>{figures['tps']:,.1f}</td><td>{figures['approved_tps']:,.1f}</td>
<td>{figures['error_rate']:.2%}</td><td>{figures['timeouts']:,}</td>
<td>{figures['reversals']['sent']:,} ({figures['reversals']['approved']:,})</td></tr></table>
<h2>Latency (ms)</h2>
<table><tr><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>
<tr>{"".join(f"<td>{_ms(latency, name)}</td>" for name in ("p50", "p90", "p99", "p99.9", "max", "mean"))}</tr></table>
<img alt="latency histogram" src="data:image/png;base64,{_png(_histogram, report, latencies_ms)}">
<h2>Throughput</h2>
<img alt="transactions per second over the run" src="data:image/png;base64,{_png(_tps_over_time, report, latencies_ms)}">
<h2>By kind</h2>
<table><tr><th>kind</th><th>count</th><th>approved</th><th>p50 ms</th><th>p99 ms</th></tr>{rows}</table>
<h2>Response codes</h2>
<table><tr><th>code</th><th>count</th></tr>{codes}</table>
</body></html>
"""


def _ms(latency: dict[str, float] | None, name: str) -> str:
    """A latency figure for a table cell; a dash when nothing was answered."""
    return "–" if latency is None else f"{latency[name]:.2f}"


def _png(draw: Any, report: dict[str, Any], latencies_ms: Sequence[float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.2), dpi=100)
    axes = figure.add_subplot()
    draw(axes, report, latencies_ms)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _histogram(axes: Any, report: dict[str, Any], latencies_ms: Sequence[float]) -> None:
    if latencies_ms:
        axes.hist(latencies_ms, bins=HISTOGRAM_BINS, color="#0969da")
        axes.set_yscale("log")
    latency = report["figures"]["latency_ms"]
    for name, style in (("p50", ":"), ("p99", "--")):
        if latency is not None:
            axes.axvline(latency[name], color="#cf222e", linestyle=style, label=name)
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("transactions")
    if latency is not None:
        axes.legend()


def _tps_over_time(axes: Any, report: dict[str, Any], _: Sequence[float]) -> None:
    figures = report["figures"]
    whole = max(1, int(report["run"]["duration_s"]))  # the last, partial second would read as a drop
    seconds = range(min(whole, len(figures["tps_per_second"])))
    axes.plot(seconds, figures["tps_per_second"][: len(seconds)], color="#0969da", label="transactions")
    axes.plot(seconds, figures["errors_per_second"][: len(seconds)], color="#cf222e", label="not approved")
    axes.set_xlabel("second of the run")
    axes.set_ylabel("per second")
    axes.set_ylim(bottom=0)
    axes.legend()
