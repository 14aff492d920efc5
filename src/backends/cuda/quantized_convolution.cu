// Int8 convolution on the GPU: QuantizedConvolution layers, and float Convolutions in a net run with
// Precision::int8 (weights quantized per output channel once, activations per image from their range),
// with the CPU kernel's rules (docs/int8.md), so both compute the same integers.
//
// Per forward, three launches:
// 1. with dynamic ranges, each image's range and from it its scale and zero point;
// 2. the f32 N, C, H, W input quantized to uint8 (int8 inputs move up by 128 with their zero point);
// 3. the products and their finish. Most convolutions run an implicit GEMM on int8 tensor cores
//    (mma.sync m16n8k32, s8 weights × u8 activations, exact int32 sums): output channels are the rows,
//    (image, position) pairs the columns, depth runs over (tap, channel). Step 2 wrote the input as
//    N, H, W, [group, channels padded to 16] bytes with the zero point (a real 0) in a border as wide as
//    the padding, so sixteen channels of one window tap are one aligned 16-byte copy (cp.async, two
//    stages) and no tap leaves the image. Where padding the channels to 16 would at least double the
//    depth of a small window (a first layer's three channels, 3x3), step 2 writes each output position's
//    whole window instead, (tap, channel) bytes padded once, and the GEMM reads them as a 1x1 convolution.
//    Convolutions with fewer than 16 outputs per group (depthwise), which would leave most of a GEMM tile
//    empty, sum their few products directly from N, C, H, W bytes. Each sum then leaves once (the GEMM's
//    through shared memory, for whole rows of positions): less the zero point's share, scaled, biased, with
//    the fused BatchNorm, residual and clamp, or requantized.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "backends/int8_fusions.h"
#include "layers/quantized_convolution.h"

