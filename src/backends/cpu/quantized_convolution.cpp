// Int8 convolution on the CPU. Per image (threads over images; for one image every step below splits
// over the threads instead): quantize the input to uint8 (int8 inputs move up by 128 with their zero
// point, which changes no difference), pack each group of four window rows into the GEMM's B (straight
// from the image where the stride is 1 and rows keep their width, else through a scratch of whole rows),
// run the u8×s8 GEMM (gemm_int8.h), and per finished tile one pass that removes the zero point's share
// (zero point × the weight row's sum), scales by input scale × the channel's weight scale, adds the bias,
// and applies fused steps (BatchNorm, residual, clamp) or requantizes. 1-D and 2-D windows; others run
// the layer's reference.
#include "backends/cpu/quantized_convolution.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>

#include "backends/cpu/blas.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/gemm_int8.h"
#include "backends/int8_fusions.h"
#include "core/cpu_features.h"
#include "core/parallel.h"
#include "layers/quantize.h"
#include "layers/quantized_convolution.h"

namespace espresso::cpu {
namespace {

using Params = QuantizedConvParams;

#if defined(__x86_64__)
__attribute__((target("avx2"))) std::int64_t value_range_avx2(const float* x, std::int64_t n, float& lo, float& hi) {
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    low = _mm256_min_ps(low, v);
    high = _mm256_max_ps(high, v);
  }
  alignas(32) float lows[8], highs[8];
  _mm256_store_ps(lows, low);
  _mm256_store_ps(highs, high);
  lo = *std::min_element(lows, lows + 8);
  hi = *std::max_element(highs, highs + 8);
  return i;
}
#endif

// The image's range with 0 included, as DynamicQuantizeLinear takes it; chunks in parallel.
void value_range(const float* x, std::int64_t n, double& lo, double& hi) {
  constexpr std::int64_t kChunk = 1 << 15;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<float> lows(static_cast<std::size_t>(chunks), 0.0f), highs(static_cast<std::size_t>(chunks), 0.0f);
  parallel_for(chunks, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t c = begin; c < end; ++c) {
      const float* chunk = x + c * kChunk;
      const std::int64_t size = std::min(kChunk, n - c * kChunk);
      float l = 0, h = 0;
      std::int64_t i = 0;
#if defined(__x86_64__)
      if (cpu_has_avx2_fma()) i = value_range_avx2(chunk, size, l, h);
#endif
      for (; i < size; ++i) {
        l = std::min(l, chunk[i]);
        h = std::max(h, chunk[i]);
      }
      lows[static_cast<std::size_t>(c)] = l;
      highs[static_cast<std::size_t>(c)] = h;
    }
  });
  lo = *std::min_element(lows.begin(), lows.end());
  hi = *std::max_element(highs.begin(), highs.end());
}

// q = clamp(round_half_even(x / scale) + zero, lo, hi), or x · inverse where that is exact.
struct QuantizeStep {
  float scale, inverse, zero, lo, hi;
  bool multiply;
  float value(float x) const {
    return std::clamp(round_half_even(multiply ? x * inverse : x / scale) + zero, lo, hi);
  }
};

#if defined(__x86_64__)
__attribute__((target("avx2"))) std::int64_t quantize_avx2(const QuantizeStep& step, const float* x, std::int64_t n,
                                                           std::uint8_t* q) {
  const __m256 scale = _mm256_set1_ps(step.scale), inverse = _mm256_set1_ps(step.inverse);
  const __m256 zero = _mm256_set1_ps(step.zero), lo = _mm256_set1_ps(step.lo), hi = _mm256_set1_ps(step.hi);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    v = step.multiply ? _mm256_mul_ps(v, inverse) : _mm256_div_ps(v, scale);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);  // half to even
    v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zero), lo), hi);
    const __m256i whole = _mm256_cvtps_epi32(v);
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(whole), _mm256_extracti128_si256(whole, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(words, words));
  }
  return i;
}
#endif

void quantize(const QuantizeStep& step, const float* x, std::int64_t n, std::uint8_t* q) {
  parallel_for(
      n,
      [&](std::int64_t begin, std::int64_t end) {
        std::int64_t i = 0;
#if defined(__x86_64__)
        if (cpu_has_avx2_fma()) i = quantize_avx2(step, x + begin, end - begin, q + begin);
#endif
        for (i += begin; i < end; ++i) q[i] = static_cast<std::uint8_t>(step.value(x[i]));
      },
      1 << 14);
}

