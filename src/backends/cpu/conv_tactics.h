// Which tactic a CPU convolution runs, measured once per shape and processor: the packed GEMM over
// the image's windows, Winograd F(4×4, 3×3) or F(2×2, 5×5) where it applies (winograd.h), or the direct
// convolution over a phase-split copy of the image for short depths (direct_convolution.h), or, for small
// images, the channel GEMM: the windows with the output positions as rows times the weights with the output
// channels along the vectors (a 7 × 7 image is 49 positions, which the windows' GEMM spreads over 64 lanes,
// but 512 channels fill 16 tiles of 32). Choices are kept for the process and on disk with the GPU's
// (TacticCache "cpu-convolution-tactics.txt" in $ESPRESSO_TACTIC_CACHE or ~/.cache/espresso), so that later
// processes skip the measurement. ESPRESSO_CONV_TACTIC=gemm|winograd|direct|channel-gemm forces one where it
// applies (the GPU's names, cudnn|im2col|implicit, leave the CPU's choice alone).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace espresso::cpu {

enum class ConvTactic { gemm, winograd, direct, channel_gemm };

const char* conv_tactic_name(ConvTactic tactic);

// The forced tactic, or nullopt. Throws UnsupportedError for a value no backend knows.
std::optional<ConvTactic> forced_conv_tactic();

// The processor, instruction set, thread count and set of tactics a measurement holds for, e.g.
// "Intel(R)_Xeon(R)_Processor|avx512|threads=2|tactics=4"; keys add the shape to it.
std::string tactic_context();
std::optional<ConvTactic> cached_conv_tactic(const std::string& key);
void remember_conv_tactic(const std::string& key, ConvTactic tactic);

// How many times CPU convolution kernels have packed (or transformed) weights in this process: a
// hook for tests that check packed weights are reused.
std::uint64_t convolution_weight_packs();
void count_convolution_weight_pack();

}  // namespace espresso::cpu