namespace espresso::cuda {
namespace {

using Params = QuantizedConvParams;

constexpr int kDepth = 64;             // bytes of depth per pipeline stage: two m16n8k32 steps
constexpr int kChunk = 16;             // bytes per copy: channels of one pixel
constexpr int kTileStride = 80;        // bytes per shared row: 64 + 16, so ldmatrix rows hit distinct banks
constexpr int kGemmThreads = 256;      // eight warps
constexpr int kCols = 128;             // output columns per block
constexpr int kDirectMaxOutputs = 16;  // fewer outputs per group than this: the direct kernel

// One image's quantization: q = clamp(round(x / scale) + zero, lo, hi), all moved to uint8.
struct ImageQuant {
  float scale;
  int zero;          // in uint8 units (an int8 input's zero point + 128)
  double unrounded;  // the scale the sums are multiplied by: a fixed one as given, not rounded to float
};

struct Int8Geometry {
  // padded_channels: bytes per tap in the packed weights and the pixels layout: in_per_group rounded up to
  // 16 (pixels), window_bytes (the GEMM's 1x1 view of windows), in_per_group (direct).
  int channels, groups, in_per_group, padded_channels;
  int height, width, out_height, out_width;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int padded_height, padded_width;  // the quantized image with its border
  int row_bytes;                    // bytes per pixel there: groups · padded_channels
  int taps;
  int padded_depth;  // the packed weights' row length: taps · padded_channels, rounded up to kDepth for the
                     // GEMM
  int rows_per_block;  // the GEMM's: 64 or 128
  int padded_rows;     // out_per_group rounded up to rows_per_block (direct: out_per_group)
  int out_per_group, out_channels, out_spatial;
  int columns;  // batch · out_spatial
  // How the quantize step reads its input: a quantized input as integers, else real values.
  bool integers;
  int shift;     // 128 for int8 inputs
  float lo, hi;  // the input range, moved to uint8
  // pixels: bordered N, H, W, [group, padded channels] bytes; windows: N, OH, OW, [window bytes];
  // direct: N, C, H, W bytes.
  enum class Path { pixels, windows, direct } path;
  int window_bytes;  // windows: taps · channels rounded up to 16
};

// How the sums become outputs (ChannelFinish on the CPU, the same operations in the same order).
struct Finish {
  Params::Output kind;
  bool relu;
  float lo, hi;         // clamp of real outputs (fused), or the output type's range when requantized
  float step, zero;     // requantization
  const int* row_sums;  // Σ weights per output channel
  const double* weight_scale;
  const double* multiplier;  // fused BatchNorm, 1 without
  const float* offset;       // bias · multiplier + the BatchNorm's offset
  const float* residual;     // the output's shape, or null
  float* destination;        // where image n starts at destination + n · image_stride
  long long image_stride;
};

// Dynamic ranges in two launches: each image in up to kMaxRangeParts slices, a block each, for enough loads
// in flight; then per image the range of its slices with 0 included, and DynamicQuantizeLinear's scale and
// zero point in float, as QuantizedConvolutionLayer::dynamic_params computes them.
constexpr int kMaxRangeParts = 64;
__global__ void range_parts(const float* __restrict__ x, long long image_size, float2* __restrict__ parts) {
  __shared__ float lows[kThreads / kWarp], highs[kThreads / kWarp];
  const float* image = x + blockIdx.y * image_size;
  float lo = 0.0f, hi = 0.0f;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < image_size; i += 4 * stride) {
    float v[4];
    for (int u = 0; u < 4; ++u) v[u] = i + u * stride < image_size ? image[i + u * stride] : 0.0f;
    for (int u = 0; u < 4; ++u) {
      lo = fminf(lo, v[u]);
      hi = fmaxf(hi, v[u]);
    }
  }
  lo = -warp_max(-lo);  // negation is exact: the minimum
  hi = warp_max(hi);
  if (threadIdx.x % kWarp == 0) {
    lows[threadIdx.x / kWarp] = lo;
    highs[threadIdx.x / kWarp] = hi;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / kWarp; ++w) {
    lo = fminf(lo, lows[w]);
    hi = fmaxf(hi, highs[w]);
  }
  parts[blockIdx.y * gridDim.x + blockIdx.x] = make_float2(lo, hi);
}

// One warp per image.
__global__ void range_finish(const float2* __restrict__ parts, int count, ImageQuant* __restrict__ images) {
  float lo = 0.0f, hi = 0.0f;
  for (int i = threadIdx.x; i < count; i += kWarp) {
    lo = fminf(lo, parts[blockIdx.x * count + i].x);
    hi = fmaxf(hi, parts[blockIdx.x * count + i].y);
  }
  lo = -warp_max(-lo);  // negation is exact: the minimum
  hi = warp_max(hi);
  if (threadIdx.x != 0) return;
  const float scale = __fdiv_rn(__fsub_rn(hi, lo), 255.0f);
  float zero = 0.0f;
  if (scale > 0.0f) zero = fminf(fmaxf(rintf(__fsub_rn(0.0f, __fdiv_rn(lo, scale))), 0.0f), 255.0f);
  const float used = scale > 0.0f ? scale : 1.0f;
  images[blockIdx.x] = {used, static_cast<int>(zero), used};
}

__device__ __forceinline__ std::uint8_t quantize_value(const Int8Geometry& g, float v,
                                                       const ImageQuant& image) {
  const float q =
      g.integers
          ? fminf(fmaxf(static_cast<float>(static_cast<int>(v) + g.shift), 0.0f), 255.0f)
          : fminf(fmaxf(rintf(__fdiv_rn(v, image.scale)) + static_cast<float>(image.zero), g.lo), g.hi);
  return static_cast<std::uint8_t>(q);
}

// N, C, H, W floats → N, padded H, padded W, [group, padded channels] bytes through a 32 × 32 tile in
// shared memory: reads run along positions, writes along channels; the border holds the zero point.
// Padding channels are never written: their weights are zero, so whatever they hold adds nothing.
constexpr int kTile = 32;
__global__ void quantize_pixels(Int8Geometry g, const float* __restrict__ x,
                                const ImageQuant* __restrict__ images, std::uint8_t* __restrict__ q) {
  __shared__ std::uint8_t tile[kTile][kTile + 1];
  const int padded_plane = g.padded_height * g.padded_width;
  const int p0 = blockIdx.x * kTile, c0 = blockIdx.y * kTile, n = blockIdx.z;
  const ImageQuant image = images[n];
  for (int c = threadIdx.y; c < kTile; c += blockDim.y) {
    const int channel = c0 + c, p = p0 + threadIdx.x;
    if (channel >= g.channels || p >= padded_plane) continue;
    const int y = p / g.padded_width - g.pad_h, xx = p % g.padded_width - g.pad_w;
    std::uint8_t value = static_cast<std::uint8_t>(image.zero);
    if (y >= 0 && y < g.height && xx >= 0 && xx < g.width)
      value = quantize_value(
          g, x[((static_cast<long long>(n) * g.channels + channel) * g.height + y) * g.width + xx], image);
    tile[c][threadIdx.x] = value;
  }
  __syncthreads();
  for (int pp = threadIdx.y; pp < kTile; pp += blockDim.y) {
    const int channel = c0 + threadIdx.x, p = p0 + pp;
    if (channel >= g.channels || p >= padded_plane) continue;
    const int group = channel / g.in_per_group, c = channel % g.in_per_group;
    q[(static_cast<long long>(n) * padded_plane + p) * g.row_bytes + group * g.padded_channels + c] =
        tile[threadIdx.x][pp];
  }
}

// Path::windows: one thread per output position writes its window, (tap, channel) bytes four at a time: the
// zero point outside the image, zeros past taps · channels (their weights are zero too).
__global__ void quantize_windows(Int8Geometry g, const float* __restrict__ x,
                                 const ImageQuant* __restrict__ images, std::uint8_t* __restrict__ q) {
  for (long long column : grid_stride(g.columns)) {
    const int image = static_cast<int>(column / g.out_spatial),
              position = static_cast<int>(column % g.out_spatial);
    const int y0 = position / g.out_width * g.stride_h - g.pad_h,
              x0 = position % g.out_width * g.stride_w - g.pad_w;
    const ImageQuant quant = images[image];
    const float* source = x + static_cast<long long>(image) * g.channels * g.height * g.width;
    auto* words = reinterpret_cast<unsigned*>(q + column * g.window_bytes);
    int c = 0, ky = 0, kx = 0;  // the next byte's channel and tap
    for (int word = 0; word < g.window_bytes / 4; ++word) {
      unsigned packed = 0;
      for (int b = 0; b < 4; ++b) {
        if (ky == g.kernel_h) break;  // past the window: zeros
        const int y = y0 + ky * g.dilation_h, xx = x0 + kx * g.dilation_w;
        unsigned value = static_cast<unsigned>(quant.zero);
        if (y >= 0 && y < g.height && xx >= 0 && xx < g.width)
          value = quantize_value(g, source[(static_cast<long long>(c) * g.height + y) * g.width + xx], quant);
        packed |= value << (8 * b);
        if (++c == g.in_per_group) {
          c = 0;
          if (++kx == g.kernel_w) {
            kx = 0;
            ++ky;
          }
        }
      }
      words[word] = packed;
    }
  }
}

// Path::direct: the same values in the input's own N, C, H, W order.
__global__ void quantize_planes(Int8Geometry g, const float* __restrict__ x, long long count, int image_size,
                                const ImageQuant* __restrict__ images, std::uint8_t* __restrict__ q) {
  for (long long i : grid_stride(count)) q[i] = quantize_value(g, x[i], images[i / image_size]);
}

__device__ __forceinline__ float finish_value(const Finish& f, int sum, int oc, double input_scale,
                                              const float* residual) {
  float v = static_cast<float>(sum);
  if (f.kind == Params::Output::accumulator) return v;
  const auto scale = static_cast<float>(input_scale * f.weight_scale[oc] * f.multiplier[oc]);
  v = __fadd_rn(__fmul_rn(v, scale), f.offset[oc]);
  if (f.relu) v = fmaxf(v, 0.0f);
  if (f.kind == Params::Output::quantized || f.kind == Params::Output::dequantized) {
    const float q = fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(v, f.step)), f.zero), f.lo), f.hi);
    return f.kind == Params::Output::quantized ? q : __fmul_rn(__fsub_rn(q, f.zero), f.step);
  }
  if (residual != nullptr) v = __fadd_rn(v, *residual);
  return fminf(fmaxf(v, f.lo), f.hi);
}

