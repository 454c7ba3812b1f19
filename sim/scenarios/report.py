"""Scenario reports: one JSON-able dict per run, its text form and its timeline picture.

Report fields: ``scenario``, ``cpus``, ``passed``, ``online`` (APIC IDs that reached the OS),
``failures`` (each with ``cpu`` = APIC ID, ``port``, ``state``, ``where``, ``message``),
``sim_time_ns``, ``guest_time_ns`` (``sim_time_ns / time_scale``: guest delays unscaled, as the
kernel sees them), ``cycles``, ``clock_ns``, ``wall_s`` (the run in the simulator from the clock's
start to the report, seconds), ``setup_s`` (the testbench's set-up before the clock started: the
ports' handle lookups), ``waves``, ``time_scale``, ``options``, ``bus_messages`` (and
``bus_messages_by_mode``), ``corruptions`` (memory writes into pages owned by someone else),
``timeline`` (per CPU: state changes and milestones with simulated times; the state is ``SMM``
while the CPU is in SMM; NMIs taken, latched and collapsed, SMM entries; ``started``: how the CPU
last started and the architectural state it started in), and the scenario's own detail
(``method``, ``expected_online``, ``storm``, ``smm``, ...).
``report.schema.json`` beside this module describes the report as ``apwake run --json`` prints it.

Times: the simulation runs guest software delays (10 ms after INIT, the 10 s call-in wait)
multiplied by ``time_scale``; guest time is simulated time divided by it, the time a kernel
developer reasons in.  Hardware latencies (a few cycles per message) are not scaled, so in guest
time they look ``1 / time_scale`` times longer than they are; the text report and the picture
say which time they show.
"""

from pathlib import Path

import cocotb

from apwake.sim.harness.clocking import CLOCK_NS
from apwake.sim.harness.handshake import seed_note
from apwake.sim.harness.toolchain import import_extra

__all__ = ["RUN_DEPENDENT", "make_report", "format_report", "plot_timeline", "STATE_COLORS", "AXES", "SCHEMA_PATH",
           "guest_ns"]

#: the time a timeline is drawn in: guest time (delays unscaled) or simulated time
AXES = ("guest", "sim")
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

STATE_COLORS = {"UNINITIALIZED": "#b0b0b0", "INIT_RECEIVED": "#f0a030", "AP_RESET_HOLD": "#a050c0",
                "STOPPED": "#c03030",
                "RUNNABLE": "#3a9a3a", "HALTED": "#4a78c8", "SMM": "#20a0a0"}


def _by_mode(cycles):
    """``{delivery mode name: messages}`` of the fabric's bus cycles (INIT counts both INIT and
    INIT de-assert; STARTUP is the SIPI)."""
    counts = {}
    for cycle in cycles:
        mode = cycle.msg["delivery_mode"]
        name = getattr(mode, "name", str(mode))
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


#: report fields that differ between two runs of the same scenario on the same design (times of
#: this machine and whether the build was reused): what a comparison of two reports leaves out
RUN_DEPENDENT = ("wall_s", "setup_s", "build_s", "build_reused")