// Four rows of 32 bytes (row stride `stride`) into 32 columns of 4 bytes each, packed B's group layout.
void interleave4(const std::uint8_t* rows, std::int64_t stride, std::uint8_t* out) {
  for (int half = 0; half < 2; ++half) {
    auto load = [&](int r) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + r * stride + half * 16)); };
    const __m128i r0 = load(0), r1 = load(1), r2 = load(2), r3 = load(3);
    const __m128i lo01 = _mm_unpacklo_epi8(r0, r1), hi01 = _mm_unpackhi_epi8(r0, r1);
    const __m128i lo23 = _mm_unpacklo_epi8(r2, r3), hi23 = _mm_unpackhi_epi8(r2, r3);
    __m128i* dst = reinterpret_cast<__m128i*>(out + half * 64);
    _mm_storeu_si128(dst + 0, _mm_unpacklo_epi16(lo01, lo23));
    _mm_storeu_si128(dst + 1, _mm_unpackhi_epi16(lo01, lo23));
    _mm_storeu_si128(dst + 2, _mm_unpacklo_epi16(hi01, hi23));
    _mm_storeu_si128(dst + 3, _mm_unpackhi_epi16(hi01, hi23));
  }
}

// How one output channel's integer sums become its outputs: the raw sums (less the zero point's share,
// `correction`), or real values (sum − correction)·scale + offset, ReLU'd, plus a residual, clamped to
// [lo, hi], or those requantized: q = clamp(round(v / step) + zero, lo, hi), or dequantized again:
// (q − zero) · step.
struct ChannelFinish {
  enum class Kind { accumulator, real, quantized, dequantized } kind = Kind::accumulator;
  std::int32_t correction = 0;
  float scale = 1, offset = 0;
  bool relu = false;
  float lo = 0, hi = 0, step = 1, zero = 0;
  bool requantized() const { return kind == Kind::quantized || kind == Kind::dequantized; }
};

float finish_value(const ChannelFinish& f, std::int32_t sum, const float* residual) {
  float v = static_cast<float>(sum - f.correction);
  if (f.kind == ChannelFinish::Kind::accumulator) return v;
  v = v * f.scale + f.offset;
  if (f.relu) v = std::max(v, 0.0f);
  if (f.requantized()) {
    const float q = std::clamp(round_half_even(v / f.step) + f.zero, f.lo, f.hi);
    return f.kind == ChannelFinish::Kind::quantized ? q : (q - f.zero) * f.step;
  }
  if (residual) v += *residual;
  return std::clamp(v, f.lo, f.hi);
}

#if defined(__x86_64__)
// finish_value eight at a time, the same operations in the same order (no FMA contraction).
__attribute__((target("avx2"))) std::int64_t finish_avx2(const ChannelFinish& f, const std::int32_t* sums,
                                                         std::int64_t n, const float* residual, float* dst) {
  const __m256i correction = _mm256_set1_epi32(f.correction);
  const __m256 scale = _mm256_set1_ps(f.scale), offset = _mm256_set1_ps(f.offset), zero = _mm256_setzero_ps();
  const __m256 lo = _mm256_set1_ps(f.lo), hi = _mm256_set1_ps(f.hi);
  const __m256 step = _mm256_set1_ps(f.step), zero_point = _mm256_set1_ps(f.zero);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + i));
    __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(s, correction));
    if (f.kind != ChannelFinish::Kind::accumulator) {
      v = _mm256_add_ps(_mm256_mul_ps(v, scale), offset);
      if (f.relu) v = _mm256_max_ps(v, zero);
      if (f.requantized()) {
        v = _mm256_round_ps(_mm256_div_ps(v, step), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm256_add_ps(v, zero_point);
      } else if (residual) {
        v = _mm256_add_ps(v, _mm256_loadu_ps(residual + i));
      }
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      if (f.kind == ChannelFinish::Kind::dequantized) v = _mm256_mul_ps(_mm256_sub_ps(v, zero_point), step);
    }
    _mm256_storeu_ps(dst + i, v);
  }
  return i;
}
#endif

void finish(const ChannelFinish& f, const std::int32_t* sums, std::int64_t n, const float* residual, float* dst) {
  std::int64_t i = 0;
#if defined(__x86_64__)
  if (cpu_has_avx2_fma()) i = finish_avx2(f, sums, n, residual, dst);
#endif
  for (; i < n; ++i) dst[i] = finish_value(f, sums[i], residual ? residual + i : nullptr);
}