// Output (image, oc, position) from its integer sum less the zero point's share.
__device__ __forceinline__ void finish_output(const Int8Geometry& g, const Finish& f,
                                              const ImageQuant* images, int acc, int oc, int image,
                                              int position) {
  const ImageQuant quant = images[image];
  const int sum = acc - quant.zero * f.row_sums[oc];
  const long long at = (static_cast<long long>(image) * g.out_channels + oc) * g.out_spatial + position;
  const float value =
      finish_value(f, sum, oc, quant.unrounded, f.residual != nullptr ? f.residual + at : nullptr);
  f.destination[image * f.image_stride + static_cast<long long>(oc) * g.out_spatial + position] = value;
}

// Depthwise and other few-output groups: one thread per output, its group's channels × taps summed from the
// quantized N, C, H, W bytes; outside the image, the zero point.
__global__ void int8_direct(Int8Geometry g, const std::uint8_t* __restrict__ q,
                            const std::int8_t* __restrict__ w, const ImageQuant* __restrict__ images,
                            Finish f, long long outputs) {
  for (long long i : grid_stride(outputs)) {
    const int position = static_cast<int>(i % g.out_spatial);
    const int oc = static_cast<int>(i / g.out_spatial % g.out_channels);
    const int image = static_cast<int>(i / g.out_spatial / g.out_channels);
    const int oy = position / g.out_width, ox = position % g.out_width;
    const int zero = images[image].zero;
    const int first = oc / g.out_per_group * g.in_per_group;
    const std::int8_t* weights = w + static_cast<long long>(oc) * g.padded_depth;
    int acc = 0;
    for (int c = 0; c < g.in_per_group; ++c) {
      const std::uint8_t* plane =
          q + (static_cast<long long>(image) * g.channels + first + c) * g.height * g.width;
      for (int ky = 0; ky < g.kernel_h; ++ky) {
        const int y = oy * g.stride_h - g.pad_h + ky * g.dilation_h;
        for (int kx = 0; kx < g.kernel_w; ++kx) {
          const int x = ox * g.stride_w - g.pad_w + kx * g.dilation_w;
          const int value = y >= 0 && y < g.height && x >= 0 && x < g.width ? plane[y * g.width + x] : zero;
          acc += value * weights[(c * g.kernel_h + ky) * g.kernel_w + kx];
        }
      }
    }
    finish_output(g, f, images, acc, oc, image, position);
  }
}

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void copy_16(std::uint8_t* shared, const void* global) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared)), "l"(global));
}