def make_report(name, machine, options, detail, *, wall_s, setup_s=None, waves=None):
    detail = dict(detail)
    kernel = detail.pop("kernel", None)
    now = cocotb.utils.get_sim_time("ns")
    online = kernel.online_apic_ids() if kernel else []
    expected = detail.get("expected_online", [])
    failures = list(machine.failures)
    for apic_id in expected:
        if apic_id not in online and not any(f["cpu"] == apic_id for f in failures):
            cpu = next(c for c in machine.cpus if c.apic_id == apic_id)
            machine.fail(cpu, f"{cpu.name} did not come online ({cpu.position})")
            failures = list(machine.failures)
    timeline = []
    for cpu in machine.cpus:
        timeline.append({
            "cpu": cpu.apic_id, "port": cpu.index, "bsp": cpu.is_bsp, "state": cpu.status,
            "where": cpu.where, "ignored_sipis": cpu.ignored_sipis,
            "nmis": cpu.nmis_taken, "nmis_collapsed": cpu.nmis_collapsed,
            "smm_entries": cpu.smm_entries,
            "entry": None if cpu.entry is None else {"cs": cpu.entry[0], "ip": cpu.entry[1]},
            "started": cpu.started,
            "events": [[round(t, 3), label, note] for t, label, note in cpu.history],
        })
    skipper = machine.time_skipper
    if skipper is not None:
        detail.setdefault("time_skip", {"skips": skipper.skips,
                                        "cycles_skipped": skipper.cycles_skipped})
    return {
        "scenario": name,
        "cpus": len(machine.cpus),
        "passed": not failures and sorted(online) == sorted(expected),
        "online": online,
        "failures": failures,
        "sim_time_ns": now,
        "guest_time_ns": now / options.time_scale,
        "cycles": int(now // CLOCK_NS),
        "clock_ns": CLOCK_NS,
        "wall_s": round(wall_s, 3),
        **({} if setup_s is None else {"setup_s": round(setup_s, 3)}),
        "waves": None if waves is None else str(waves),
        "time_scale": options.time_scale,
        "options": options.to_dict(),
        "bus_messages": len(machine.env.monitor.cycles),
        "bus_messages_by_mode": _by_mode(machine.env.monitor.cycles),
        # how the models waited (apwake.sim.harness.watch): outputs served by one callback
        "watched_outputs": len(machine.env.watched or ()),
        "corruptions": [c.as_dict() for c in machine.memory.corruptions],
        "timeline": timeline,
        **detail,
    }


def guest_ns(report, sim_ns):
    """Simulated ``sim_ns`` in guest time: delays unscaled, as the kernel sees them."""
    return sim_ns / report["time_scale"]


_UNITS = (("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1))


def _unit(ns):
    """The largest unit in which ``ns`` is at least 1 (ns for 0)."""
    return next(((name, size) for name, size in _UNITS if abs(ns) >= size), _UNITS[-1])


def _duration(ns):
    name, size = _unit(ns)
    return f"{ns / size:.4g}{name}"


def _us(ns):
    return f"{ns / 1000:.2f}us"


def format_report(report, *, max_cpus=None, axis="guest"):
    """The per-CPU timeline and a summary, as text.

    Parameters
    ----------
    report : dict
        From :func:`make_report`.
    max_cpus : int, optional
        Timeline rows shown (the rest: see ``--json``).
    axis : {"guest", "sim"}
        The time of the timeline's events: guest time (``sim / time_scale``) or simulated time.
        The summary gives both, and the cycles.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    scale = report["time_scale"]
    lines = [f"scenario {report['scenario']} on {report['cpus']} CPUs"
             + (f" ({report['method']})" if report.get("method") else "")
             + f", guest delays x{scale:g} in simulation",
             "times: " + (f"guest time (simulated / {scale:g}: delays as the kernel sees them)"
                          if axis == "guest" else f"simulated (guest delays x{scale:g})")]
    when = (lambda t: _duration(guest_ns(report, t))) if axis == "guest" else _us
    rows = report["timeline"] if max_cpus is None else report["timeline"][:max_cpus]
    for cpu in rows:
        role = "BSP" if cpu["bsp"] else "AP "
        steps = []
        last_state = None
        for t, state, note in cpu["events"]:
            text = state if state != last_state else ""
            if note and note != "reset":
                text = f"{text} ({note})" if text else note
            steps.append(f"{when(t)} {text}")
            last_state = state
        lines.append(f"  CPU {cpu['port']:3d} APIC {cpu['cpu']:#04x} {role}: " + " | ".join(steps))
    if max_cpus is not None and len(report["timeline"]) > max_cpus:
        lines.append(f"  ... {len(report['timeline']) - max_cpus} more CPUs (see --json)")
    lines.append(f"online: {len(report['online'])} of {len(report.get('expected_online', []))} "
                 f"expected ({', '.join(f'{i:#x}' for i in report['online'][:16])}"
                 f"{', ...' if len(report['online']) > 16 else ''})")
    ignored = sum(c["ignored_sipis"] for c in report["timeline"])
    lines.append(f"ignored SIPIs: {ignored}; fabric messages: {report['bus_messages']}")
    if "storm" in report:
        lines.append(f"ipi storm: {report['storm']}")
    if "smm" in report:
        smm = report["smm"]
        lines.append(f"SMM: CPU {smm['port']} (APIC ID {smm['cpu']:#x}), SMI held "
                     f"{smm['smm_us']:g} us guest time: {smm['outcome']}")
    lines.append(f"simulated {report['sim_time_ns'] / 1000:.1f} us = {report['cycles']} cycles "
                 f"= {_duration(guest_ns(report, report['sim_time_ns']))} guest time, "
                 f"in {report['wall_s']:.2f} s wall from the clock's start "
                 f"({report['cycles'] / max(report['wall_s'], 1e-9):,.0f} cycles/s)"
                 + (f" after {report['setup_s']:.2f} s of set-up" if "setup_s" in report else ""))
    if report.get("time_skip", {}).get("skips"):
        skip = report["time_skip"]
        lines.append(f"time skipping: {skip['cycles_skipped']:,} of the cycles not clocked one by one "
                     f"({skip['skips']} skips of the quiescent design; --no-time-skip clocks them)")
    for failure in report["failures"]:
        lines.append(f"FAILURE CPU {failure['port']} (APIC ID {failure['cpu']:#x}, "
                     f"{failure['state']}): {failure['message']}")
    # a failed seeded run says how to reproduce it (apwake.sim.harness.handshake's seeds, kept in the report)
    lines.append("PASSED" if report["passed"] else "FAILED" + seed_note(report.get("driver_seeds", {})))
    return "\n".join(lines)


def plot_timeline(report, path, *, axis="guest"):
    """Each CPU's state over time (PNG or SVG by the file name), its folder made if missing.

    ``axis``: "guest" draws guest time (``sim / time_scale``, in the unit that fits the run),
    "sim" simulated microseconds.
    """
    matplotlib = import_extra("matplotlib", "plot", "a timeline picture")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    scale = report["time_scale"]
    if axis == "guest":
        unit, size = _unit(guest_ns(report, report["sim_time_ns"]))
        per_sim_ns = 1 / (scale * size)
        label = (f"guest time ({unit}): simulated time / {scale:g}, "
                 f"delays as the kernel sees them")
    else:
        per_sim_ns = 1 / 1000
        label = f"simulated time (us); guest delays scaled x{scale:g}"
    rows = report["timeline"]
    end = report["sim_time_ns"] * per_sim_ns
    height = max(2.5, 0.6 + 0.2 * len(rows))
    fig, ax = plt.subplots(figsize=(12, height + 0.6), layout="constrained")
    for y, cpu in enumerate(rows):
        events = cpu["events"]
        for k, (t, state, note) in enumerate(events):
            t_next = events[k + 1][0] if k + 1 < len(events) else report["sim_time_ns"]
            x = t * per_sim_ns
            ax.broken_barh([(x, max((t_next - t) * per_sim_ns, 0))], (y - 0.4, 0.8),
                           facecolors=STATE_COLORS.get(state, "#888888"), linewidth=0)
            if note == "online":
                ax.plot(x, y, marker="|", color="black", markersize=8)
            elif "ignored" in note:
                ax.plot(x, y, marker="x", color="#c03030", markersize=5)
            elif "NMI" in note and "handler" in note:
                ax.plot(x, y, marker="^", color="black", markersize=5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{'BSP' if c['bsp'] else 'AP'} {c['cpu']:#x}" for c in rows],
                       fontsize=7 if len(rows) > 32 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, end)
    ax.set_xlabel(label)
    ax.set_title(f"{report['scenario']}: {len(report['online'])} of {report['cpus']} CPUs online"
                 + ("" if report["passed"] else " (FAILED)"))
    handles = [Patch(color=c, label=s) for s, c in STATE_COLORS.items()]
    handles += [plt.Line2D([], [], color="black", marker="|", linestyle="", label="online"),
                plt.Line2D([], [], color="#c03030", marker="x", linestyle="", label="SIPI ignored"),
                plt.Line2D([], [], color="black", marker="^", linestyle="", label="NMI")]
    fig.legend(handles=handles, loc="outside lower center", ncol=7, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)      # as --waves does
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
