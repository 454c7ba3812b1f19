"""World models on top of the verification IP: x86 CPUs and the machine around them
(:mod:`.cpu`), the ACPI MADT the firmware publishes (:mod:`.madt`), and CPU topologies with
the APIC IDs they give (:mod:`.topology`).  Scenarios compose them.
"""
