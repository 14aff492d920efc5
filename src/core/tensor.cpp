#include "espresso/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

#include "core/device_memory.h"
#include "espresso/errors.h"
#include "espresso/limits.h"

namespace espresso {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  for (const auto& [name, type] : {std::pair{std::string("cuda"), DeviceType::cuda},
                                   std::pair{std::string("vulkan"), DeviceType::vulkan}}) {
    if (text == name) return {type, 0};
    if (text.rfind(name + ":", 0) == 0) {
      const std::string index = text.substr(name.size() + 1);
      if (!index.empty() && index.size() < 4 && index.find_first_not_of("0123456789") == std::string::npos) {
        return {type, std::stoi(index)};
      }
    }
  }
  throw UnsupportedError("unknown device '" + text + "' (expected cpu, cuda, cuda:N, vulkan or vulkan:N)");
}

std::string Device::str() const {
  switch (type) {
    case DeviceType::cpu: return "cpu";
    case DeviceType::cuda: return "cuda:" + std::to_string(index);
    case DeviceType::vulkan: return "vulkan:" + std::to_string(index);
  }
  return "?";
}

std::int64_t Shape::dim(int axis) const { return dims_[static_cast<std::size_t>(canonical_axis(axis))]; }

int Shape::canonical_axis(int axis) const {
  const int resolved = axis < 0 ? axis + rank() : axis;
  if (resolved < 0 || resolved >= rank()) {
    throw ShapeError("axis " + std::to_string(axis) + " is out of range for shape " + str());
  }
  return resolved;
}

std::int64_t Shape::count(int begin, int end) const {
  std::int64_t n = 1;
  for (int i = begin; i < end; ++i) {
    // Shapes come from files: a product past 64 bits is an error, never a wrapped count.
    if (__builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &n))
      throw ShapeError("shape " + str() + " overflows a 64-bit element count");
  }
  return n;
}

std::string Shape::str() const {
  if (dims_.empty()) return "scalar";
  std::ostringstream out;
  for (std::size_t i = 0; i < dims_.size(); ++i) out << (i ? "x" : "") << dims_[i];
  return out.str();
}

namespace {

// Versions are drawn from one sequence, so no two storages ever share one.
std::atomic<std::uint64_t> version_sequence{0};
std::uint64_t next_version() { return version_sequence.fetch_add(1, std::memory_order_relaxed) + 1; }

}  // namespace

struct Tensor::Storage {
  explicit Storage(std::shared_ptr<void> owner) : memory(std::move(owner)), version(next_version()) {}
  std::shared_ptr<void> memory;
  std::atomic<std::uint64_t> version;
};

std::uint64_t Tensor::version() const {
  return storage_ ? storage_->version.load(std::memory_order_acquire) : 0;
}

void Tensor::mark_written() {
  if (storage_) storage_->version.store(next_version(), std::memory_order_release);
}

namespace {

void check_shape(const Shape& shape, DType dtype) {
  for (std::int64_t d : shape.dims()) {
    if (d < 0) throw ShapeError("negative dimension in shape " + shape.str());
  }
  // The last line of defence; loaders check the shapes they read with the file's name first.
  checked_numel(shape.dims(), dtype_size(dtype), "tensor of shape " + shape.str());
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::make_shared<Storage>(device_memory(device.type).allocate(t.bytes(), device, ""));
  t.data_ = t.storage_->memory.get();
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device_memory(device.type).fill_zero(t.data_, device, t.bytes());
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device,
                    std::shared_ptr<void> owner) {
  check_shape(shape, dtype);
  Tensor t;
  t.storage_ = std::make_shared<Storage>(std::move(owner));
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::from(const Shape& shape, const std::vector<float>& values) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    throw ShapeError("shape " + shape.str() + " needs " + std::to_string(shape.numel()) +
                     " values, got " + std::to_string(values.size()));
  }
  Tensor t = empty(shape);
  // memcpy's pointers must not be null, not even for 0 bytes (an empty vector may have none).
  if (!values.empty()) std::memcpy(t.data_, values.data(), t.bytes());
  return t;
}

namespace {

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<std::int8_t>() { return DType::i8; }
template <>
constexpr DType dtype_of<std::int32_t>() { return DType::i32; }
template <>
constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <>
constexpr DType dtype_of<std::uint16_t>() { return DType::f16; }

void check_dtype(DType have, DType want) {
  if (have != want && !(want == DType::f16 && have == DType::bf16)) {
    throw UnsupportedError(std::string("tensor holds ") + dtype_name(have) + ", accessed as " +
                           dtype_name(want));
  }
}

}  // namespace

template <class T>
T* Tensor::data() {
  check_dtype(dtype_, dtype_of<T>());
  return static_cast<T*>(data_);
}

template <class T>
const T* Tensor::data() const {
  check_dtype(dtype_, dtype_of<T>());
  return static_cast<const T*>(data_);
}

template float* Tensor::data<float>();
template const float* Tensor::data<float>() const;
template std::int8_t* Tensor::data<std::int8_t>();
template const std::int8_t* Tensor::data<std::int8_t>() const;
template std::int32_t* Tensor::data<std::int32_t>();
template const std::int32_t* Tensor::data<std::int32_t>() const;
template std::int64_t* Tensor::data<std::int64_t>();
template const std::int64_t* Tensor::data<std::int64_t>() const;
template std::uint16_t* Tensor::data<std::uint16_t>();
template const std::uint16_t* Tensor::data<std::uint16_t>() const;

Tensor Tensor::reshaped(const Shape& shape) const {
  if (shape.numel() != numel()) {
    throw ShapeError("cannot reshape " + shape_.str() + " to " + shape.str());
  }
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& source) {
  if (source.dtype_ != dtype_ || source.numel() != numel()) {
    throw ShapeError(std::string("cannot copy ") + dtype_name(source.dtype_) + " " +
                     source.shape_.str() + " into " + dtype_name(dtype_) + " " + shape_.str());
  }
  if (source.device_.is_cpu() || device_.is_cpu() || source.device_.type == device_.type) {
    device_memory(device_.is_cpu() ? source.device_.type : device_.type)
        .copy(data_, device_, source.data_, source.device_, bytes());
  } else {
    // Between two kinds of device: through the host.
    copy_from(source.to(Device::cpu()));
  }
  mark_written();
}

std::vector<float> Tensor::to_vector() const {
  if (!device_.is_cpu()) {
    throw UnsupportedError("to_vector() needs a CPU tensor, this one is on " + device_.str() +
                           "; use to(Device::cpu())");
  }
  const float* p = data<float>();
  return std::vector<float>(p, p + numel());
}

}  // namespace espresso
