"""The soft-SoC's RISC-V firmware: C and assembly sources beside :mod:`.build`, which compiles
them with clang for RV32 and writes the header the sources include."""
