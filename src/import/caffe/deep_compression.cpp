// Reads the compressed-weights format Han, Mao and Dally released with Deep Compression (the
// `compressed_SqueezeNet.net` of SqueezeNet v1.0), written from the format's facts:
//
//   uint32 nonzeros[L]                       one count per compressed layer, little-endian
//   then per layer, in the deploy net's order:
//     float32 codebook[2^bits]               bits = 8 when the name holds "conv", else 4
//     float32 bias[bias count]               raw
//     uint8   codes[ceil(nonzeros * bits / 8)]   codebook indices; 4-bit ones low nibble first
//     uint8   gaps[ceil(nonzeros / 2)]            4-bit relative indices, low nibble first
//
// The compressed layers are the layers with learned blobs whose names contain "conv", "fc" or "ip".
// Entry k lies gap_k + 1 places after entry k-1 (the first at gap_0); gaps longer than 15 are bridged by
// filler entries whose code is 0. Places no entry names hold codebook[0]. Every count, index and length
// is checked before use; bad input is a ModelError naming the file and the layer.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "espresso/errors.h"
#include "espresso/import.h"
#include "layers/registry.h"

namespace espresso {
namespace {

bool is_compressed_layer(const LayerSpec& layer, std::size_t blobs) {
  if (blobs == 0) return false;
  const std::string& n = layer.name;
  return n.find("conv") != std::string::npos || n.find("fc") != std::string::npos ||
         n.find("ip") != std::string::npos;
}

// The learned blobs' shapes of every layer, from the inputs' shapes through each layer's shape function.
std::vector<std::vector<Shape>> weight_shapes_of(const Graph& graph, const std::string& name) {
  std::map<std::string, Shape> shapes;
  for (const InputSpec& input : graph.inputs) shapes[input.name] = input.shape;
  std::vector<std::vector<Shape>> result;
  for (const LayerSpec& spec : graph.layers) {
    std::vector<Shape> in;
    for (const std::string& input : spec.inputs) {
      auto it = shapes.find(input);
      if (it == shapes.end()) {
        throw ModelError(name + ": layer '" + spec.name + "': the shape of input '" + input + "' is unknown");
      }
      in.push_back(it->second);
    }
    const std::unique_ptr<Layer> layer = create_layer(spec);
    std::vector<Shape> out;
    try {
      out = layer->output_shapes(in);
    } catch (const Error& e) {
      throw ModelError(name + ": " + e.what());
    }
    for (std::size_t i = 0; i < out.size() && i < spec.outputs.size(); ++i) shapes[spec.outputs[i]] = out[i];
    result.push_back(layer->weight_shapes(in));
  }
  return result;
}

class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  // The next `count` bytes, or a ModelError naming `what` where the file ends first.
  const std::byte* take(std::uint64_t count, const std::string& what) {
    if (count > bytes_.size() - offset_) {
      throw ModelError(name_ + ": " + what + " needs " + std::to_string(count) + " bytes at offset " +
                       std::to_string(offset_) + " but the file ends after " +
                       std::to_string(bytes_.size() - offset_));
    }
    const std::byte* at = bytes_.data() + offset_;
    offset_ += count;
    return at;
  }
  std::uint64_t left() const { return bytes_.size() - offset_; }
  std::uint64_t offset() const { return offset_; }

 private:
  std::span<const std::byte> bytes_;
  std::uint64_t offset_ = 0;
  const std::string& name_;
};

std::vector<float> floats(const std::byte* at, std::uint64_t count) {
  std::vector<float> values(static_cast<std::size_t>(count));
  if (count > 0) std::memcpy(values.data(), at, static_cast<std::size_t>(count) * sizeof(float));
  return values;
}

unsigned nibble(const std::byte* stream, std::uint64_t k) {
  const unsigned byte = std::to_integer<unsigned>(stream[k / 2]);
  return (k % 2 == 0) ? (byte & 15u) : (byte >> 4);
}

// Expands one layer's entries into `dense` (already sized and filled with codebook[0]).
void scatter(std::vector<float>& dense, const std::vector<float>& codebook, int bits, const std::byte* codes,
             const std::byte* gaps, std::uint64_t nonzeros, const std::string& where) {
  std::uint64_t next = 0;  // the place the next entry would take with gap 0
  const std::uint64_t size = dense.size();
  for (std::uint64_t k = 0; k < nonzeros; ++k) {
    const std::uint64_t place = next + nibble(gaps, k);
    if (place >= size) {
      throw ModelError(where + ": entry " + std::to_string(k) + " of " + std::to_string(nonzeros) +
                       " falls at index " + std::to_string(place) + ", past the end of its " +
                       std::to_string(size) + " weights");
    }
    const unsigned code = bits == 8 ? std::to_integer<unsigned>(codes[k]) : nibble(codes, k);
    // The codebook holds 2^bits entries, so every code of `bits` bits indexes it.
    dense[place] = codebook[code];
    next = place + 1;
  }
}

}  // namespace

