"""The Intel TDX module as the host sees it: its SEAMCALL ABI (:mod:`.abi`) and a model of the
module's platform-scope initialisation (:mod:`.module`)."""
