"""RTL pieces shared by the blocks: the memory bus (:mod:`.bus`), priority encoders, minimum
trees, OR trees and the round-robin arbiter (:mod:`.priority`), and separately converted
instances (:mod:`.instance`)."""
