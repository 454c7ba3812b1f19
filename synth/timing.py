"""The critical path of a routed build, from nextpnr's report (``--report``, the JSON file whose
``fmax`` and ``utilization`` the board report already reads).

Its ``critical_paths`` hold, per clock pair, the worst path as a list of steps (``clk-to-q``,
``logic``, ``routing``, ``setup``), each with its delay in ns and the cells it joins.
:func:`critical_path` takes the one within a clock (launched and captured by the same edge), so
that a build that misses its clock says where (synth/REPORT.md "ulx3s-timing" lists what each
report led to).
"""

__all__ = ["critical_path", "format_critical_path"]


def _module(cell):
    """The module path of a cell name (``soc.fabric.cluster0.apic2.events``): the components
    before the cell's own name."""
    return ".".join(cell.split(".")[:-1])


def critical_path(report):
    """The critical path within the SoC's clock in ``report`` (nextpnr's JSON report, parsed).

    Returns
    -------
    dict or None
        ``clock``, ``ns`` (the path's delay), ``logic_ns`` (cells: clock-to-output, logic and
        setup), ``routing_ns``, ``cells`` (logic steps), ``start`` and ``end`` (``cell.port`` of
        the launching and capturing flip-flops) and ``modules`` (the module paths the logic
        steps are in, in path order, each once); None when the report has no such path.
    """
    for entry in report.get("critical_paths", []):
        steps = entry.get("path") or []
        if entry.get("from") != entry.get("to") or not entry.get("from", "").startswith("posedge") or not steps:
            continue
        routing = sum(step["delay"] for step in steps if step["type"] == "routing")
        total = sum(step["delay"] for step in steps)
        logic = [step for step in steps if step["type"] == "logic"]
        modules = []
        for step in logic:
            if (module := _module(step["to"]["cell"])) not in modules:
                modules.append(module)
        return {"clock": entry["from"].split(" ", 1)[1], "ns": round(total, 2),
                "logic_ns": round(total - routing, 2), "routing_ns": round(routing, 2), "cells": len(logic),
                "start": f"{steps[0]['from']['cell']}.{steps[0]['from']['port']}",
                "end": f"{steps[-1]['to']['cell']}.{steps[-1]['to']['port']}", "modules": modules}
    return None


def format_critical_path(path):
    """One Markdown paragraph for synth/REPORT.md."""
    return (f"Critical path (nextpnr, routed): {path['ns']:.2f} ns ({path['logic_ns']:.2f} ns logic, "
            f"{path['routing_ns']:.2f} ns routing, {path['cells']} logic cells) from `{path['start']}` to "
            f"`{path['end']}`, through " + ", ".join(f"`{m}`" for m in path["modules"])
            + " (Yosys names a cell after a net it drives, so a name is where the logic sits, roughly).")