// Three window taps along a run of outputs (depthwise): sums[i] = (kFirst ? 0 : sums[i]) + Σ weight[t] ·
// line[t][i] for i < n, so that the sums are loaded and stored once per three taps.
template <bool kFirst>
[[gnu::always_inline]] inline void add_taps(const std::uint8_t* const* line, const std::int32_t* weight,
                                            std::int64_t n, std::int32_t* sums) {
  const std::uint8_t *a = line[0], *b = line[1], *c = line[2];
  const std::int32_t wa = weight[0], wb = weight[1], wc = weight[2];
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int32_t products = wa * static_cast<std::int32_t>(a[i]) +
                                  wb * static_cast<std::int32_t>(b[i]) + wc * static_cast<std::int32_t>(c[i]);
    sums[i] = kFirst ? products : sums[i] + products;
  }
}
#if defined(__x86_64__)
template <bool kFirst>
__attribute__((target("avx2"))) void add_taps_avx2(const std::uint8_t* const* line,
                                                   const std::int32_t* weight, std::int64_t n,
                                                   std::int32_t* sums) {
  add_taps<kFirst>(line, weight, n, sums);
}
#endif
// The first three taps set the sums, the others add to them; `avx2`: cpu_has_avx2_fma(), asked once per
// layer.
void taps_into(bool first, bool avx2, const std::uint8_t* const* line, const std::int32_t* weight,
               std::int64_t n, std::int32_t* sums) {
#if defined(__x86_64__)
  if (avx2) {
    first ? add_taps_avx2<true>(line, weight, n, sums) : add_taps_avx2<false>(line, weight, n, sums);
    return;
  }
#endif
  first ? add_taps<true>(line, weight, n, sums) : add_taps<false>(line, weight, n, sums);
}

// dst[i] = src[2i] for i < n. Reads up to one byte past src[2n − 2]: image buffers keep a margin.
void copy_every_second(const std::uint8_t* src, std::int64_t n, std::uint8_t* dst) {
  const __m128i low_bytes = _mm_set1_epi16(0xFF);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)), low_bytes);
    const __m128i b = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16)), low_bytes);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_packus_epi16(a, b));
  }
  for (; i < n; ++i) dst[i] = src[2 * i];
}

// Where a stride-1 convolution's output rows are as wide as its input's (every 'same'-padded one, every
// 1x1), window row k of output j reads the plane at j + offset(tap): packed B's 32-column blocks are
// then four unaligned loads from the quantized image, the zero point blended in where the tap leaves the
// image (a mask per tap), interleaved in registers — no scratch rows.
struct ShiftedWindows {
  std::vector<std::int64_t> offsets;  // per tap
  std::vector<std::uint8_t> masks;    // per tap, `stride` bytes: 0xFF where the tap lands inside
  std::int64_t stride = 0;            // columns rounded up to whole blocks
  std::int64_t before = 0, after = 0;  // margins the loads may reach around the image
};

#if defined(__x86_64__)
__attribute__((target("avx2"))) void pack_shifted_avx2(const ShiftedWindows& w, const std::uint8_t* image,
                                                       std::int64_t plane, std::int64_t taps, std::int64_t depth,
                                                       std::int64_t first, std::int64_t end, std::uint8_t zero_u8,
                                                       std::uint8_t* b) {
  const __m256i zero = _mm256_set1_epi8(static_cast<char>(zero_u8));
  const std::int64_t groups = int8_depth_groups(depth), blocks = w.stride / kInt8Columns;
  for (std::int64_t group = first; group < end; ++group) {
    const std::uint8_t* source[4] = {};
    const std::uint8_t* mask[4] = {};
    for (int r = 0; r < 4; ++r) {
      const std::int64_t k = group * 4 + r;
      if (k >= depth) continue;  // A's rows are zero past the depth: the zero point is as good as any value
      source[r] = image + k / taps * plane + w.offsets[static_cast<std::size_t>(k % taps)];
      mask[r] = w.masks.data() + k % taps * w.stride;
    }
    for (std::int64_t block = 0; block < blocks; ++block) {
      const std::int64_t j = block * kInt8Columns;
      __m256i row[4];
      for (int r = 0; r < 4; ++r) {
        row[r] = source[r] ? _mm256_blendv_epi8(zero, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(source[r] + j)),
                                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mask[r] + j)))
                           : zero;
      }
      // Bytes of rows 0,1 and 2,3 paired, then the pairs paired: four-byte columns, in 128-bit lanes
      // (columns 0-3 | 16-19 and so on), put back in order by the lane permutes.
      const __m256i lo01 = _mm256_unpacklo_epi8(row[0], row[1]), hi01 = _mm256_unpackhi_epi8(row[0], row[1]);
      const __m256i lo23 = _mm256_unpacklo_epi8(row[2], row[3]), hi23 = _mm256_unpackhi_epi8(row[2], row[3]);
      const __m256i c0 = _mm256_unpacklo_epi16(lo01, lo23), c4 = _mm256_unpackhi_epi16(lo01, lo23);
      const __m256i c8 = _mm256_unpacklo_epi16(hi01, hi23), c12 = _mm256_unpackhi_epi16(hi01, hi23);
      __m256i* out = reinterpret_cast<__m256i*>(b + (block * groups + group) * kInt8Columns * 4);
      _mm256_storeu_si256(out + 0, _mm256_permute2x128_si256(c0, c4, 0x20));
      _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(c8, c12, 0x20));
      _mm256_storeu_si256(out + 2, _mm256_permute2x128_si256(c0, c4, 0x31));
      _mm256_storeu_si256(out + 3, _mm256_permute2x128_si256(c8, c12, 0x31));
    }
  }
}
#endif

