"""Logic depth of a synthesised ECP5 netlist: for each flip-flop and memory input, the most logic
levels on a path to it from a flip-flop, a memory or a top-level input (issue 16: where a large
build's long paths are, before placement and routing; synth/REPORT.md "ulx3s-timing").

A level is a LUT4, an entry into a carry chain (a CCU2C's A-D inputs) or an asynchronous LUT RAM
read (TRELLIS_DPR16X4, RAD to DO).  The wide-function multiplexers (PFUMX, L6MUX21) sit in the
slice of their LUTs and count 0.15, a step along a carry chain (CIN to COUT) 0.05.  Routing is
not counted, and on a device 70% full it is 75-90% of a routed path: the depth ranks candidates,
nextpnr's timing report decides.

``python -m apwake.synth.depth NETLIST.json [--min-levels L] [--top N]``: NETLIST is the Yosys
JSON a board build writes (``build/synth/<section>/board/apwake_soc.json``); it is flattened
first (the large builds keep each APIC and core a module of their own).  Prints how many
endpoints have each depth and the deepest ones, at most two per module.
"""

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

from apwake.sim.harness.toolchain import run_yosys, yowasp_tool

__all__ = ["Endpoint", "flatten", "endpoint_depths", "main"]

#: cells whose outputs start paths (their inputs end them)
SEQUENTIAL = frozenset({"TRELLIS_FF", "DP16KD", "PDPW16KD", "TRELLIS_IO", "EHXPLLL", "MULT18X18D", "ALU54B"})
#: the inputs that end paths, per cell type (other sequential cells: all their inputs)
_ENDS = {"TRELLIS_FF": ("DI", "M", "CE", "LSR"), "TRELLIS_DPR16X4": ("DI", "WAD", "WRE")}
_IN_SLICE = 0.15          # PFUMX, L6MUX21
_CARRY_STEP = 0.05        # CCU2C CIN -> COUT

Endpoint = collections.namedtuple("Endpoint", "levels cell port start path")
Endpoint.__doc__ = """A flip-flop or memory input: ``levels`` (float), ``cell`` and ``port`` (its
name), ``start`` (the cell its deepest path starts at: a flip-flop, a memory or an I/O buffer;
None for an undriven net or where a combinational loop was cut) and ``path`` (the combinational
cells on that path, in order)."""


def flatten(netlist_json, yosys):
    """The netlist in ``netlist_json`` (a Yosys JSON file) flattened into its top module, parsed:
    ``yosys`` (a path or command) runs ``read_json``, clears ``keep_hierarchy``, ``flatten`` and
    ``write_json`` in a temporary folder (YoWASP's Yosys sees only its working folder).

    Raises
    ------
    RuntimeError
        Yosys failed (the message ends with its output).
    """
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "in.json").write_bytes(Path(netlist_json).read_bytes())
        run_yosys(yosys, folder, "read_json in.json\nsetattr -mod -unset keep_hierarchy\nhierarchy -auto-top\n"
                  "flatten\nwrite_json flat.json\n", name="flatten", what=f"flattening {netlist_json}")
        return json.loads((Path(folder) / "flat.json").read_text())


def _top(netlist):
    def is_top(module):
        value = str(module.get("attributes", {}).get("top", "0"))
        return int(value, 2 if set(value) <= {"0", "1"} else 10) != 0
    tops = [m for m in netlist["modules"].values() if is_top(m)]
    if len(tops) != 1:
        raise ValueError(f"the netlist must have one top module, not {len(tops)}")
    return tops[0]


