"""The critical path of a routed build, as nextpnr's log (the ``.tim`` file) reports it.

nextpnr ends its timing analysis with, per clock, "Critical path report for clock '<net>'": one
line per step (``clk-to-q``, ``logic``, ``routing``, ``setup``) with its delay and the running
total in ns, the cell or net it passes, and a closing "<x> ns logic, <y> ns routing" line.
:func:`critical_path` reads the last such report of the SoC's clock, so that a build that misses
its clock says where (synth/REPORT.md "ulx3s-timing" lists what each report led to).
"""

import re

__all__ = ["critical_path", "format_critical_path"]

_HEADER = re.compile(r"Info: Critical path report for clock '(?P<clock>[^']+)'")
_STEP = re.compile(r"Info:\s+(?P<kind>clk-to-q|logic|routing|setup)\s+(?P<delay>[\d.]+)\s+(?P<total>[\d.]+)\s+"
                   r"(?P<what>Source|Net)\s+(?P<name>\S+)")
_SINK = re.compile(r"Info:\s+Sink\s+(?P<name>\S+)")
_SUMMARY = re.compile(r"Info: (?P<logic>[\d.]+) ns logic, (?P<routing>[\d.]+) ns routing")


def _module(cell):
    """The module path of a cell or pin name (``soc.fabric.cluster0.apic2.events``): the
    components before the cell's own name, its pin removed."""
    parts = cell.rsplit(".", 1)[0].split(".")
    return ".".join(parts[:-1])


def critical_path(log_text, *, clock=None):
    """The last critical-path report in ``log_text`` (nextpnr's log) of a clock whose net name
    contains ``clock`` (None: of any clock; the SoC has one, ``$glbnet$cd_sync.clk`` from an
    oscillator, ``$glbnet$pll.clk`` from the ECP5 PLL).

    Returns
    -------
    dict or None
        ``ns`` (the path's delay), ``logic_ns``, ``routing_ns``, ``cells`` (logic steps),
        ``start`` (the launching cell's pin), ``end`` (the capturing pin) and ``modules`` (the
        module paths the logic steps are in, in path order, each once); None when the log has
        no report for that clock (placement or routing did not finish).
    """
    found = None
    lines = log_text.splitlines()
    for k, line in enumerate(lines):
        header = _HEADER.match(line)
        if not header or (clock is not None and clock not in header.group("clock")):
            continue
        steps, sinks, summary = [], [], None
        for following in lines[k + 1:]:
            if (step := _STEP.match(following)):
                steps.append(step)
            elif (sink := _SINK.match(following)):
                sinks.append(sink.group("name"))
            elif (summary := _SUMMARY.match(following)):
                break
        if not steps or summary is None:
            continue
        modules = []
        for step in steps:
            if step.group("kind") == "logic" and (module := _module(step.group("name"))) not in modules:
                modules.append(module)
        found = {"clock": header.group("clock"), "ns": float(steps[-1].group("total")),
                 "logic_ns": float(summary.group("logic")), "routing_ns": float(summary.group("routing")),
                 "cells": sum(step.group("kind") == "logic" for step in steps),
                 "start": steps[0].group("name"), "end": sinks[-1] if sinks else steps[-1].group("name"),
                 "modules": modules}
    return found


def format_critical_path(path):
    """One Markdown paragraph for synth/REPORT.md."""
    return (f"Critical path (nextpnr, routed): {path['ns']:.2f} ns ({path['logic_ns']:.2f} ns logic, "
            f"{path['routing_ns']:.2f} ns routing, {path['cells']} logic cells) from `{path['start']}` to "
            f"`{path['end']}`, through " + ", ".join(f"`{m}`" for m in path["modules"])
            + " (Yosys names a cell after a net it drives, so a name is where the logic sits, roughly).")