class Int8ConvolutionKernel final : public Kernel {
 public:
  Int8ConvolutionKernel(const ConvGeometry& g, const Params& params, Int8ConvWeights weights)
      : g_(g),
        p_(params),
        schedule_(g.batch),
        weight_scale_(std::move(weights.scale)),
        bias_(std::move(weights.bias)),
        fusions_(params, g.out_channels, std::string("int8-gemm-") + int8_gemm_isa()) {
    const std::vector<std::int8_t>& w = weights.values;
    const std::int64_t out_group = g.out_channels / g.group;
    depth_ = g.in_channels / g.group * g.kernel_spatial();
    const bool depthwise = g.group > 1 && g.in_channels == g.group && out_group == 1;
    if (depthwise) depthwise_.assign(w.begin(), w.end());
    for (std::int64_t grp = 0; grp < (depthwise ? 0 : g.group); ++grp)
      packed_.emplace_back(w.data() + grp * out_group * depth_, depth_, out_group, depth_);
    height_ = g.axes() == 2 ? g.in_size[0] : 1;
    width_ = g.in_size[static_cast<std::size_t>(g.axes() - 1)];
    out_height_ = g.axes() == 2 ? g.out_size[0] : 1;
    out_width_ = g.out_size[static_cast<std::size_t>(g.axes() - 1)];
    // 1-D windows are 2-D ones of height 1.
    const bool two = g.axes() == 2;
    auto first = [&](const std::vector<std::int64_t>& v, std::int64_t one) { return two ? v[0] : one; };
    kernel_h_ = first(g.kernel, 1);
    kernel_w_ = g.kernel.back();
    stride_h_ = first(g.stride, 1);
    stride_w_ = g.stride.back();
    pad_h_ = first(g.pad, 0);
    pad_w_ = g.pad.back();
    dilation_h_ = first(g.dilation, 1);
    dilation_w_ = g.dilation.back();
    const std::int64_t columns = g.out_spatial();
    const auto slots = static_cast<std::size_t>(schedule_.slots());
    if (!depthwise && stride_h_ == 1 && stride_w_ == 1 && out_width_ == width_ && cpu_has_avx2_fma())
      shifted_ = shifted_windows();
    // Margins for the shifted loads; + 64: copy_every_second may read a byte past the last one it keeps.
    margin_ = shifted_ ? shifted_->before : 0;
    const std::int64_t after = shifted_ ? shifted_->after : 0;
    images_.assign(slots, std::vector<std::uint8_t>(static_cast<std::size_t>(margin_ + g.in_channels * g.in_spatial() + after + 64)));
    if (!depthwise)
      packed_b_.assign(slots,
                       std::vector<std::uint8_t>(static_cast<std::size_t>(int8_b_bytes(depth_, columns))));
    finishes_.assign(slots, std::vector<ChannelFinish>(static_cast<std::size_t>(g.out_channels / g.group)));
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    const float* x = inputs[0].data<float>();
    float* y = outputs[0].data<float>();
    const float* residual = fusions_.residual().defined() ? fusions_.residual().data<float>() : nullptr;
    const std::int64_t in_spatial = g_.in_spatial(), out_spatial = g_.out_spatial();
    const std::int64_t out_group = g_.out_channels / g_.group, in_group = g_.in_channels / g_.group;
    schedule_.run([&](std::int64_t n, int slot) {
      const auto s = static_cast<std::size_t>(slot);
      const float* image = x + n * g_.in_channels * in_spatial;
      // 1. Quantize the image to uint8.
      double scale = p_.input_scale, zero = p_.input_zero_point;
      QuantRange range = p_.input_range;
      const std::int64_t count = g_.in_channels * in_spatial;
      if (p_.input == Params::Input::dynamic) {
        double lo = 0, hi = 0;
        value_range(image, count, lo, hi);
        QuantizedConvolutionLayer::dynamic_params(lo, hi, scale, zero);
        range = {0, 255};
      }
      const int shift = range.lo < 0 ? 128 : 0;
      std::uint8_t* q = images_[s].data() + margin_;
      if (p_.input == Params::Input::quantized) {
        // Integers held in floats: the quantize step with a unit scale moves them by `shift` and saturates.
        quantize({1.0f, 1.0f, static_cast<float>(shift), 0.0f, 255.0f, true}, image, count, q);
      } else {
        // x·(1/scale) can differ from x/scale in the last bit: unless scale is a power of two, divide in
        // float as the reference (and ONNX) does, so that ties round the same way.
        const auto scale_f = static_cast<float>(scale);
        const auto inverse = static_cast<float>(1.0 / scale);
        const bool exact = inverse * scale_f == 1.0f && std::ldexp(1.0f, std::ilogb(scale_f)) == scale_f;
        quantize({scale_f, inverse, static_cast<float>(zero + shift), static_cast<float>(range.lo + shift),
                  static_cast<float>(range.hi + shift), exact},
                 image, count, q);
      }
      const auto zero_u8 = static_cast<std::uint8_t>(static_cast<int>(zero) + shift);
      float* out = y + n * g_.out_channels * out_spatial;
      const double input_scale = scale;
      if (!depthwise_.empty()) {
        float* redirect = fusions_.redirect();
        depthwise(q, zero_u8, input_scale, residual ? residual + n * g_.out_channels * out_spatial : nullptr,
                  redirect ? redirect + n * fusions_.redirect_stride() : out);
        return;
      }
      std::uint8_t* b = packed_b_[s].data();
      for (std::int64_t grp = 0; grp < g_.group; ++grp) {
        // 2. Windows into packed B: row (channel, ky, kx), column (oy, ox); padding reads the zero point.
        pack_windows(q + grp * in_group * in_spatial, zero_u8, b);
        // 3. The integer products, and 4. each tile back to real values (or requantized, or the raw
        // sums) while it is in L1.
        const PackedInt8Matrix& a = packed_[static_cast<std::size_t>(grp)];
        std::vector<ChannelFinish>& finishes = finishes_[s];
        for (std::int64_t r = 0; r < out_group; ++r)
          finishes[static_cast<std::size_t>(r)] =
              channel_finish(grp * out_group + r, zero_u8 * a.row_sums()[static_cast<std::size_t>(r)], input_scale);
        float* redirect = fusions_.redirect();
        float* base =
            (redirect ? redirect + n * fusions_.redirect_stride() : out) + grp * out_group * out_spatial;
        const float* residual_base = residual ? residual + (n * g_.out_channels + grp * out_group) * out_spatial : nullptr;
        gemm_u8s8(a, b, out_spatial, [&](std::int64_t row, std::int64_t column, const std::int32_t* tile) {
          const std::int64_t width = std::min(kInt8Columns, out_spatial - column);
          for (std::int64_t r = row; r < std::min(row + kInt8Rows, out_group); ++r) {
            const std::int64_t at = r * out_spatial + column;
            finish(finishes[static_cast<std::size_t>(r)], tile + (r - row) * kInt8Columns, width,
                   residual_base ? residual_base + at : nullptr, base + at);
          }
        });
      }
    });
  }

