// Binary on the CPU when one operand has the output's shape and the other is the same shape, a scalar
// or one run of the output's axes (a per-channel vector, a bias over the last axis): the output is seen
// as outer x mid x inner and the smaller operand as mid values. Threaded over element chunks; the
// inner loops are written once and compiled twice, for AVX2 and for the baseline instruction set.
// Other broadcasts run the reference.
#include "layers/binary.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/elementwise.h"
#include "core/cpu_features.h"

namespace espresso::cpu {
namespace {

using Op = BinaryLayer::Op;

// The smaller operand against the output: value k of it applies to every element whose index i
// has (i / inner) % mid == k.
struct Run {
  std::int64_t mid = 1, inner = 1;
};

// The run `operand` covers in `out`, or false when its non-1 axes are not one contiguous run.
bool find_run(const Shape& operand, const Shape& out, Run& run) {
  const int offset = out.rank() - operand.rank();
  int first = -1, end = 0;  // a scalar covers no axis: first = end = 0
  for (int k = 0; k < operand.rank(); ++k) {
    if (operand[k] == 1) continue;
    if (first < 0) first = k + offset;
    end = k + offset + 1;
  }
  first = std::max(first, 0);
  run.mid = run.inner = 1;
  for (int k = first; k < end; ++k) {
    if (operand[k - offset] != out[k]) return false;  // a stretched axis inside the run
    run.mid *= out[k];
  }
  for (int k = end; k < out.rank(); ++k) run.inner *= out[k];
  return true;
}

struct Add {
  float operator()(float a, float b) const { return a + b; }
};
struct Sub {
  float operator()(float a, float b) const { return a - b; }
};
struct Mul {
  float operator()(float a, float b) const { return a * b; }
};
struct Div {
  float operator()(float a, float b) const { return a / b; }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};
struct Pow {
  float operator()(float a, float b) const { return std::pow(a, b); }
};

// y[i] = f(full[i], small[·]) (or f(small[·], full[i]) when `swapped`) for i in [begin, end), walking
// the chunk in segments that share one small value (inner > 1) or run along the small vector.
template <class F, bool swapped>
[[gnu::always_inline]] inline void binary_chunk(const float* full, const float* small, float* y, Run run,
                                                std::int64_t begin, std::int64_t end) {
  const F f;
  const auto apply = [&](float x, float s) { return swapped ? f(s, x) : f(x, s); };
  for (std::int64_t i = begin; i < end;) {
    if (run.inner == 1) {
      const std::int64_t k = i % run.mid, length = std::min(end - i, run.mid - k);
      const float* s = small + k;
      for (std::int64_t j = 0; j < length; ++j) y[i + j] = apply(full[i + j], s[j]);
      i += length;
    } else {
      const std::int64_t row = i / run.inner, length = std::min(end, (row + 1) * run.inner) - i;
      const float s = small[row % run.mid];
      for (std::int64_t j = 0; j < length; ++j) y[i + j] = apply(full[i + j], s);
      i += length;
    }
  }
}

template <class F, bool swapped>
void binary_baseline(const float* full, const float* small, float* y, Run run, std::int64_t begin,
                     std::int64_t end) {
  binary_chunk<F, swapped>(full, small, y, run, begin, end);
}

template <class F, bool swapped>
__attribute__((target("avx2"))) void binary_avx2(const float* full, const float* small, float* y, Run run,
                                                 std::int64_t begin, std::int64_t end) {
  binary_chunk<F, swapped>(full, small, y, run, begin, end);
}

using ChunkFunction = void (*)(const float*, const float*, float*, Run, std::int64_t, std::int64_t);

template <class F>
ChunkFunction pick(bool swapped, bool avx2) {
  if (avx2) return swapped ? binary_avx2<F, true> : binary_avx2<F, false>;
  return swapped ? binary_baseline<F, true> : binary_baseline<F, false>;
}

ChunkFunction chunk_function(Op op, bool swapped, bool avx2) {
  switch (op) {
    case Op::add:
      return pick<Add>(swapped, avx2);
    case Op::sub:
      return pick<Sub>(swapped, avx2);
    case Op::mul:
      return pick<Mul>(swapped, avx2);
    case Op::div:
      return pick<Div>(swapped, avx2);
    case Op::max:
      return pick<Max>(swapped, avx2);
    case Op::min:
      return pick<Min>(swapped, avx2);
    case Op::pow:
      return pick<Pow>(swapped, avx2);
  }
  return nullptr;
}

class BinaryKernel final : public Kernel {
 public:
  // `full_input`: the operand with the output's shape (0 or 1).
  BinaryKernel(Op op, int full_input, Run run, const char* name)
      : full_input_(full_input),
        run_(run),
        chunk_(chunk_function(op, full_input == 1, cpu_has_avx2_fma())),
        name_(name) {}

  // The output may alias input 0: each element is read before it is written.
  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* full = inputs[static_cast<std::size_t>(full_input_)].data<float>();
    const float* small = inputs[static_cast<std::size_t>(1 - full_input_)].data<float>();
    float* y = outputs[0].data<float>();
    parallel_for(
        outputs[0].numel(),
        [&](std::int64_t begin, std::int64_t end) { chunk_(full, small, y, run_, begin, end); },
        kElementGrain);
  }
  const char* name() const override { return name_; }

 private:
  int full_input_;
  Run run_;
  ChunkFunction chunk_;
  const char* name_;
};

}  // namespace

std::unique_ptr<Kernel> make_binary(const Layer& layer, const std::vector<Shape>& inputs) {
  const Shape out = broadcast_shapes(inputs[0], inputs[1]);
  const int full_input = inputs[0].numel() == out.numel() ? 0 : inputs[1].numel() == out.numel() ? 1 : -1;
  if (full_input < 0) return nullptr;
  Run run;
  if (!find_run(inputs[static_cast<std::size_t>(1 - full_input)], out, run)) return nullptr;
  const char* name = run.mid == out.numel() ? "same-shape" : run.mid == 1 ? "scalar" : "per-channel";
  return std::make_unique<BinaryKernel>(static_cast<const BinaryLayer&>(layer).op(), full_input, run, name);
}

}  // namespace espresso::cpu