def endpoint_depths(netlist):
    """Every flip-flop and memory input of ``netlist`` (parsed Yosys JSON, flattened) as an
    :class:`Endpoint`, deepest first.

    Raises
    ------
    ValueError
        The netlist has no single top module.
    """
    cells = _top(netlist)["cells"]
    driver, driver_port = {}, {}                # net bit -> the cell driving it, and its port
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit], driver_port[bit] = name, port

    def inputs(name, port):
        """(bit, levels) for each input of combinational cell ``name`` that reaches ``port``."""
        cell = cells[name]
        kind, conns = cell["type"], cell["connections"]
        if kind == "TRELLIS_DPR16X4":
            return [(bit, 1.0) for bit in conns.get("RAD", [])]
        if kind == "CCU2C":           # S0: its half's inputs; S1 and COUT: both halves' (the carry)
            halves = ("A0", "B0", "C0", "D0") + (("A1", "B1", "C1", "D1") if port != "S0" else ())
            return ([(bit, 1.0) for p in halves for bit in conns.get(p, [])]
                    + [(bit, _CARRY_STEP) for bit in conns.get("CIN", [])])
        levels = _IN_SLICE if kind in ("PFUMX", "L6MUX21") else 1.0
        return [(bit, levels) for port, bits in conns.items() if cell["port_directions"].get(port) == "input"
                for bit in bits]

    depth = {}          # net bit -> (levels, (cell, the input bit its deepest path comes from) or None)

    def walk(root):
        """Fill ``depth`` for ``root`` and what it depends on, depth first without recursion (a
        carry chain is a long path); a combinational loop is cut where it closes."""
        stack, expanded = [(root, False)], set()
        while stack:
            bit, ready = stack.pop()
            if bit in depth:
                continue
            name = driver.get(bit)
            if name is None or cells[name]["type"] in SEQUENTIAL:
                depth[bit] = (0.0, None)
                continue
            if not ready:
                expanded.add(bit)
                stack.append((bit, True))
                stack.extend((i, False) for i, _ in inputs(name, driver_port[bit])
                             if isinstance(i, int) and i not in depth and i not in expanded)
                continue
            # each bit points back only at bits finished before it (an input still open closes
            # a loop and counts 0), so following the pointers always ends
            # (constants start no path; on equal depth a finished input beats an open one, so
            # the path names where it starts)
            candidates = [(depth[i][0] + levels if i in depth else levels, i in depth, i)
                          for i, levels in inputs(name, driver_port[bit]) if isinstance(i, int)]
            levels, done, i = max(candidates, key=lambda c: c[:2], default=(1.0, False, None))
            depth[bit] = (levels, (name, i if done else None))

    def endpoint(name, port, bit):
        if not isinstance(bit, int):
            return Endpoint(0.0, name, port, None, ())
        walk(bit)
        levels, steps = depth[bit][0], []
        while isinstance(bit, int) and depth.get(bit, (0.0, None))[1] is not None:
            cell, bit = depth[bit][1]
            steps.append(cell)
        return Endpoint(round(levels, 2), name, port, driver.get(bit) if isinstance(bit, int) else None,
                        tuple(reversed(steps)))

    endpoints = []
    for name, cell in cells.items():
        kind = cell["type"]
        if kind not in SEQUENTIAL and kind != "TRELLIS_DPR16X4":
            continue
        ports = _ENDS.get(kind) or [p for p, d in cell["port_directions"].items() if d == "input"]
        for port in ports:
            endpoints.extend(endpoint(name, port, bit) for bit in cell["connections"].get(port, []))
    endpoints.sort(key=lambda e: (-e.levels, e.cell, e.port))
    return endpoints


def _module(cell):
    return ".".join(part for part in cell.split(".")[:-1] if "$" not in part)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apwake.synth.depth", description=__doc__.split("\n\n")[0])
    parser.add_argument("netlist", help="a board build's Yosys JSON (build/synth/<section>/board/apwake_soc.json)")
    parser.add_argument("--min-levels", type=float, default=9.0, help="list endpoints at least this deep (9)")
    parser.add_argument("--top", type=int, default=20, help="list at most this many (20)")
    args = parser.parse_args(argv)
    if not Path(args.netlist).is_file():
        parser.error(f"no netlist at {args.netlist}")
    try:
        endpoints = endpoint_depths(flatten(args.netlist, yowasp_tool("yosys")))
    except (RuntimeError, ValueError) as error:
        parser.exit(1, f"python -m apwake.synth.depth: {error}\n")
    histogram = collections.Counter(int(e.levels) for e in endpoints)
    print("endpoints by logic levels: " + ", ".join(f"{k}: {v}" for k, v in sorted(histogram.items())))
    print(f"at {args.min_levels:g} levels or more: {sum(e.levels >= args.min_levels for e in endpoints)}")
    shown = collections.Counter()
    for e in endpoints:
        if e.levels < args.min_levels or sum(shown.values()) >= args.top:
            break
        module = _module(e.cell)
        if shown[module] < 2:
            shown[module] += 1
            print(f"{e.levels:5.2f}  {e.cell}.{e.port}  from {e.start or 'an input'}, {len(e.path)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
