// Tensor: a shaped, typed view of memory on one device. Copies between devices are explicit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace espresso {

enum class DType : std::uint8_t { f32, f16, bf16, i8, i32, i64 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

enum class DeviceType : std::uint8_t { cpu, cuda, vulkan };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  static Device vulkan(int index = 0) { return {DeviceType::vulkan, index}; }
  // Parses "cpu", "cuda", "cuda:N", "vulkan" or "vulkan:N"; throws UnsupportedError otherwise.
  static Device parse(const std::string& text);
  bool is_cpu() const { return type == DeviceType::cpu; }
  std::string str() const;
  bool operator==(const Device&) const = default;
};

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {}

  int rank() const { return static_cast<int>(dims_.size()); }
  std::int64_t operator[](int axis) const { return dims_[static_cast<std::size_t>(axis)]; }
  std::int64_t& operator[](int axis) { return dims_[static_cast<std::size_t>(axis)]; }
  // Dimension with Python-style negative indexing; throws ShapeError when out of range.
  std::int64_t dim(int axis) const;
  // Resolves a possibly negative axis against this rank; throws ShapeError when out of range.
  int canonical_axis(int axis) const;
  std::int64_t numel() const { return count(0, rank()); }
  // Product of dims in [begin, end).
  std::int64_t count(int begin, int end) const;
  std::int64_t count(int begin) const { return count(begin, rank()); }
  const std::vector<std::int64_t>& dims() const { return dims_; }
  std::string str() const;  // "1x20x24x24"; "scalar" for rank 0
  bool operator==(const Shape&) const = default;

 private:
  std::vector<std::int64_t> dims_;
};

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory on the device (64-byte aligned on the CPU). Device memory comes from the
  // device's backend, which registers on first use of the device API (espresso/devices.h, Model, Net).
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  // A view of memory owned elsewhere; `owner` (if any) keeps it alive.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device = Device::cpu(),
                     std::shared_ptr<void> owner = {});
  // A CPU f32 tensor holding a copy of `values`; throws ShapeError when the count differs.
  static Tensor from(const Shape& shape, const std::vector<float>& values);

  bool defined() const { return data_ != nullptr || shape_.numel() == 0; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::int64_t numel() const { return shape_.numel(); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  // Typed access; throws UnsupportedError when T does not match the dtype.
  template <class T>
  T* data();
  template <class T>
  const T* data() const;

  // Same memory, new shape with the same element count.
  Tensor reshaped(const Shape& shape) const;
  // A deep copy on `device`.
  Tensor to(Device device) const;
  Tensor clone() const { return to(device_); }
  // Copies `source` (same dtype and element count) into this tensor's memory, across devices if needed.
  void copy_from(const Tensor& source);
  // Host values as a vector; only for CPU f32 tensors (tests and tools).
  std::vector<float> to_vector() const;

  // The version of this tensor's memory, shared by every tensor made from it (copies, reshaped()):
  // kernels that keep a transformed copy (the CPU's packed convolution weights) compare it with the
  // version they packed at. mark_written() moves it; copy_from() marks, Net::weights() and
  // Net::parameters() mark the views they hand out, and Net::backward() the parameters a solver
  // updates next. Versions come from one process-wide sequence, so memory replaced by other memory
  // reads as changed too. Code that writes a net's weights through data() after a forward, without
  // fetching them again, calls mark_written(). 0 for a tensor without memory.
  std::uint64_t version() const;
  void mark_written();

 private:
  struct Storage;  // the memory's owner and its version
  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_;
};

}  // namespace espresso