  // One input and one output channel a group (MobileNet's depthwise layers), where the GEMM would be a row
  // of taps deep per group: each channel's sums are made directly, tap by tap, from the plane inside a
  // border of the zero point as wide as the padding (what the GEMM's windows read outside the image), and
  // finished as its tiles are. The padded plane's columns are dealt into `stride` phases (phase p holds
  // columns p, p + stride, ...), so that a tap reads consecutive bytes along a row of outputs; with stride 1
  // a tap is one run over the padded rows' width, the columns past the output's dropped at the end.
  void depthwise(const std::uint8_t* q, std::uint8_t zero_u8, double input_scale, const float* residual,
                 float* out) const {
    const std::int64_t taps = kernel_h_ * kernel_w_, out_spatial = out_height_ * out_width_;
    const std::int64_t padded_h = height_ + 2 * pad_h_,
                       phase_w = (width_ + 2 * pad_w_ + stride_w_ - 1) / stride_w_;
    const std::int64_t phase_size = padded_h * phase_w;
    const bool one_run = stride_h_ == 1 && stride_w_ == 1;
    const std::int64_t row_stride = one_run ? phase_w : out_width_;  // of the sums
    const std::int64_t padded_taps = (taps + 2) / 3 * 3;
    const bool avx2 = cpu_has_avx2_fma();
    parallel_for(g_.group, [&](std::int64_t first, std::int64_t end) {
      std::vector<std::uint8_t> phases(static_cast<std::size_t>(stride_w_ * phase_size), zero_u8);
      std::vector<const std::uint8_t*> starts(static_cast<std::size_t>(padded_taps));
      std::vector<std::int32_t> weights(static_cast<std::size_t>(padded_taps));
      std::vector<std::int32_t> sums(static_cast<std::size_t>(out_height_ * row_stride));
      for (std::int64_t c = first; c < end; ++c) {
        const std::uint8_t* plane = q + c * height_ * width_;
        for (std::int64_t y = 0; y < height_; ++y) {
          std::uint8_t* row = phases.data() + (y + pad_h_) * phase_w;
          const std::uint8_t* line = plane + y * width_;
          if (stride_w_ == 1) {
            std::memcpy(row + pad_w_, line, static_cast<std::size_t>(width_));
            continue;
          }
          for (std::int64_t phase = 0; phase < stride_w_; ++phase) {
            // The first column x of the image whose padded column x + pad_w falls in this phase.
            const std::int64_t x0 = ((phase - pad_w_) % stride_w_ + stride_w_) % stride_w_;
            if (x0 >= width_) continue;
            const std::int64_t count = (width_ - x0 + stride_w_ - 1) / stride_w_;
            std::uint8_t* to = row + phase * phase_size + (x0 + pad_w_) / stride_w_;
            if (stride_w_ == 2) {
              copy_every_second(line + x0, count, to);
            } else {
              for (std::int64_t i = 0; i < count; ++i) to[i] = line[x0 + i * stride_w_];
            }
          }
        }
        // The taps in threes (the last padded with weight 0), each where its first output reads.
        const std::int8_t* w = depthwise_.data() + c * taps;
        std::int32_t weight_sum = 0;
        for (std::int64_t tap = 0; tap < padded_taps; ++tap) {
          const std::int64_t t = tap < taps ? tap : 0;
          const std::int64_t column = t % kernel_w_ * dilation_w_;
          starts[static_cast<std::size_t>(tap)] = phases.data() + column % stride_w_ * phase_size +
                                                  t / kernel_w_ * dilation_h_ * phase_w + column / stride_w_;
          weights[static_cast<std::size_t>(tap)] = tap < taps ? w[tap] : 0;
          weight_sum += weights[static_cast<std::size_t>(tap)];
        }
        for (std::int64_t tap = 0; tap < padded_taps; tap += 3) {
          const std::uint8_t* const* from = starts.data() + tap;
          if (one_run) {
            taps_into(tap == 0, avx2, from, weights.data() + tap, (out_height_ - 1) * phase_w + out_width_,
                      sums.data());
            continue;
          }
          for (std::int64_t oy = 0; oy < out_height_; ++oy) {
            const std::int64_t down = oy * stride_h_ * phase_w;
            const std::uint8_t* rows[3] = {from[0] + down, from[1] + down, from[2] + down};
            taps_into(tap == 0, avx2, rows, weights.data() + tap, out_width_, sums.data() + oy * out_width_);
          }
        }
        if (one_run) {  // the rows side by side
          for (std::int64_t oy = 1; oy < out_height_; ++oy)
            std::memmove(sums.data() + oy * out_width_, sums.data() + oy * phase_w,
                         static_cast<std::size_t>(out_width_) * sizeof(std::int32_t));
        }
        finish(channel_finish(c, zero_u8 * weight_sum, input_scale), sums.data(), out_spatial,
               residual ? residual + c * out_spatial : nullptr, out + c * out_spatial);
      }
    });
  }