// Four 8 × 16-byte matrices from shared memory: lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void load_matrices(unsigned (&r)[4], const std::uint8_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row)));
}

__device__ __forceinline__ void mma_s8u8(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// kRows output channels × kCols columns per block of eight warps, each 32 rows × (8 · kTilesN) columns.
template <int kRows, int kTilesN>
__global__ void __launch_bounds__(kGemmThreads)
    int8_implicit_gemm(Int8Geometry g, const std::uint8_t* __restrict__ q, const std::int8_t* __restrict__ w,
                       const ImageQuant* __restrict__ images, Finish f) {
  constexpr int kWarpsN = kCols / (8 * kTilesN);
  static_assert(kWarpsN * (kRows / 32) == kGemmThreads / kWarp, "eight warps cover the tile");
  constexpr int kRowCopies = kRows * 4 / kGemmThreads;  // 16-byte copies per thread per stage
  constexpr int kColCopies = kCols * 4 / kGemmThreads;
  // Two stages of A (weights) and B (activations) tiles in one buffer, which the finish reuses.
  constexpr int kATile = kRows * kTileStride, kBTile = kCols * kTileStride;
  __shared__ __align__(128) std::uint8_t tiles[2 * (kATile + kBTile)];
  std::uint8_t* const a_tile[2] = {tiles, tiles + kATile};
  std::uint8_t* const b_tile[2] = {tiles + 2 * kATile, tiles + 2 * kATile + kBTile};
  const int thread = threadIdx.x, lane = thread % kWarp, warp = thread / kWarp;
  const int group = blockIdx.z, row0 = blockIdx.y * kRows, col0 = blockIdx.x * kCols;
  const int chunk = thread % 4;  // which 16 bytes of a stage's 64 this thread copies

  const std::int8_t* a_rows[kRowCopies];
  for (int i = 0; i < kRowCopies; ++i)
    a_rows[i] =
        w + (static_cast<long long>(group) * g.padded_rows + row0 + thread / 4 + 64 * i) * g.padded_depth +
        chunk * kChunk;
  // Each column's window origin in the bordered image; columns past the end copy column 0's (unused).
  const std::uint8_t* b_origin[kColCopies];
  for (int i = 0; i < kColCopies; ++i) {
    const int col = col0 + thread / 4 + 64 * i;
    const int c = col < g.columns ? col : 0;
    const int image = c / g.out_spatial, position = c % g.out_spatial;
    const int y = position / g.out_width * g.stride_h, x = position % g.out_width * g.stride_w;
    b_origin[i] = q +
                  ((static_cast<long long>(image) * g.padded_height + y) * g.padded_width + x) * g.row_bytes +
                  group * g.padded_channels;
  }
  // This thread's place in the depth: channel offset and tap (ky, kx), advanced by kDepth bytes per stage.
  int channel = chunk * kChunk, tap = 0, ky = 0, kx = 0;
  const auto settle = [&] {
    while (channel >= g.padded_channels) {
      channel -= g.padded_channels;
      ++tap;
      if (++kx == g.kernel_w) {
        kx = 0;
        ++ky;
      }
    }
  };
  settle();
  const auto copy_stage = [&](int stage, int k0) {
    // Past the last tap the weights are zero: any in-bounds bytes do.
    const long long offset =
        tap < g.taps
            ? (static_cast<long long>(ky) * g.dilation_h * g.padded_width + kx * g.dilation_w) * g.row_bytes +
                  channel
            : 0;
    for (int i = 0; i < kRowCopies; ++i)
      copy_16(a_tile[stage] + (thread / 4 + 64 * i) * kTileStride + chunk * kChunk, a_rows[i] + k0);
    for (int i = 0; i < kColCopies; ++i)
      copy_16(b_tile[stage] + (thread / 4 + 64 * i) * kTileStride + chunk * kChunk, b_origin[i] + offset);
    asm volatile("cp.async.commit_group;\n" ::);
    channel += kDepth;
    settle();
  };

  int acc[2][kTilesN][4] = {};
  const int warp_row = warp / kWarpsN * 32, warp_col = warp % kWarpsN * (8 * kTilesN);
  // ldmatrix rows: A's matrices are (rows 0-7 | 8-15) × (bytes 0-15 | 16-31), B's (bytes 0-15 | 16-31) ×
  // (columns 0-7 | 8-15) of a pair of n-tiles.
  const int a_row = lane % 8 + (lane / 8) % 2 * 8, a_byte = lane / 16 * 16;
  const int b_col = lane % 8 + lane / 16 * 8, b_byte = (lane / 8) % 2 * 16;
  const int stages = g.padded_depth / kDepth;
  copy_stage(0, 0);
  for (int s = 0; s < stages; ++s) {
    if (s + 1 < stages) {
      copy_stage((s + 1) % 2, (s + 1) * kDepth);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();
    const std::uint8_t* a_stage = a_tile[s % 2];
    const std::uint8_t* b_stage = b_tile[s % 2];
    for (int half = 0; half < 2; ++half) {
      unsigned a[2][4];
      for (int mi = 0; mi < 2; ++mi)
        load_matrices(a[mi], a_stage + (warp_row + mi * 16 + a_row) * kTileStride + half * 32 + a_byte);
      for (int nj = 0; nj < kTilesN / 2; ++nj) {
        unsigned b[4];
        load_matrices(b, b_stage + (warp_col + nj * 16 + b_col) * kTileStride + half * 32 + b_byte);
        for (int mi = 0; mi < 2; ++mi) {
          mma_s8u8(acc[mi][2 * nj], a[mi], b[0], b[1]);
          mma_s8u8(acc[mi][2 * nj + 1], a[mi], b[2], b[3]);
        }
      }
    }
    __syncthreads();
  }

  // The sums leave through shared memory (the tiles' space, free after the last stage), half the rows at a
  // time (mi = 0, then 1), so that each warp then writes 32 consecutive positions of one output channel.
  // Accumulator e of tile (mi, ni): row lane / 4 (+ 8 for e ≥ 2), column 2 · (lane % 4) (+ 1 for odd e).
  constexpr int kPassRows = kRows / 2, kStageStride = kCols + 8;  // + 8: fewer bank conflicts on the way in
  static_assert(kPassRows * kStageStride * sizeof(int) <= sizeof(tiles), "the staged sums fit");
  int* const stage = reinterpret_cast<int*>(tiles);
  for (int mi = 0; mi < 2; ++mi) {
    for (int ni = 0; ni < kTilesN; ++ni) {
      for (int high = 0; high < 2; ++high) {
        const int pass_row = warp_row / 2 + lane / 4 + high * 8;
        *reinterpret_cast<int2*>(stage + pass_row * kStageStride + warp_col + ni * 8 + 2 * (lane % 4)) =
            make_int2(acc[mi][ni][2 * high], acc[mi][ni][2 * high + 1]);
      }
    }
    __syncthreads();
    for (int i = thread; i < kPassRows * kCols; i += kGemmThreads) {
      const int pass_row = i / kCols, c = i % kCols;
      const int row = row0 + pass_row / 16 * 32 + mi * 16 + pass_row % 16, col = col0 + c;
      if (row >= g.out_per_group || col >= g.columns) continue;
      finish_output(g, f, images, stage[pass_row * kStageStride + c], group * g.out_per_group + row,
                    col / g.out_spatial, col % g.out_spatial);
    }
    __syncthreads();
  }
}

template <typename T>
std::shared_ptr<void> upload_vector(const std::vector<T>& values, Device device, const std::string& purpose) {
  std::shared_ptr<void> memory =
      allocate(std::max<std::size_t>(values.size(), 1) * sizeof(T), device, purpose);
  if (!values.empty()) copy(memory.get(), device, values.data(), Device::cpu(), values.size() * sizeof(T));
  return memory;
}

class Int8ConvolutionKernel final : public CudaKernel {
 public:
  Int8ConvolutionKernel(const Int8Geometry& g, std::int64_t batch, const Params& params,
                        const Int8ConvWeights& weights, const std::string& owner, StreamContext& context)
      : CudaKernel(context),
        g_(g),
        gemm_(g),
        batch_(batch),
        p_(params),
        owner_(owner),
        fusions_(params, g.out_channels, g.path == Int8Geometry::Path::direct ? "int8-direct" : "int8-mma") {
    const Device device = context.device();
    const std::int64_t depth = static_cast<std::int64_t>(g.in_per_group) * g.taps;
    // Weights: per group, padded_rows rows of padded_depth bytes, zeros in the padding; ordered (tap,
    // channel) for the GEMM (each tap's channels padded to 16 on Path::pixels), as the layer holds them,
    // (channel, tap), for the direct kernel.
    const int tap_stride = g.path == Int8Geometry::Path::pixels ? g.padded_channels : g.in_per_group;
    std::vector<std::int8_t> packed(static_cast<std::size_t>(g.groups) * g.padded_rows * g.padded_depth, 0);
    std::vector<int> row_sums(static_cast<std::size_t>(g.out_channels), 0);
    for (int oc = 0; oc < g.out_channels; ++oc) {
      const int group = oc / g.out_per_group, row = oc % g.out_per_group;
      std::int8_t* dst =
          packed.data() + (static_cast<std::size_t>(group) * g.padded_rows + row) * g.padded_depth;
      for (int c = 0; c < g.in_per_group; ++c) {
        for (int tap = 0; tap < g.taps; ++tap) {
          const std::int8_t v = weights.values[static_cast<std::size_t>(oc * depth + c * g.taps + tap)];
          dst[g.path == Int8Geometry::Path::direct ? c * g.taps + tap : tap * tap_stride + c] = v;
          row_sums[static_cast<std::size_t>(oc)] += v;
        }
      }
    }
    weights_ = upload_vector(packed, device, "the int8 weights of " + owner);
    row_sums_ = upload_vector(row_sums, device, "the weight sums of " + owner);
    weight_scale_ = upload_vector(weights.scale, device, "the weight scales of " + owner);
    bias_ = weights.bias;
    upload_affine();
    // The quantized input lives in the stream's shared workspace: only one kernel runs at a time.
    switch (g.path) {
      case Int8Geometry::Path::pixels:
        context.reserve_workspace(static_cast<std::size_t>(batch) * g.padded_height * g.padded_width *
                                  g.row_bytes);
        break;
      case Int8Geometry::Path::windows:
        context.reserve_workspace(static_cast<std::size_t>(g.columns) * g.window_bytes);
        // The GEMM sees a 1x1 convolution over the windows.
        gemm_.channels = gemm_.in_per_group = gemm_.padded_channels = gemm_.row_bytes =
            g.window_bytes;  // one group
        gemm_.height = gemm_.padded_height = g.out_height;
        gemm_.width = gemm_.padded_width = g.out_width;
        gemm_.kernel_h = gemm_.kernel_w = gemm_.stride_h = gemm_.stride_w = gemm_.dilation_h =
            gemm_.dilation_w = 1;
        gemm_.pad_h = gemm_.pad_w = 0;
        gemm_.taps = 1;
        break;
      case Int8Geometry::Path::direct:
        context.reserve_workspace(static_cast<std::size_t>(batch) * g.channels * g.height * g.width);
        break;
    }
    std::vector<ImageQuant> images;
    if (p_.input != Params::Input::dynamic) {
      images.assign(static_cast<std::size_t>(batch),
                    {static_cast<float>(p_.input_scale), static_cast<int>(p_.input_zero_point) + g.shift,
                     p_.input_scale});
    } else {
      images.assign(static_cast<std::size_t>(batch), {1.0f, 0, 1.0});  // written by range_finish
      const long long image_size = static_cast<long long>(g.channels) * g.height * g.width;
      range_parts_ = static_cast<int>(std::clamp<long long>((image_size + 8191) / 8192, 1, kMaxRangeParts));
      parts_ = allocate(static_cast<std::size_t>(batch) * range_parts_ * sizeof(float2), device,
                        "the range slices of " + owner);
    }
    images_ = upload_vector(images, device, "the input scales of " + owner);
  }

  void forward(const std::vector<Tensor>& inputs, std::vector<Tensor>& outputs) override {
    if (g_.columns == 0) return;
    const float* x = inputs[0].data<float>();
    auto* images = static_cast<ImageQuant*>(images_.get());
    auto* q = static_cast<std::uint8_t*>(context_.workspace());
    const long long image_size = static_cast<long long>(g_.channels) * g_.height * g_.width;
    if (p_.input == Params::Input::dynamic) {
      auto* parts = static_cast<float2*>(parts_.get());
      launch(context_,
             Grid{dim3(static_cast<unsigned>(range_parts_), static_cast<unsigned>(batch_)), dim3(kThreads)},
             range_parts, x, image_size, parts);
      launch(context_, Grid{dim3(static_cast<unsigned>(batch_)), dim3(kWarp)}, range_finish,
             static_cast<const float2*>(parts), range_parts_, images);
    }
    Finish f = finish();
    f.residual = fusions_.residual().defined() ? fusions_.residual().data<float>() : nullptr;
    f.destination = fusions_.redirect() != nullptr ? fusions_.redirect() : outputs[0].data<float>();
    f.image_stride = fusions_.redirect() != nullptr
                         ? fusions_.redirect_stride()
                         : static_cast<long long>(g_.out_channels) * g_.out_spatial;
    const auto* w = static_cast<const std::int8_t*>(weights_.get());
    if (g_.path == Int8Geometry::Path::direct) {
      launch(context_, batch_ * image_size, quantize_planes, g_, x, batch_ * image_size,
             static_cast<int>(image_size), images, q);
      const long long outputs_count = static_cast<long long>(g_.columns) * g_.out_channels;
      launch(context_, outputs_count, int8_direct, g_, q, w, images, f, outputs_count);
      return;
    }
    if (g_.path == Int8Geometry::Path::windows) {
      launch(context_, g_.columns, quantize_windows, g_, x, images, q);
    } else {
      const int padded_plane = g_.padded_height * g_.padded_width;
      launch(
          context_,
          Grid{dim3(static_cast<unsigned>((padded_plane + kTile - 1) / kTile),
                    static_cast<unsigned>((g_.channels + kTile - 1) / kTile), static_cast<unsigned>(batch_)),
               dim3(kTile, 8)},
          quantize_pixels, g_, x, images, q);
    }
    const Grid grid{
        dim3(static_cast<unsigned>((g_.columns + kCols - 1) / kCols),
             static_cast<unsigned>(g_.padded_rows / g_.rows_per_block), static_cast<unsigned>(g_.groups)),
        dim3(kGemmThreads)};
    if (g_.rows_per_block == 64) {
      launch(context_, grid, int8_implicit_gemm<64, 4>, gemm_, q, w, images, f);
    } else {
      launch(context_, grid, int8_implicit_gemm<128, 8>, gemm_, q, w, images, f);
    }
  }

  bool has_fast_backward() const override { return false; }

  bool fuse_channel_affine(ChannelAffine affine) override {
    if (!fusions_.fold(affine)) return false;
    upload_affine();
    return true;
  }
  bool fuse_residual(const Tensor& residual) override { return fusions_.add(residual); }
  bool fuse_clamp(float lo, float hi) override { return fusions_.clamp(lo, hi); }
  bool redirect_output(float* base, std::int64_t image_stride) override {
    return fusions_.redirect_to(base, image_stride);
  }
  const char* name() const override { return fusions_.name().c_str(); }

 private:
  // The per-channel multiplier (double, as the CPU multiplies in double) and offset bias · m + o.
  void upload_affine() {
    std::vector<float> offset(fusions_.multiplier().size());
    for (std::size_t c = 0; c < offset.size(); ++c) offset[c] = fusions_.channel_offset(c, bias_);
    multiplier_device_ =
        upload_vector(fusions_.multiplier(), context_.device(), "the channel multipliers of " + owner_);
    offset_device_ = upload_vector(offset, context_.device(), "the channel offsets of " + owner_);
  }

  Finish finish() const {
    Finish f{};
    f.kind = p_.output;
    f.relu = p_.relu;
    f.row_sums = static_cast<const int*>(row_sums_.get());
    f.weight_scale = static_cast<const double*>(weight_scale_.get());
    f.multiplier = static_cast<const double*>(multiplier_device_.get());
    f.offset = static_cast<const float*>(offset_device_.get());
    const Int8Fusions::Bounds bounds = fusions_.bounds(p_);
    f.step = bounds.step;
    f.zero = bounds.zero;
    f.lo = bounds.lo;
    f.hi = bounds.hi;
    return f;
  }

  Int8Geometry g_;
  Int8Geometry gemm_;  // what the GEMM sees: g_, or on Path::windows a 1x1 convolution over the windows
  std::int64_t batch_;
  Params p_;
  std::string owner_;
  std::shared_ptr<void> weights_, row_sums_, weight_scale_, multiplier_device_, offset_device_, images_,
      parts_;
  int range_parts_ = 0;  // slices per image for dynamic ranges
  std::vector<float> bias_;
  Int8Fusions fusions_;
};

// 1-D and 2-D windows whose sums stay exact in int32 and whose sizes fit the kernels' 32-bit indices and
// CUDA's grid; nullopt otherwise.
std::optional<Int8Geometry> int8_geometry(const ConvGeometry& cg, const Params& params) {
  const int axes = cg.axes();
  if (axes != 1 && axes != 2) return std::nullopt;
  const bool two = axes == 2;
  const auto first = [&](const std::vector<std::int64_t>& v, std::int64_t one) { return two ? v[0] : one; };
  const std::int64_t in_per_group = cg.in_channels / cg.group, out_per_group = cg.out_channels / cg.group;
  const std::int64_t kernel_h = first(cg.kernel, 1), pad_h = first(cg.pad, 0), pad_w = cg.pad.back();
  const std::int64_t taps = kernel_h * cg.kernel.back();
  const auto round_up = [](std::int64_t v, std::int64_t to) { return (v + to - 1) / to * to; };
  const std::int64_t window_bytes = round_up(taps * in_per_group, kChunk);
  // Windows pay for small windows only. Measured on an H100 (bench/results/2026-12-07-h100-int8-gpu.md):
  // MobileNetV2's first 3x3 convolution at batch 64 0.49 ms as windows against 0.84 as pixels, but
  // ResNet-18's 7x7 one at batch 256 5.7 against 3.9 ms: its windows are 160 bytes per position, written
  // eleven times over.
  using Path = Int8Geometry::Path;
  constexpr std::int64_t kWindowMaxTaps = 9;
  const bool windows =
      cg.group == 1 && taps <= kWindowMaxTaps && 2 * window_bytes <= taps * round_up(in_per_group, kChunk);
  const Path path = out_per_group < kDirectMaxOutputs ? Path::direct : windows ? Path::windows : Path::pixels;
  const bool direct = path == Path::direct;
  const std::int64_t padded_channels = direct ? in_per_group : round_up(in_per_group, kChunk);
  const std::int64_t padded_height = first(cg.in_size, 1) + 2 * pad_h,
                     padded_width = cg.in_size.back() + 2 * pad_w;
  // 64-row blocks for up to 64 outputs per group (ResNet's first stage, most of SqueezeNet), else 128.
  const std::int64_t rows_per_block = out_per_group <= 64 ? 64 : 128;
  const std::int64_t padded_rows =
      direct ? out_per_group : (out_per_group + rows_per_block - 1) / rows_per_block * rows_per_block;
  const std::int64_t padded_depth = direct                  ? taps * in_per_group
                                    : path == Path::windows ? round_up(window_bytes, kDepth)
                                                            : round_up(taps * padded_channels, kDepth);
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  const std::int64_t columns = cg.batch * cg.out_spatial();
  // Every index inside one image, and the columns, in 32 bits; the grid within CUDA's limits.
  if (cg.batch > 65535 || cg.group > 65535 ||
      padded_height * padded_width * cg.group * padded_channels > int_max ||
      cg.out_channels * cg.out_spatial() > int_max || columns * cg.out_channels > int_max ||
      padded_depth > int_max / 2 || padded_rows / rows_per_block > 65535 || cg.in_channels > 65535 * kTile ||
      taps * in_per_group > kInt8ExactDepth) {
    return std::nullopt;
  }
  Int8Geometry g{};
  g.channels = static_cast<int>(cg.in_channels);
  g.groups = static_cast<int>(cg.group);
  g.in_per_group = static_cast<int>(in_per_group);
  g.padded_channels = static_cast<int>(padded_channels);
  g.height = static_cast<int>(first(cg.in_size, 1));
  g.width = static_cast<int>(cg.in_size.back());
  g.out_height = static_cast<int>(first(cg.out_size, 1));
  g.out_width = static_cast<int>(cg.out_size.back());
  g.kernel_h = static_cast<int>(kernel_h);
  g.kernel_w = static_cast<int>(cg.kernel.back());
  g.stride_h = static_cast<int>(first(cg.stride, 1));
  g.stride_w = static_cast<int>(cg.stride.back());
  g.pad_h = static_cast<int>(pad_h);
  g.pad_w = static_cast<int>(pad_w);
  g.dilation_h = static_cast<int>(first(cg.dilation, 1));
  g.dilation_w = static_cast<int>(cg.dilation.back());
  g.padded_height = static_cast<int>(padded_height);
  g.padded_width = static_cast<int>(padded_width);
  g.row_bytes = static_cast<int>(cg.group * padded_channels);
  g.taps = static_cast<int>(taps);
  g.padded_depth = static_cast<int>(padded_depth);
  g.rows_per_block = static_cast<int>(rows_per_block);
  g.padded_rows = static_cast<int>(padded_rows);
  g.out_per_group = static_cast<int>(out_per_group);
  g.out_channels = static_cast<int>(cg.out_channels);
  g.out_spatial = static_cast<int>(cg.out_spatial());
  g.columns = static_cast<int>(columns);
  g.path = path;
  g.window_bytes = static_cast<int>(window_bytes);
  // Dynamic ranges quantize to uint8; fixed ones to the input type, moved up by 128 when signed.
  const QuantRange range = params.input == Params::Input::dynamic ? QuantRange{0, 255} : params.input_range;
  g.integers = params.input == Params::Input::quantized;
  g.shift = range.lo < 0 ? 128 : 0;
  g.lo = static_cast<float>(range.lo + g.shift);
  g.hi = static_cast<float>(range.hi + g.shift);
  return g;
}

}  // namespace

std::unique_ptr<Kernel> make_quantized_convolution(const Layer& layer, const std::vector<Shape>& inputs,
                                                   StreamContext& context) {
  const auto& conv = static_cast<const QuantizedConvolutionLayer&>(layer);
  const ConvGeometry cg = conv.geometry(inputs[0]);
  const std::optional<Int8Geometry> g = int8_geometry(cg, conv.quant());
  if (!g) return nullptr;
  const std::optional<Int8ConvWeights> weights = conv.int8_weights(cg);
  if (!weights) return nullptr;  // uint8 weights far from their zero point: the CPU's reference
  return std::make_unique<Int8ConvolutionKernel>(*g, cg.batch, conv.quant(), *weights,
                                                 "layer '" + layer.name() + "'", context);
}

std::unique_ptr<Kernel> int8_convolution_kernel(const Layer& layer, const std::vector<Shape>& inputs,
                                                StreamContext& context) {
  const auto& conv = static_cast<const ConvolutionLayer&>(layer);
  const ConvGeometry cg = conv.geometry(inputs[0]);
  Params params;
  params.input = Params::Input::dynamic;
  const std::optional<Int8Geometry> g = int8_geometry(cg, params);
  if (!g) return nullptr;
  return std::make_unique<Int8ConvolutionKernel>(*g, cg.batch, params, quantize_convolution_weights(conv, cg),
                                                 "layer '" + layer.name() + "'", context);
}

}  // namespace espresso::cuda
