#include "backends/backend.h"

#include "espresso/errors.h"

namespace espresso {
namespace {

[[noreturn]] void no_capture(const Stream& stream) {
  throw UnsupportedError("work on " + stream.device().str() + " cannot be captured and replayed");
}

}  // namespace

void Stream::begin_capture() { no_capture(*this); }
void Stream::end_capture() { no_capture(*this); }
void Stream::abort_capture() { no_capture(*this); }
void Stream::replay() { no_capture(*this); }

void Stream::convert(const Tensor& source, Tensor&) {
  throw UnsupportedError(std::string("converting ") + dtype_name(source.dtype()) + " tensors on " +
                         device().str() + " is not supported");
}

void Stream::convert_layout(const Tensor& source, Tensor&, bool) {
  throw UnsupportedError(std::string("moving the channels of ") + dtype_name(source.dtype()) +
                         " tensors on " + device().str() + " is not supported");
}

void Stream::add_converted(const Tensor& source, Tensor&) {
  throw UnsupportedError(std::string("accumulating converted ") + dtype_name(source.dtype()) +
                         " tensors on " + device().str() + " is not supported");
}

void Stream::apply_updates(const std::vector<BlobUpdate>& updates) {
  for (const BlobUpdate& u : updates) apply_update(u.rule, *u.value, *u.grad, *u.history, u.second);
}

void Stream::flag_non_finite(const std::vector<Tensor>&, Tensor&) {
  throw UnsupportedError("checking gradients for overflow on " + device().str() + " is not supported");
}

void Backend::upload(Device device, const std::vector<UploadPiece>& pieces) {
  for (const UploadPiece& piece : pieces)
    copy(piece.device_destination, device, piece.host_source, Device::cpu(), piece.bytes);
}

}  // namespace espresso