  ChannelFinish channel_finish(std::int64_t oc, std::int32_t correction, double input_scale) const {
    const auto c = static_cast<std::size_t>(oc);
    ChannelFinish f;
    f.correction = correction;
    if (p_.output == Params::Output::accumulator) return f;
    f.kind = p_.output == Params::Output::quantized     ? ChannelFinish::Kind::quantized
             : p_.output == Params::Output::dequantized ? ChannelFinish::Kind::dequantized
                                                        : ChannelFinish::Kind::real;
    f.scale = static_cast<float>(input_scale * weight_scale_[c] * fusions_.multiplier()[c]);
    f.offset = fusions_.channel_offset(c, bias_);
    f.relu = p_.relu;
    const Int8Fusions::Bounds bounds = fusions_.bounds(p_);
    f.step = bounds.step;
    f.zero = bounds.zero;
    f.lo = bounds.lo;
    f.hi = bounds.hi;
    return f;
  }

  // The im2col matrix of one group's windows (rows channel·ky·kx, columns oy·ox), written straight in
  // packed B's layout: each 4-row group is first written into a scratch of whole rows, then interleaved
  // 32 columns at a time.
  void pack_windows(const std::uint8_t* image, std::uint8_t zero_u8, std::uint8_t* b) const {
    const std::int64_t columns = out_height_ * out_width_;
    const std::int64_t blocks = (columns + kInt8Columns - 1) / kInt8Columns, stride = blocks * kInt8Columns;
    const std::int64_t groups = int8_depth_groups(depth_), taps = kernel_h_ * kernel_w_;
#if defined(__x86_64__)
    if (shifted_) {
      parallel_for(groups, [&](std::int64_t first, std::int64_t end) {
        pack_shifted_avx2(*shifted_, image, height_ * width_, taps, depth_, first, end, zero_u8, b);
      });
      return;
    }
#endif
    parallel_for(groups, [&](std::int64_t first, std::int64_t end) {
      std::vector<std::uint8_t> rows(static_cast<std::size_t>(4 * stride), 0);
      for (std::int64_t group = first; group < end; ++group) {
        for (std::int64_t r = 0; r < 4; ++r) {
          const std::int64_t k = group * 4 + r;
          if (k >= depth_) continue;  // A's rows are zero past the depth: any value here is harmless
          window_row(image + k / taps * height_ * width_, k % taps / kernel_w_, k % kernel_w_, zero_u8,
                     rows.data() + r * stride);
        }
        for (std::int64_t block = 0; block < blocks; ++block)
          interleave4(rows.data() + block * kInt8Columns, stride, b + (block * groups + group) * kInt8Columns * 4);
      }
    });
  }