void apply_deep_compression(Graph& graph, std::span<const std::byte> bytes, const std::string& name) {
  static_assert(sizeof(float) == 4);
  const std::vector<std::vector<Shape>> shapes = weight_shapes_of(graph, name);
  std::vector<std::size_t> compressed;
  for (std::size_t i = 0; i < graph.layers.size(); ++i) {
    if (is_compressed_layer(graph.layers[i], shapes[i].size())) compressed.push_back(i);
  }
  if (compressed.empty()) {
    throw ModelError(name + ": the model has no layer with learned weights named *conv*, *fc* or *ip*, "
                            "so the compressed weights apply to nothing");
  }
  Reader reader(bytes, name);
  const std::byte* counts = reader.take(4 * compressed.size(), "the table of " + std::to_string(compressed.size()) +
                                                                   " nonzero counts");
  for (std::size_t c = 0; c < compressed.size(); ++c) {
    LayerSpec& layer = graph.layers[compressed[c]];
    const std::vector<Shape>& blobs = shapes[compressed[c]];
    const std::string where = name + ": layer '" + layer.name + "'";
    if (blobs.size() != 2) {
      throw ModelError(where + " (" + layer.type + ") has " + std::to_string(blobs.size()) +
                       " learned blobs; the compressed format stores a weight and a bias");
    }
    std::uint32_t nonzeros;
    std::memcpy(&nonzeros, counts + 4 * c, 4);
    const std::uint64_t weights = static_cast<std::uint64_t>(blobs[0].numel());
    const std::uint64_t biases = static_cast<std::uint64_t>(blobs[1].numel());
    // Each entry takes at least one place of its own.
    if (nonzeros > weights) {
      throw ModelError(where + ": " + std::to_string(nonzeros) + " stored entries for " + std::to_string(weights) +
                       " weights");
    }
    const int bits = layer.name.find("conv") != std::string::npos ? 8 : 4;
    std::vector<float> codebook = floats(reader.take(4ull << bits, where + ": the codebook"), 1ull << bits);
    for (std::size_t k = 0; k < codebook.size(); ++k) {
      if (!std::isfinite(codebook[k])) {
        throw ModelError(where + ": codebook entry " + std::to_string(k) + " is not a finite number");
      }
    }
    std::vector<float> bias = floats(reader.take(4 * biases, where + ": the bias"), biases);
    const std::byte* codes = reader.take(bits == 8 ? nonzeros : (nonzeros + 1) / 2, where + ": the codes");
    const std::byte* gaps = reader.take((nonzeros + 1) / 2, where + ": the relative indices");
    std::vector<float> dense(static_cast<std::size_t>(weights), codebook[0]);
    scatter(dense, codebook, bits, codes, gaps, nonzeros, where);
    layer.weights.clear();
    layer.weights.push_back(Tensor::from(blobs[0], dense));
    layer.weights.push_back(Tensor::from(blobs[1], bias));
  }
  if (reader.left() != 0) {
    throw ModelError(name + ": " + std::to_string(reader.left()) + " bytes follow the last layer's data (offset " +
                     std::to_string(reader.offset()) + "); the file does not fit this model");
  }
}

Graph load_caffe_compressed(const std::string& prototxt_path, const std::string& net_path, Phase phase) {
  Graph graph = load_caffe(prototxt_path, "", phase);
  std::ifstream in(net_path, std::ios::binary);
  if (!in) throw FileError(net_path + ": cannot open");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw FileError(net_path + ": read failed");
  apply_deep_compression(graph, std::as_bytes(std::span(text.data(), text.size())), net_path);
  return graph;
}

Graph load_caffe_compressed(std::string_view prototxt, std::span<const std::byte> net, const std::string& name,
                            Phase phase) {
  Graph graph = load_caffe(prototxt, {}, name, phase);
  apply_deep_compression(graph, net, name + " (compressed weights)");
  return graph;
}

}  // namespace espresso
