"""World models on top of the verification IP: x86 CPUs and the machine around them
(:mod:`.cpu`), and the ACPI MADT the firmware publishes (:mod:`.madt`).  Scenarios compose them.
"""
