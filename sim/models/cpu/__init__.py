"""CPU models: per-CPU bring-up state (:mod:`.model`), the machine around them
(:mod:`.machine`) and the guest software they run (:mod:`.linux`)."""
