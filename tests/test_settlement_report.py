"""The reconciliation report page, read back through a real HTML parser.

The tree builder below is strict: an end tag that does not close the open
element fails the test, so every page checked here is also well nested.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from possim.settlement.report import CHART_PLOT_WIDTH, render_report

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def own_text(self) -> str:
        """Text without <title> tooltips, i.e. what is drawn."""
        return "".join(c if isinstance(c, str) else ("" if c.tag == "title" else c.own_text()) for c in self.children)

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and all(child.attrs.get(_attr(k)) == v for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag}> with {attrs}"
        return found[0]


def _attr(keyword: str) -> str:
    """class_ -> class, data_kind -> data-kind."""
    return keyword.rstrip("_").replace("_", "-")


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(page: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(page)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(n.tag for n in builder.stack[1:])
    assert builder.doctype is not None and builder.doctype.lower() == "doctype html"
    return builder.root


def channel(name: str, cur: str, matched: int, unmatched: int) -> dict:
    return {"channel": name, "currency": cur, "matched_count": 3, "matched_amount": matched,
            "unmatched_count": 1, "unmatched_amount": unmatched}


def discrepancy(ident: int, state: str, age: int = 0, cur: str = "156", host: int | None = 100,
                file: int | None = 200, detail: str = "clearing.txt line 1") -> dict:
    return {"id": ident, "class": "amount_mismatch", "source": "clearing", "key": f"633800000004/{ident:08d}",
            "merchant_id": "898310048160001", "channel": "card:unionpay", "currency": cur, "host_amount": host,
            "file_amount": file, "amount": 100, "state": state, "resolution": "adjustment entry",
            "detail": detail, "first_seen": "2026-12-04", "age_days": age}


BASE = {
    "business_date": "2026-12-04", "generated_at": "2026-12-05T00:05:00", "run": 2, "verdict": "balanced",
    "sources": [{"kind": "clearing", "path": "in/clearing.txt", "records": 12}],
    "channels": [channel("card:unionpay", "156", 123450, 9900)],
    "classes": [{"class": "missing_in_file", "title": "Missing in file", "count": 1, "amount": 1500,
                 "currency": "156", "resolution": "suspense", "resolved": 0, "suspense": 1, "exception": 0}],
    "invariants": [{"name": "money balances", "rule": "a = b", "passed": True, "left": 5, "right": 5,
                    "currency": "156", "detail": ""}],
    "batches": [{"batch_id": "20261204-898310048160001-card:unionpay-156", "merchant_id": "898310048160001",
                 "channel": "card:unionpay", "currency": "156", "sales_count": 3, "sales_amount": 1000,
                 "refunds_count": 1, "refunds_amount": 100, "adjustments": 0, "fees": 6, "net": 894,
                 "value_date": "2026-12-05"}],
    "discrepancies": [discrepancy(1, "resolved")],
}


def summary(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def width(bar: Node) -> float:
    return float(bar.attrs["width"])


def test_bars_carry_minor_amounts_and_scale_to_the_largest():
    page = parse(render_report(summary(channels=[
        channel("card:unionpay", "156", 400000, 200000),
        channel("qr:alipay", "156", 100000, 0),
    ])))
    bars = {(b.attrs["data-channel"], b.attrs["data-kind"]): b for b in page.find_all("rect")
            if "bar" in b.classes()}
    assert {k: b.attrs["data-amount"] for k, b in bars.items()} == {
        ("card:unionpay", "matched"): "400000", ("card:unionpay", "unmatched"): "200000",
        ("qr:alipay", "matched"): "100000", ("qr:alipay", "unmatched"): "0",
    }
    largest = width(bars["card:unionpay", "matched"])
    assert largest == pytest.approx(CHART_PLOT_WIDTH, abs=1)
    assert width(bars["card:unionpay", "unmatched"]) == pytest.approx(largest / 2, abs=1)
    assert width(bars["qr:alipay", "matched"]) == pytest.approx(largest / 4, abs=1)
    assert width(bars["qr:alipay", "unmatched"]) == 0
    assert "4,000.00 CNY" in bars["card:unionpay", "matched"].find("title").text()
    assert "0.00 CNY" in bars["qr:alipay", "unmatched"].find("title").text()
    rows = page.find_all("g", class_="row")
    assert [r.attrs["data-channel"] for r in rows] == ["card:unionpay", "qr:alipay"]


def test_each_currency_is_scaled_on_its_own():
    # 5,000 yen in minor units is far below 900.00 CNY, yet it is the largest JPY amount.
    page = parse(render_report(summary(channels=[
        channel("card:unionpay", "156", 90000, 45000),
        channel("card:visa", "392", 5000, 1000),
    ])))
    charts = {svg.attrs["data-currency"]: svg for svg in page.find_all("svg")}
    assert set(charts) == {"156", "392"}
    yen = {b.attrs["data-kind"]: b for b in charts["392"].find_all("rect") if "bar" in b.classes()}
    assert width(yen["matched"]) == pytest.approx(CHART_PLOT_WIDTH, abs=1)
    assert width(yen["unmatched"]) == pytest.approx(CHART_PLOT_WIDTH / 5, abs=1)
    assert "5,000 JPY" in yen["matched"].find("title").text()


def test_all_zero_channel_keeps_its_row():
    page = parse(render_report(summary(channels=[channel("qr:wechat", "156", 0, 0)])))
    bars = [b for b in page.find_all("rect") if "bar" in b.classes()]
    assert [(b.attrs["data-kind"], b.attrs["data-amount"], width(b)) for b in bars] == [
        ("matched", "0", 0), ("unmatched", "0", 0)]
    assert page.find("g", class_="row").attrs["data-channel"] == "qr:wechat"


def _rgb(colour: str) -> tuple[int, int, int]:
    assert colour.startswith("#") and len(colour) == 7, colour
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _looks(colour: str) -> str:
    r, g, b = _rgb(colour)
    if g > r and g > b:
        return "green"
    if r > g > b and g > r * 0.4:
        return "amber"
    if r > 2 * g and r > 2 * b:
        return "red"
    return "other"


def _style(node: Node) -> dict[str, str]:
    pairs = (item.split(":", 1) for item in (node.attrs.get("style") or "").split(";") if item.strip())
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("verdict, css_class, hue", [
    ("balanced", "verdict-balanced", "green"),
    ("resolved", "verdict-resolved", "green"),
    ("open exceptions", "verdict-open-exceptions", "amber"),
    ("invariant failed", "verdict-invariant-failed", "red"),
])
def test_verdict_is_named_and_coloured(verdict, css_class, hue):
    page = parse(render_report(summary(verdict=verdict)))
    header = page.find("header")
    shown = header.find(data_verdict=verdict)
    assert css_class in shown.classes()
    assert shown.text() == verdict
    assert _looks(_style(shown)["color"]) == hue
    assert "2026-12-04" in header.find("h1").text()
    assert verdict in page.find("title").text()


def test_unknown_verdict_is_refused():
    with pytest.raises(ValueError, match="unknown verdict 'fine'"):
        render_report(summary(verdict="fine"))


def test_invariants_get_pass_and_fail_badges():
    invariants = [
        {"name": "money balances", "rule": "approved − reversed = net + fees", "passed": True,
         "left": 12345, "right": 12345, "currency": "156", "detail": "ok"},
        {"name": "file totals", "rule": "records = trailer", "passed": False,
         "left": 1250000, "right": 1249000, "currency": "048", "detail": "trailer differs"},
    ]
    page = parse(render_report(summary(invariants=invariants)))
    rows = page.find("section", id="invariants").find_all("tr")
    badges = {r.attrs["data-invariant"]: r.find("span") for r in rows if "data-invariant" in r.attrs}
    assert {name: b.text() for name, b in badges.items()} == {"money balances": "PASS", "file totals": "FAIL"}
    assert "badge-pass" in badges["money balances"].classes()
    assert "badge-fail" in badges["file totals"].classes()
    assert _looks(_style(badges["money balances"])["color"]) == "green"
    assert _looks(_style(badges["file totals"])["color"]) == "red"
    failed = page.find("tr", data_invariant="file totals")
    assert [td.text() for td in failed.find_all("td", class_="num")] == ["1,250.000 BHD", "1,249.000 BHD"]


HOSTILE = "in/<script>alert('x')</script>&\"q\".txt"


def test_hostile_strings_are_escaped():
    page_text = render_report(summary(
        sources=[{"kind": "clearing", "path": HOSTILE, "records": 1}],
        channels=[channel(HOSTILE, "156", 1, 1)],
        discrepancies=[discrepancy(9, "exception", detail=HOSTILE)],
    ))
    assert "<script" not in page_text.lower()
    page = parse(page_text)
    assert page.find_all("script") == []
    assert page.find("section", id="sources").find("td", class_="code").text() == HOSTILE
    assert HOSTILE in page.find("tr", data_id="9").text()
    assert {b.attrs["data-channel"] for b in page.find_all("rect") if "bar" in b.classes()} == {HOSTILE}


def test_page_loads_nothing_and_runs_nothing():
    page = parse(render_report(summary()))
    for tag in ("script", "link", "img", "iframe", "object", "embed"):
        assert page.find_all(tag) == [], tag

    def walk(node: Node):
        yield node
        for child in node.children:
            if isinstance(child, Node):
                yield from walk(child)

    attributes = {name for node in walk(page) for name in node.attrs}
    assert not attributes & {"src", "href", "onload", "onclick", "onerror"}
    assert "url(" not in page.find("style").text()


def test_amounts_in_exponent_0_and_3_currencies():
    classes = [
        {"class": "missing_in_host", "title": "Missing in host", "count": 3, "amount": 1234567, "currency": "392",
         "resolution": "exception", "resolved": 0, "suspense": 0, "exception": 3},
        {"class": "amount_mismatch", "title": "Amount mismatch", "count": 1, "amount": 1234567, "currency": "048",
         "resolution": "adjustment", "resolved": 1, "suspense": 0, "exception": 0},
    ]
    page = parse(render_report(summary(
        classes=classes,
        discrepancies=[discrepancy(4, "exception", cur="048", host=None, file=5)],
    )))
    rows = [row for row in page.find_all("tr") if "data-class" in row.attrs]
    amounts = {row.attrs["data-class"]: row.find_all("td")[1] for row in rows}
    assert amounts["missing_in_host"].text() == "1,234,567 JPY"
    assert amounts["amount_mismatch"].text() == "1,234.567 BHD"
    assert all("num" in cell.classes() for cell in amounts.values())
    host, file, difference = page.find("tr", data_id="4").find_all("td", class_="num")[1:]
    assert (host.text(), file.text(), difference.text()) == ("\u2014", "0.005 BHD", "0.100 BHD")


def test_amount_columns_are_right_aligned():
    page = parse(render_report(summary()))
    css = page.find("style").text().replace(" ", "")
    assert ".num{text-align:right;" in css
    headers = page.find("section", id="batches").find_all("th")
    numeric = [h.text() for h in headers if "num" in h.classes()]
    assert numeric == ["Sales", "Sales amount", "Refunds", "Refunds amount", "Adjustments", "Fees", "Net"]
    net = page.find("tr", data_batch=BASE["batches"][0]["batch_id"]).find_all("td")[8]
    assert (net.text(), "num" in net.classes()) == ("8.94 CNY", True)


def test_discrepancies_list_exceptions_then_suspense_then_resolved():
    rows = [
        discrepancy(1, "resolved"), discrepancy(2, "suspense", age=1), discrepancy(3, "exception", age=0),
        discrepancy(4, "resolved"), discrepancy(5, "exception", age=6), discrepancy(6, "suspense", age=2),
    ]
    page = parse(render_report(summary(discrepancies=rows)))
    shown = [(r.attrs["data-state"], r.attrs["data-id"])
             for r in page.find("section", id="discrepancies").find_all("tr") if "data-id" in r.attrs]
    assert shown == [("exception", "5"), ("exception", "3"), ("suspense", "6"), ("suspense", "2"),
                     ("resolved", "1"), ("resolved", "4")]
    assert "exception 2, suspense 2, resolved 2" in page.find("p", class_="meta").text()


def test_unknown_discrepancy_state_is_refused():
    with pytest.raises(ValueError, match="discrepancy 7 has unknown state 'open'"):
        render_report(summary(discrepancies=[discrepancy(7, "open")]))


@pytest.mark.parametrize("empty", [
    {"sources": [], "channels": [], "classes": [], "invariants": [], "batches": [], "discrepancies": []},
    {key: None for key in ("sources", "channels", "classes", "invariants", "batches", "discrepancies")},
])
def test_empty_inputs_give_a_valid_page_with_notes(empty):
    page = parse(render_report(summary(**empty)))
    assert page.find_all("svg") == [] and page.find_all("table") == []
    sections = [s.attrs["id"] for s in page.find_all("section")]
    assert sections == ["sources", "invariants", "channels", "classes", "batches", "discrepancies"]
    chart_note = page.find("section", id="channels").find("p", class_="note")
    assert "no settled transactions" in chart_note.text().lower()
    assert all(s.find_all("p", class_="note") for s in page.find_all("section"))
