// Typed errors thrown by the library. Library code never aborts; the CLI maps these to messages
// and exit codes.
#pragma once

#include <stdexcept>
#include <string>

namespace espresso {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A file is missing, unreadable or cut short.
class FileError : public Error {
 public:
  using Error::Error;
};

// A file is readable but its contents do not follow the format (syntax errors, corrupt data).
class ParseError : public Error {
 public:
  using Error::Error;
};

// The model is well formed but not valid: bad parameters, unknown layers, weight mismatches.
class ModelError : public Error {
 public:
  using Error::Error;
};

// Tensor shapes that do not fit a layer or an operation.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A valid request that this build or backend cannot carry out.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

// Datasets and images that cannot be used.
class DataError : public Error {
 public:
  using Error::Error;
};

// Device failures: no such device, out of device memory, kernel errors.
class DeviceError : public Error {
 public:
  using Error::Error;
};

// Out of device memory: an allocation the device (or a memory cap) could not serve. The process keeps
// working; a smaller batch, or another way to compute, may fit.
class OutOfMemoryError : public DeviceError {
 public:
  using DeviceError::DeviceError;
};

// An input asks for more than the configured limits allow (espresso/limits.h): tensor sizes, planned
// memory, image pixels, nesting depth, name lengths. Checked before allocating.
class LimitError : public Error {
 public:
  using Error::Error;
};

// Distributed training: a rank died, timed out or disagrees with the others (model, solver, iteration).
// The message names the rank.
class DistributedError : public Error {
 public:
  using Error::Error;
};

}  // namespace espresso
