#include "data/datum.h"

#include <memory>
#include <span>

#include "espresso/errors.h"
#include "data/datum.pb.h"
#include "data/image_decode.h"
#include "data/proto_parse.h"
#include "espresso/limits.h"

namespace espresso::data {

std::string encode_datum(const std::uint8_t* pixels, std::int64_t channels, std::int64_t height,
                         std::int64_t width, int label) {
  caffe::Datum datum;
  datum.set_channels(static_cast<int>(channels));
  datum.set_height(static_cast<int>(height));
  datum.set_width(static_cast<int>(width));
  datum.set_label(label);
  datum.set_data(pixels, static_cast<std::size_t>(channels * height * width));
  return datum.SerializeAsString();
}

std::string encode_datum_floats(const std::vector<float>& values, std::int64_t channels, std::int64_t height,
                                std::int64_t width, int label) {
  caffe::Datum datum;
  datum.set_channels(static_cast<int>(channels));
  datum.set_height(static_cast<int>(height));
  datum.set_width(static_cast<int>(width));
  datum.set_label(label);
  for (float v : values) datum.add_float_data(v);
  return datum.SerializeAsString();
}

void decode_datum(std::string_view bytes, Sample& out, const std::string& where) {
  caffe::Datum datum;
  try {
    parse_binary_proto(bytes, datum, where, "Datum record");
  } catch (const ParseError& e) {
    throw DataError(e.what());
  }
  out.label = datum.label();
  if (datum.encoded()) {
    const std::string& file = datum.data();
    const DecodedImage image = decode_image(
        std::span(reinterpret_cast<const std::uint8_t*>(file.data()), file.size()), 0, where + ": encoded image");
    const int width = image.width, height = image.height, stored_channels = image.stored_channels;
    // Colour becomes Caffe's BGR; gray stays one channel.
    const int channels = stored_channels >= 3 ? 3 : 1;
    out.channels = channels;
    out.height = height;
    out.width = width;
    const std::int64_t plane = std::int64_t{height} * width;
    out.values.resize(static_cast<std::size_t>(channels * plane));
    for (std::int64_t i = 0; i < plane; ++i) {
      const std::uint8_t* px = image.pixels.data() + i * stored_channels;
      for (int c = 0; c < channels; ++c)
        out.values[static_cast<std::size_t>(c * plane + i)] = px[channels == 3 ? 2 - c : 0];
    }
    return;
  }
  out.channels = datum.channels();
  out.height = datum.height();
  out.width = datum.width();
  if (out.channels <= 0 || out.height <= 0 || out.width <= 0)
    throw DataError(where + ": the Datum has no valid channels x height x width");
  const std::int64_t count =
      checked_numel(std::vector<std::int64_t>{out.channels, out.height, out.width}, sizeof(float), where);
  // The stored values must match the declared size before anything is allocated for it.
  if (!datum.data().empty()) {
    if (static_cast<std::int64_t>(datum.data().size()) != count) {
      throw DataError(where + ": the Datum says " + std::to_string(out.channels) + "x" +
                      std::to_string(out.height) + "x" + std::to_string(out.width) + " but holds " +
                      std::to_string(datum.data().size()) + " bytes");
    }
    out.values.resize(static_cast<std::size_t>(count));
    const auto* bytes_in = reinterpret_cast<const std::uint8_t*>(datum.data().data());
    for (std::int64_t i = 0; i < count; ++i) out.values[static_cast<std::size_t>(i)] = bytes_in[i];
  } else if (datum.float_data_size() == count) {
    out.values.resize(static_cast<std::size_t>(count));
    for (std::int64_t i = 0; i < count; ++i)
      out.values[static_cast<std::size_t>(i)] = datum.float_data(static_cast<int>(i));
  } else {
    throw DataError(where + ": the Datum holds " + std::to_string(datum.float_data_size()) +
                    " float values, expected " + std::to_string(count));
  }
}

}  // namespace espresso::data
