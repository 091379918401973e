"""A replay run as a JUnit XML file, the report Jenkins, GitLab and GitHub Actions all read.

There is no one JUnit schema; the shape here is the common subset those
tools accept (the Ant/Jenkins XSD): `<testsuites>` holding one
`<testsuite>` with integer counts, a float `time` in seconds and an ISO 8601
`timestamp`, then one `<testcase>` per scenario with `<failure>` or
`<error>` and the steps run in `<system-out>`. The file goes to a temporary
name first and is renamed, so a CI job never reads half a report.
"""

from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from .results import CaseResult
from .suite import RawCase, SuiteResult

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold at all, not even escaped (a host may answer with control bytes)."""


def write_junit(result: SuiteResult, path: Path, *, suite_name: str = "possim replay") -> None:
    """Write `result` to `path` as JUnit XML."""
    counts = {"tests": str(result.total), "failures": str(result.failed), "errors": str(result.errors)}
    time = f"{result.duration:.3f}"
    root = ET.Element("testsuites", name=suite_name, **counts, time=time)
    suite = ET.SubElement(root, "testsuite", name=suite_name, **counts, skipped="0", time=time,
                          timestamp=result.started.replace(microsecond=0).isoformat(), hostname=socket.gethostname())
    for case in result.cases:
        _scenario_case(suite, case)
    for raw in result.raw:
        _raw_case(suite, raw)
    ET.indent(root)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        ET.ElementTree(root).write(temporary, encoding="utf-8", xml_declaration=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _classname(path: Path) -> str:
    """`fixtures/scenarios/purchase.yaml` → `scenarios.purchase`: CI tools group cases by it, folder first."""
    return ".".join(part for part in (path.parent.name, path.stem) if part)


def _testcase(suite: ET.Element, path: Path, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_text(_classname(path)), name=_text(name), time=f"{seconds:.3f}")


def _scenario_case(suite: ET.Element, case: CaseResult) -> None:
    scenario = case.scenario
    element = _testcase(suite, scenario.path, scenario.name, case.duration)
    if case.error is not None:
        ET.SubElement(element, "error", message=_text(case.error), type="ReplayError").text = _text(case.error)
    elif case.failures:
        body = "\n".join([f"step {f.step} {f.step_name!r}: {f.message}" if f.step else f.message
                          for f in case.failures] + ([case.trace] if case.trace else []))
        failure = ET.SubElement(element, "failure", message=_text(case.failures[0].message), type="ExpectationFailed")
        failure.text = _text(body)
    ran = [f"{step.index}. {step.name} ({step.action})" for step in scenario.steps[:case.steps_run]]
    ET.SubElement(element, "system-out").text = _text(
        "\n".join([f"steps run: {case.steps_run} of {len(scenario.steps)}", *ran]))


def _raw_case(suite: ET.Element, raw: RawCase) -> None:
    """A .hex file is one case; every frame's verdict goes in the failure, or in system-out when all passed."""
    element = _testcase(suite, raw.path, raw.name, raw.duration)
    if raw.verdict == "passed":
        ET.SubElement(element, "system-out").text = _text(raw.details())
    else:
        kind, kind_type = ("failure", "AnswerDiffers") if raw.verdict == "failed" else ("error", "ReplayError")
        ET.SubElement(element, kind, message=_text(raw.message), type=kind_type).text = _text(raw.details())


def _text(value: str) -> str:
    """`value` with what XML cannot hold shown as \\xNN, so the report stays well-formed."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