  ShiftedWindows shifted_windows() const {
    ShiftedWindows w;
    const std::int64_t columns = out_height_ * out_width_, taps = kernel_h_ * kernel_w_;
    w.stride = (columns + kInt8Columns - 1) / kInt8Columns * kInt8Columns;
    w.masks.assign(static_cast<std::size_t>(taps * w.stride), 0);
    for (std::int64_t tap = 0; tap < taps; ++tap) {
      const std::int64_t dy = tap / kernel_w_ * dilation_h_ - pad_h_, dx = tap % kernel_w_ * dilation_w_ - pad_w_;
      w.offsets.push_back(dy * width_ + dx);
      for (std::int64_t j = 0; j < columns; ++j) {
        const std::int64_t iy = j / out_width_ + dy, ix = j % out_width_ + dx;
        if (iy >= 0 && iy < height_ && ix >= 0 && ix < width_) w.masks[static_cast<std::size_t>(tap * w.stride + j)] = 0xFF;
      }
      // A plane's loads span [offset, offset + stride); the last plane's end past the image.
      w.before = std::max(w.before, -w.offsets.back());
      w.after = std::max(w.after, w.offsets.back() + w.stride - height_ * width_);
    }
    return w;
  }

  // Tap (ky, kx) of every output position's window over `plane`; the zero point where it falls outside.
  void window_row(const std::uint8_t* plane, std::int64_t ky, std::int64_t kx, std::uint8_t zero_u8,
                  std::uint8_t* row) const {
    // Input position = output position · stride + shift; the outputs whose input lies inside the image.
    const std::int64_t shift_y = ky * dilation_h_ - pad_h_, shift_x = kx * dilation_w_ - pad_w_;
    auto inside = [](std::int64_t shift, std::int64_t stride, std::int64_t size, std::int64_t outputs) {
      const std::int64_t begin = std::clamp<std::int64_t>((-shift + stride - 1) / stride, 0, outputs);
      return std::pair{begin, std::clamp<std::int64_t>((size - shift + stride - 1) / stride, begin, outputs)};
    };
    const auto [oy_begin, oy_end] = inside(shift_y, stride_h_, height_, out_height_);
    const auto [ox_begin, ox_end] = inside(shift_x, stride_w_, width_, out_width_);
    const auto fill = [&](std::int64_t from, std::int64_t to) {
      std::memset(row + from, zero_u8, static_cast<std::size_t>(to - from));
    };
    if (oy_begin == oy_end || ox_begin == ox_end) {
      fill(0, out_height_ * out_width_);
      return;
    }
    fill(0, oy_begin * out_width_);
    fill(oy_end * out_width_, out_height_ * out_width_);
    if (stride_h_ == 1 && stride_w_ == 1 && out_width_ == width_) {
      // Output j reads plane[j + offset]: one copy, then the columns that wrapped past a border.
      const std::int64_t offset = shift_y * width_ + shift_x;
      const std::int64_t from = oy_begin * out_width_ + ox_begin, to = (oy_end - 1) * out_width_ + ox_end;
      std::memcpy(row + from, plane + from + offset, static_cast<std::size_t>(to - from));
      // One run per row boundary: the right border of row oy − 1 and the left border of row oy.
      for (std::int64_t oy = oy_begin + 1; oy < oy_end; ++oy) fill((oy - 1) * out_width_ + ox_end, oy * out_width_ + ox_begin);
      fill(oy_begin * out_width_, from);
      fill(to, oy_end * out_width_);
      return;
    }
    for (std::int64_t oy = oy_begin; oy < oy_end; ++oy) {
      std::uint8_t* out = row + oy * out_width_;
      const std::uint8_t* line = plane + (oy * stride_h_ + shift_y) * width_ + shift_x;
      std::memset(out, zero_u8, static_cast<std::size_t>(ox_begin));
      std::memset(out + ox_end, zero_u8, static_cast<std::size_t>(out_width_ - ox_end));
      if (stride_w_ == 1) {
        std::memcpy(out + ox_begin, line + ox_begin, static_cast<std::size_t>(ox_end - ox_begin));
      } else if (stride_w_ == 2) {
        copy_every_second(line + 2 * ox_begin, ox_end - ox_begin, out + ox_begin);
      } else {
        for (std::int64_t ox = ox_begin; ox < ox_end; ++ox) out[ox] = line[ox * stride_w_];
      }
    }
  }

