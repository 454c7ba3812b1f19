// The pure-C++ ceiling of a Verilated apwake model: the design clocked by a plain C++ loop,
// with no VPI and no Python, every input left at its reset value (an idle machine).  What is
// left is the cost of evaluating the design itself: the most any cocotb run of the same model
// could reach.  Built and run by apwake.sim.harness.ceiling; prints one JSON line.
//
// usage: ceiling CYCLES
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "Vtop.h"
#include "verilated.h"

int main(int argc, char** argv) {
    const long cycles = argc > 1 ? std::atol(argv[1]) : 0;
    if (cycles <= 0) {
        std::fprintf(stderr, "usage: %s CYCLES (a positive count)\n", argv[0]);
        return 2;
    }
    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtop>(context.get());
    // Reset for two cycles, as the cocotb harness does, then run.
    top->rst = 1;
    for (int i = 0; i < 2; ++i) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    top->rst = 0;
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; ++i) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - start;
    top->final();
#ifdef APWAKE_CEILING_TSC
    // The APIC fabric's time-stamp counter counts clock cycles from reset: proof that the loop
    // clocked the design exactly CYCLES times.
    std::printf("{\"cycles\": %ld, \"wall_s\": %.6f, \"tsc\": %llu}\n", cycles, wall.count(),
                static_cast<unsigned long long>(top->tsc));
#else
    std::printf("{\"cycles\": %ld, \"wall_s\": %.6f}\n", cycles, wall.count());
#endif
    return 0;
}
