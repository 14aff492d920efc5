// Our own convolution: an implicit GEMM in fp32. Per group, output channels are the rows and
// (image, output position) pairs the columns of a GEMM whose right-hand matrix, the im2col matrix,
// is never stored: each tile of it is gathered from the input into shared memory as needed. One
// launch for the whole batch and every group, no workspace: this wins over the libraries' several
// launches when layers are small (LeNet-sized), where launch and setup costs dominate.
#include <limits>

#include "backends/cuda/conv_tactics.h"
#include "backends/cuda/launch.cuh"

namespace espresso::cuda {
namespace {

constexpr int kTileRows = 64;   // output channels per block
constexpr int kTileCols = 64;   // output columns (image, position) per block
constexpr int kTileDepth = 16;  // reduction slice held in shared memory
constexpr int kSide = 16;       // threads per block side: 16 x 16, each computing 4 x 4 outputs
constexpr int kPerThread = kTileRows / kSide;

// Everything fits in 32-bit ints (make_implicit_conv checks); only whole-tensor offsets use 64.
struct Geometry {
  int in_channels, out_channels, in_per_group, out_per_group;
  int in[3], out[3], kernel[3], stride[3], pad[3], dilation[3];
  int taps, depth;  // depth = in_per_group * taps, the GEMM's reduction length
  int in_spatial, out_spatial;
  long long columns;  // batch * out_spatial
};

__global__ void __launch_bounds__(kSide* kSide)
    implicit_gemm(Geometry g, const float* __restrict__ x, const float* __restrict__ w,
                  const float* __restrict__ bias, float* __restrict__ y) {
  __shared__ float a_tile[kTileDepth][kTileRows];
  __shared__ float b_tile[kTileDepth][kTileCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int thread = ty * kSide + tx;
  const int group = blockIdx.z;
  const int row0 = blockIdx.y * kTileRows;
  const long long col0 = static_cast<long long>(blockIdx.x) * kTileCols;

  // The column this thread gathers for the b tile, decoded once: image and output position.
  const int load_col = thread % kTileCols;
  const int load_depth = thread / kTileCols;  // 0..3; the thread loads depths load_depth + 4r
  const long long column = col0 + load_col;
  const bool column_valid = column < g.columns;
  const int image = column_valid ? static_cast<int>(column / g.out_spatial) : 0;
  const int position = column_valid ? static_cast<int>(column % g.out_spatial) : 0;
  const int od = position / (g.out[1] * g.out[2]);
  const int oh = position / g.out[2] % g.out[1];
  const int ow = position % g.out[2];
  const float* x_group =
      x + (static_cast<long long>(image) * g.in_channels + static_cast<long long>(group) * g.in_per_group) *
              g.in_spatial;
  const float* w_group = w + static_cast<long long>(group) * g.out_per_group * g.depth;
  const int load_row = thread % kTileRows;
  const bool row_valid = row0 + load_row < g.out_per_group;

  float acc[kPerThread][kPerThread] = {};
  for (int k0 = 0; k0 < g.depth; k0 += kTileDepth) {
    for (int r = 0; r < kTileDepth / 4; ++r) {
      const int kk = load_depth + 4 * r;
      const int k = k0 + kk;
      a_tile[kk][load_row] =
          row_valid && k < g.depth ? w_group[static_cast<long long>(row0 + load_row) * g.depth + k] : 0.0f;
      float value = 0.0f;
      if (column_valid && k < g.depth) {
        const int channel = k / g.taps;
        const int tap = k % g.taps;
        const int kd = tap / (g.kernel[1] * g.kernel[2]);
        const int kh = tap / g.kernel[2] % g.kernel[1];
        const int kw = tap % g.kernel[2];
        const int id = od * g.stride[0] - g.pad[0] + kd * g.dilation[0];
        const int ih = oh * g.stride[1] - g.pad[1] + kh * g.dilation[1];
        const int iw = ow * g.stride[2] - g.pad[2] + kw * g.dilation[2];
        if (id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1] && iw >= 0 && iw < g.in[2]) {
          value =
              x_group[static_cast<long long>(channel) * g.in_spatial + (id * g.in[1] + ih) * g.in[2] + iw];
        }
      }
      b_tile[kk][load_col] = value;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileDepth; ++kk) {
      float a[kPerThread], b[kPerThread];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        a[i] = a_tile[kk][ty + kSide * i];
        b[i] = b_tile[kk][tx + kSide * i];
      }
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

  for (int j = 0; j < kPerThread; ++j) {
    const long long col = col0 + tx + kSide * j;
    if (col >= g.columns) continue;
    const long long out_image = col / g.out_spatial;
    const int out_position = static_cast<int>(col % g.out_spatial);
    for (int i = 0; i < kPerThread; ++i) {
      const int row = row0 + ty + kSide * i;
      if (row >= g.out_per_group) continue;
      const int channel = group * g.out_per_group + row;
      y[(out_image * g.out_channels + channel) * g.out_spatial + out_position] =
          acc[i][j] + (bias != nullptr ? bias[channel] : 0.0f);
    }
  }
}

class ImplicitConv final : public ConvTactic {
 public:
  ImplicitConv(const Geometry& geometry, dim3 grid, StreamContext& context)
      : geometry_(geometry), grid_(grid), context_(context) {}

  void run(const float* x, const float* w, const float* b, float* y) override {
    if (geometry_.columns == 0) return;
    launch(context_, Grid{grid_, dim3(kSide, kSide)}, implicit_gemm, geometry_, x, w, b, y);
  }
  const char* name() const override { return "implicit-gemm"; }

 private:
  Geometry geometry_;
  dim3 grid_;
  StreamContext& context_;
};

}  // namespace

std::unique_ptr<ConvTactic> make_implicit_conv(const ConvProblem& p, StreamContext& context) {
  constexpr std::int64_t int_max = std::numeric_limits<int>::max();
  const std::int64_t columns = p.batch * p.out_spatial();
  const std::int64_t column_blocks = (columns + kTileCols - 1) / kTileCols;
  const std::int64_t row_blocks = (p.out_per_group() + kTileRows - 1) / kTileRows;
  // Per-image offsets and the grid must fit CUDA's and our index types.
  if (p.in_channels * p.in_spatial() > int_max || p.out_channels * p.out_spatial() > int_max ||
      p.in_per_group() * p.taps() > int_max || column_blocks > int_max || row_blocks > 65535 ||
      p.group > 65535) {
    return nullptr;
  }
  Geometry g{};
  g.in_channels = static_cast<int>(p.in_channels);
  g.out_channels = static_cast<int>(p.out_channels);
  g.in_per_group = static_cast<int>(p.in_per_group());
  g.out_per_group = static_cast<int>(p.out_per_group());
  for (int a = 0; a < 3; ++a) {
    g.in[a] = static_cast<int>(p.in[a]);
    g.out[a] = static_cast<int>(p.out[a]);
    g.kernel[a] = static_cast<int>(p.kernel[a]);
    g.stride[a] = static_cast<int>(p.stride[a]);
    g.pad[a] = static_cast<int>(p.pad[a]);
    g.dilation[a] = static_cast<int>(p.dilation[a]);
  }
  g.taps = static_cast<int>(p.taps());
  g.depth = g.in_per_group * g.taps;
  g.in_spatial = static_cast<int>(p.in_spatial());
  g.out_spatial = static_cast<int>(p.out_spatial());
  g.columns = columns;
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(row_blocks),
                  static_cast<unsigned>(p.group));
  return std::make_unique<ImplicitConv>(g, grid, context);
}

}  // namespace espresso::cuda