  bool fuse_channel_affine(ChannelAffine affine) override { return fusions_.fold(affine); }
  bool fuse_residual(const Tensor& residual) override { return fusions_.add(residual); }
  bool fuse_clamp(float lo, float hi) override { return fusions_.clamp(lo, hi); }
  bool redirect_output(float* base, std::int64_t image_stride) override {
    return fusions_.redirect_to(base, image_stride);
  }
  const char* name() const override { return fusions_.name().c_str(); }

 private:
  ConvGeometry g_;
  Params p_;
  ImageSchedule schedule_;
  std::int64_t depth_ = 0;
  std::int64_t height_ = 1, width_ = 1, out_height_ = 1, out_width_ = 1, kernel_h_ = 1, kernel_w_ = 1;
  std::int64_t stride_h_ = 1, stride_w_ = 1, pad_h_ = 0, pad_w_ = 0, dilation_h_ = 1, dilation_w_ = 1;
  std::vector<PackedInt8Matrix> packed_;
  std::vector<std::int8_t> depthwise_;  // a depthwise layer's weights, channel-major (else empty)
  std::vector<double> weight_scale_;
  std::vector<float> bias_;
  Int8Fusions fusions_;
  std::optional<ShiftedWindows> shifted_;
  std::int64_t margin_ = 0;  // bytes before each quantized image (shifted loads reach back)
  std::vector<std::vector<std::uint8_t>> images_, packed_b_;
  std::vector<std::vector<ChannelFinish>> finishes_;  // per slot: this image's per-channel finish of a group
};

// 1-D and 2-D windows whose sums stay exact in int32.
bool fits_int8_kernel(const ConvGeometry& g) {
  return (g.axes() == 1 || g.axes() == 2) && g.in_channels / g.group * g.kernel_spatial() <= kInt8ExactDepth;
}

}  // namespace

std::unique_ptr<Kernel> make_quantized_convolution(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const QuantizedConvolutionLayer&>(layer);
  const ConvGeometry g = conv.geometry(inputs[0]);
  if (!fits_int8_kernel(g)) return nullptr;
  std::optional<Int8ConvWeights> weights = conv.int8_weights(g);
  if (!weights) return nullptr;  // uint8 weights far from their zero point: the reference
  return std::make_unique<Int8ConvolutionKernel>(g, conv.quant(), std::move(*weights));
}

std::unique_ptr<Kernel> int8_convolution_kernel(const Layer& layer, const std::vector<Shape>& inputs) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  const ConvGeometry g = conv.geometry(inputs[0]);
  if (!fits_int8_kernel(g)) return nullptr;
  Params params;
  params.input = Params::Input::dynamic;
  return std::make_unique<Int8ConvolutionKernel>(g, params, quantize_convolution_weights(conv, g));
}

}  // namespace espresso::cpu
