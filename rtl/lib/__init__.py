"""RTL pieces shared by the blocks: the memory bus (:mod:`.bus`), priority encoders, minimum
trees, OR trees and the round-robin arbiter (:mod:`.priority`), separately converted
instances (:mod:`.instance`), pipeline stages (:mod:`.stage`) and parameter checks
(:mod:`.checks`)."""
