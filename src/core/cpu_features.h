// Instruction-set support detected at run time, so one x86-64 binary runs everywhere and still
// uses AVX2/FMA where the processor has them.
#pragma once

namespace espresso {

bool cpu_has_avx2_fma();

}  // namespace espresso
