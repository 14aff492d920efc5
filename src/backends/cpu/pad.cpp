// Pad on the CPU for the common case, constant padding of the last two axes by non-negative amounts
// (ONNX Pad before a pooling or convolution): planes in parallel, each row one copy between fills.
// Other modes, crops and padding of outer axes use the reference kernel.
#include "layers/pad.h"

#include <algorithm>
#include <cstring>

#include "backends/cpu/cpu_backend.h"
#include "core/parallel.h"

namespace espresso::cpu {
namespace {

class PlanePadKernel final : public Kernel {
 public:
  PlanePadKernel(const PadLayer& layer, std::int64_t planes, std::int64_t h, std::int64_t w)
      : value_(layer.value()), planes_(planes), h_(h), w_(w) {
    const std::vector<std::int64_t>& pads = layer.pads();
    const std::size_t rank = pads.size() / 2;
    top_ = rank >= 2 ? pads[rank - 2] : 0;
    bottom_ = rank >= 2 ? pads[2 * rank - 2] : 0;
    left_ = pads[rank - 1];
    right_ = pads[2 * rank - 1];
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const std::int64_t out_w = w_ + left_ + right_, out_h = h_ + top_ + bottom_;
    const std::int64_t in_plane = h_ * w_, out_plane = out_h * out_w;
    parallel_for(
        planes_,
        [&](std::int64_t begin, std::int64_t end) {
          for (std::int64_t p = begin; p < end; ++p) {
            const float* src = x + p * in_plane;
            float* dst = y + p * out_plane;
            if (top_ == 0 && bottom_ == 0 && left_ == 0 && right_ == 0) {
              if (dst != src) std::memcpy(dst, src, static_cast<std::size_t>(in_plane) * sizeof(float));
              continue;
            }
            std::fill(dst, dst + top_ * out_w, value_);
            for (std::int64_t r = 0; r < h_; ++r) {
              float* row = dst + (top_ + r) * out_w;
              std::fill(row, row + left_, value_);
              std::memcpy(row + left_, src + r * w_, static_cast<std::size_t>(w_) * sizeof(float));
              std::fill(row + left_ + w_, row + out_w, value_);
            }
            std::fill(dst + (top_ + h_) * out_w, dst + out_plane, value_);
          }
        },
        std::max<std::int64_t>(1, (1 << 14) / std::max<std::int64_t>(1, out_plane)));
  }
  const char* name() const override { return "plane copy"; }

 private:
  float value_;
  std::int64_t planes_, h_, w_;
  std::int64_t top_ = 0, bottom_ = 0, left_ = 0, right_ = 0;
};

}  // namespace

std::unique_ptr<Kernel> make_pad(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& pad = static_cast<const PadLayer&>(layer);
  const Shape& in = inputs[0];
  const std::vector<std::int64_t>& pads = pad.pads();
  const std::size_t rank = static_cast<std::size_t>(in.rank());
  if (pad.mode() != PadLayer::Mode::constant || rank == 0 || pads.size() != 2 * rank) return nullptr;
  // Only the last two axes may be padded, by amounts ≥ 0.
  for (std::size_t a = 0; a < rank; ++a) {
    const bool inner = a + 2 >= rank;
    if (pads[a] < 0 || pads[rank + a] < 0 || (!inner && (pads[a] != 0 || pads[rank + a] != 0))) return nullptr;
  }
  const std::int64_t w = in[static_cast<int>(rank) - 1];
  const std::int64_t h = rank >= 2 ? in[static_cast<int>(rank) - 2] : 1;
  const std::int64_t planes = h * w == 0 ? 0 : in.numel() / (h * w);
  return std::make_unique<PlanePadKernel>(pad, planes, h, w);
}

}  // namespace espresso::cpu
