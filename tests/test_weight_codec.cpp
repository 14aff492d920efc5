// Compressed .esp tensors: the codec on streams built by hand from docs/format.md, round trips on pruned
// and weight-shared tensors, every kind of bad stream, packages that use it, and the compressed SqueezeNet.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <xxhash.h>
#include <zlib.h>

#include "esp/weight_codec.h"
#include "espresso/espresso.h"
#include "espresso/package.h"
#include "test_support.h"

namespace espresso {
namespace {

using codec::Encoding;
using testing::TempDir;

// LSB-first bit stream, written here independently of the codec.
struct Bits {
  std::vector<std::byte> bytes;
  unsigned used = 0;  // bits in the last byte
  void put(unsigned value, unsigned bits) {
    for (unsigned i = 0; i < bits; ++i) {
      if (used % 8 == 0) bytes.push_back(std::byte{0});
      bytes.back() |= static_cast<std::byte>(((value >> i) & 1u) << (used % 8));
      used = (used + 1) % 8;
    }
  }
  // A canonical Huffman code is sent most significant bit first.
  void put_code(const std::string& code) {
    for (char c : code) put(c == '1' ? 1 : 0, 1);
  }
};

std::vector<std::byte> with_codebook(const std::vector<float>& codebook, const std::vector<std::byte>& rest) {
  std::vector<std::byte> out(codebook.size() * 4);
  std::memcpy(out.data(), codebook.data(), out.size());
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<float> decoded(const Encoding& e, const std::vector<std::byte>& stored, std::size_t places) {
  std::vector<float> out(places, -99.0f);
  codec::decode(e, stored, out, "tensor 't'");
  return out;
}

std::string parse_error_of(const Encoding& e, const std::vector<std::byte>& stored, std::size_t places) {
  try {
    decoded(e, stored, places);
  } catch (const ParseError& error) {
    return error.what();
  }
  ADD_FAILURE() << "no ParseError";
  return "";
}

// Three codebook values, 2-bit gaps, 2-bit codes: entries (gap, code) (1, 2), (3, 0) a filler, (0, 1).
std::vector<std::byte> hand_packed() {
  Bits b;
  b.put(1, 2), b.put(2, 2);
  b.put(3, 2), b.put(0, 2);
  b.put(0, 2), b.put(1, 2);
  return with_codebook({0.0f, 1.5f, -2.0f}, b.bytes);
}

TEST(WeightCodec, PackedSparseStreamBuiltByHandDecodes) {
  const std::vector<float> out = decoded({3, 2, 3, false}, hand_packed(), 8);
  // Places: 1 (gap 1), then 2+3 = 5 (filler, codebook[0]), then 6.
  EXPECT_EQ(out, (std::vector<float>{0.0f, -2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.5f, 0.0f}));
}

// Codebook-index code lengths {1, 2, 2} are the canonical codes 0, 10, 11; relative-index lengths
// {1, 1} (gap_bits 1) are 0 and 1.
std::vector<std::byte> hand_huffman(const std::vector<std::pair<int, int>>& entries) {
  std::vector<std::byte> tables = {std::byte{0x21}, std::byte{0x02}, std::byte{0x11}};
  Bits b;
  const char* code[] = {"0", "10", "11"};
  const char* gap[] = {"0", "1"};
  for (auto [g, c] : entries) {
    b.put_code(gap[g]);
    b.put_code(code[c]);
  }
  tables.insert(tables.end(), b.bytes.begin(), b.bytes.end());
  return with_codebook({0.25f, 3.0f, -1.0f}, tables);
}

TEST(WeightCodec, HuffmanStreamBuiltByHandDecodes) {
  const std::vector<std::pair<int, int>> entries = {{0, 2}, {1, 1}, {1, 0}, {0, 2}};
  const std::vector<float> out = decoded({3, 1, 4, true}, hand_huffman(entries), 7);
  // Places 0, 2, 4 (a filler) and 5; the rest hold codebook[0].
  EXPECT_EQ(out, (std::vector<float>{-1.0f, 0.25f, 3.0f, 0.25f, 0.25f, -1.0f, 0.25f}));
}

std::vector<float> pruned_shared(std::size_t n, double density, int clusters, std::uint32_t seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> centroids;
  for (int i = 0; i < clusters; ++i) centroids.push_back(normal(engine));
  std::bernoulli_distribution keep(density);
  std::uniform_int_distribution<int> pick(0, clusters - 1);
  std::vector<float> values(n);
  for (float& v : values) v = keep(engine) ? centroids[static_cast<std::size_t>(pick(engine))] : 0.0f;
  return values;
}

void expect_round_trip(const std::vector<float>& values) {
  const std::optional<codec::Encoded> e = codec::encode(values);
  ASSERT_TRUE(e.has_value());
  EXPECT_LT(e->bytes.size(), values.size() * 4);
  std::vector<float> out(values.size());
  codec::decode(e->encoding, e->bytes, out, "t");
  EXPECT_EQ(std::memcmp(out.data(), values.data(), values.size() * 4), 0);
}

TEST(WeightCodec, PrunedAndSharedTensorsRoundTripBitForBit) {
  expect_round_trip(pruned_shared(50000, 0.08, 16, 1));   // sparse, long gaps: fillers
  expect_round_trip(pruned_shared(20000, 0.35, 255, 2));  // 8-bit codes (255 values and zero)
  expect_round_trip(pruned_shared(4096, 1.0, 32, 3));     // dense codes
  expect_round_trip(pruned_shared(100000, 0.001, 4, 4));  // very sparse
  expect_round_trip(std::vector<float>(1000, 0.0f));
  expect_round_trip(std::vector<float>(1000, -0.0f));
  std::vector<float> signed_zeros(512, 0.0f);
  for (std::size_t i = 0; i < signed_zeros.size(); i += 3) signed_zeros[i] = -0.0f;
  expect_round_trip(signed_zeros);
}

TEST(WeightCodec, TensorsOfManyValuesOrNonFiniteOnesStayRaw) {
  std::vector<float> many(1000);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<float>(i);
  EXPECT_FALSE(codec::encode(many).has_value());
  std::vector<float> nan(1000, 0.0f);
  nan[3] = std::nanf("");
  EXPECT_FALSE(codec::encode(nan).has_value());
}

TEST(WeightCodec, CodeLengthsThatAreNotPrefixFreeAreRejected) {
  std::vector<std::byte> stored = hand_huffman({{0, 0}});
  stored[12] = std::byte{0x11};  // codebook-index lengths {1, 1, 2}: Kraft sum 5/4
  const std::string message = parse_error_of({3, 1, 1, true}, stored, 4);
  EXPECT_NE(message.find("tensor 't'"), std::string::npos) << message;
  EXPECT_NE(message.find("not prefix-free"), std::string::npos) << message;
  stored[12] = std::byte{0xd1};  // a 13-bit code
  EXPECT_NE(parse_error_of({3, 1, 1, true}, stored, 4).find("13 bits"), std::string::npos);
}

TEST(WeightCodec, OutOfRangeIndicesAndEntriesPastTheEndAreRejected) {
  Bits b;
  b.put(0, 2), b.put(3, 2);  // codebook index 3 of 3
  const std::string message = parse_error_of({3, 2, 1, false}, with_codebook({0.0f, 1.0f, 2.0f}, b.bytes), 8);
  EXPECT_NE(message.find("codebook index 3 is out of range"), std::string::npos) << message;

  // The hand-built stream's last entry lands on place 6: with 6 places it lies past the end.
  EXPECT_NE(parse_error_of({3, 2, 3, false}, hand_packed(), 6).find("past the end"), std::string::npos);
  EXPECT_NE(parse_error_of({3, 1, 4, true}, hand_huffman({{0, 2}, {1, 1}, {1, 0}, {0, 2}}), 5).find("past the end"),
            std::string::npos);
}

TEST(WeightCodec, CutStreamsTrailingBytesAndBadHeadersAreRejected) {
  for (const std::vector<float>& values : {pruned_shared(3000, 0.2, 16, 5), pruned_shared(600, 1.0, 2, 6)}) {
    const std::optional<codec::Encoded> e = codec::encode(values);
    ASSERT_TRUE(e.has_value());
    for (std::size_t size = 0; size < e->bytes.size(); ++size) {
      std::vector<std::byte> cut(e->bytes.begin(), e->bytes.begin() + static_cast<std::ptrdiff_t>(size));
      parse_error_of(e->encoding, cut, values.size());
    }
    std::vector<std::byte> longer = e->bytes;
    longer.push_back(std::byte{0});
    parse_error_of(e->encoding, longer, values.size());
  }
  // A cut Huffman stream (the hand-built one loses its last byte).
  std::vector<std::byte> stored = hand_huffman({{0, 2}, {1, 1}, {1, 0}, {0, 2}, {0, 2}, {0, 2}, {0, 2}});
  stored.pop_back();
  EXPECT_NE(parse_error_of({3, 1, 7, true}, stored, 20).find("cut short"), std::string::npos);
  // Headers.
  EXPECT_NE(parse_error_of({0, 2, 3, false}, hand_packed(), 8).find("codebook size 0"), std::string::npos);
  EXPECT_NE(parse_error_of({257, 2, 3, false}, hand_packed(), 8).find("codebook size 257"), std::string::npos);
  EXPECT_NE(parse_error_of({3, 9, 3, false}, hand_packed(), 8).find("9 bits"), std::string::npos);
  EXPECT_NE(parse_error_of({3, 2, 9, false}, hand_packed(), 8).find("9 entries for 8 places"), std::string::npos);
  EXPECT_NE(parse_error_of({3, 0, 3, false}, hand_packed(), 8).find("3 entries for 8 places"), std::string::npos);
  std::vector<std::byte> nan_codebook = hand_packed();
  const float nan = std::nanf("");
  std::memcpy(nan_codebook.data() + 4, &nan, 4);
  EXPECT_NE(parse_error_of({3, 2, 3, false}, nan_codebook, 8).find("codebook entry 1"), std::string::npos);
}

TEST(WeightCodec, FlippedStreamsDecodeOrThrowParseErrors) {
  std::mt19937 engine(11);
  for (std::uint32_t seed = 0; seed < 6; ++seed) {
    const std::vector<float> values = pruned_shared(5000, seed % 2 ? 0.05 : 0.4, seed % 3 ? 16 : 255, seed);
    const std::optional<codec::Encoded> e = codec::encode(values);
    ASSERT_TRUE(e.has_value());
    for (int i = 0; i < 200; ++i) {
      std::vector<std::byte> flipped = e->bytes;
      const std::size_t at = std::uniform_int_distribution<std::size_t>(0, flipped.size() - 1)(engine);
      flipped[at] ^= static_cast<std::byte>(1u << (i % 8));
      std::vector<float> out(values.size());
      try {
        codec::decode(e->encoding, flipped, out, "t");
      } catch (const ParseError&) {
      }
    }
  }
}

// ---- packages ----

Graph small_pruned_net() {
  Graph g;
  g.name = "pruned";
  g.inputs.push_back({"x", Shape{2, 64}});
  LayerSpec ip = testing::layer("ip", "InnerProduct", {"x"}, {"y"});
  ip.attrs.set("num_output", std::int64_t{300});
  ip.weights.push_back(Tensor::from(Shape{300, 64}, pruned_shared(300 * 64, 0.1, 16, 9)));
  std::vector<float> bias(300);
  for (std::size_t i = 0; i < bias.size(); ++i) bias[i] = 0.001f * static_cast<float>(i);
  ip.weights.push_back(Tensor::from(Shape{300}, bias));
  g.layers.push_back(ip);
  g.outputs = {"y"};
  return g;
}

std::uint32_t version_of(const std::string& file) {
  const std::string bytes = testing::read_bytes(file);
  std::uint32_t version;
  std::memcpy(&version, bytes.data() + 8, 4);
  return version;
}

TEST(CompressedPackage, StoresPrunedWeightsSmallerAndLoadsThemBitForBit) {
  TempDir dir;
  const Graph graph = small_pruned_net();
  const std::string dense = dir.file("dense.esp"), packed = dir.file("packed.esp");
  save_package(graph, dense);
  save_package(graph, packed, {.compress = true});
  EXPECT_EQ(version_of(dense), 1u);  // unchanged for readers of version 1
  EXPECT_EQ(version_of(packed), 3u);  // compressed tensors (2) and a deflated manifest (3)
  EXPECT_LT(std::filesystem::file_size(packed) * 4, std::filesystem::file_size(dense));
  const Graph loaded = load_package(packed);
  const Tensor& w = loaded.find_layer("ip")->weights[0];
  const Tensor& original = graph.find_layer("ip")->weights[0];
  ASSERT_EQ(w.shape(), original.shape());
  EXPECT_EQ(std::memcmp(w.raw(), original.raw(), w.bytes()), 0);
  EXPECT_EQ(std::memcmp(loaded.find_layer("ip")->weights[1].raw(), graph.find_layer("ip")->weights[1].raw(), 1200), 0);
}

TEST(CompressedPackage, RunsIdenticallyToItsDenseFormAndCloseToTheReferenceKernels) {
  TempDir dir;
  const Graph graph = small_pruned_net();
  const std::string dense = dir.file("dense.esp"), packed = dir.file("packed.esp");
  save_package(graph, dense);
  save_package(graph, packed, {.compress = true});
  Tensor x = Tensor::empty(Shape{2, 64});
  std::mt19937 engine(2);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (std::int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = value(engine);
  Net from_dense(load_package(dense)), from_packed(load_package(packed));
  Net reference(load_package(packed), {.reference_kernels = true});
  const std::vector<float> a = from_dense.forward({{"x", x}}).at("y").to_vector();
  const std::vector<float> b = from_packed.forward({{"x", x}}).at("y").to_vector();
  const std::vector<float> r = reference.forward({{"x", x}}).at("y").to_vector();
  // Both run the sparse codebook kernel (the planner looks at the weights, not at how the file held them).
  EXPECT_EQ(from_packed.summary()[0].kernel, "sparse-codebook");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  for (std::size_t i = 0; i < r.size(); ++i) EXPECT_NEAR(b[i], r[i], 1e-5f * (1.0f + std::abs(r[i]))) << i;
}

TEST(CompressedPackage, CutAndFlippedFilesGiveTypedErrors) {
  TempDir dir;
  const std::string packed = dir.file("packed.esp");
  save_package(small_pruned_net(), packed, {.compress = true});
  const std::string bytes = testing::read_bytes(packed);
  const auto load = [](const std::string& b, bool verify) {
    load_package(std::as_bytes(std::span(b.data(), b.size())), "p.esp", {.verify = verify});
  };
  for (std::size_t size = 0; size < bytes.size(); size += 97) EXPECT_THROW(load(bytes.substr(0, size), true), Error);
  // Flips in the data section, with checksums off, reach the decoder.
  std::uint64_t data_offset;
  std::memcpy(&data_offset, bytes.data() + 32, 8);
  std::mt19937 engine(5);
  int errors = 0;
  for (int i = 0; i < 300; ++i) {
    std::string flipped = bytes;
    const std::size_t at = std::uniform_int_distribution<std::size_t>(data_offset, bytes.size() - 1)(engine);
    flipped[at] = static_cast<char>(flipped[at] ^ (1 << (i % 8)));
    try {
      load(flipped, false);
    } catch (const ParseError& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 'ip/"), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}

// The manifest's JSON text, inflated where the header's flag says it is deflated.
std::string manifest_text(const std::string& package) {
  std::uint32_t flags;
  std::uint64_t manifest_bytes;
  std::memcpy(&flags, package.data() + 12, 4);
  std::memcpy(&manifest_bytes, package.data() + 24, 8);
  const std::string stored = package.substr(64, manifest_bytes);
  if ((flags & 1) == 0) return stored;
  std::string text(1 << 20, '\0');
  uLongf length = text.size();
  EXPECT_EQ(uncompress(reinterpret_cast<Bytef*>(text.data()), &length, reinterpret_cast<const Bytef*>(stored.data()),
                       stored.size()),
            Z_OK);
  text.resize(length);
  return text;
}

std::string deflated(const std::string& text) {
  uLongf length = compressBound(text.size());
  std::string out(length, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &length, reinterpret_cast<const Bytef*>(text.data()),
                      text.size(), 1),
            Z_OK);
  out.resize(length);
  return out;
}

// A zlib stream of `count` spaces, made in pieces with run-length matching (fast, and no buffer of
// `count` bytes).
std::string deflated_spaces(std::size_t count) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 1, Z_DEFLATED, 15, 8, Z_RLE), Z_OK);
  const std::string piece(1 << 20, ' ');
  std::string out;
  char buffer[1 << 16];
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    const std::size_t take = std::min(count, piece.size());
    count -= take;
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(piece.data()));
    stream.avail_in = static_cast<uInt>(take);
    do {
      stream.next_out = reinterpret_cast<Bytef*>(buffer);
      stream.avail_out = sizeof buffer;
      status = deflate(&stream, count == 0 ? Z_FINISH : Z_NO_FLUSH);
      out.append(buffer, sizeof buffer - stream.avail_out);
    } while (stream.avail_out == 0 || (count == 0 && status != Z_STREAM_END));
  }
  deflateEnd(&stream);
  return out;
}

// The package's data section behind a new header and `stored` as its manifest, the header's lengths and
// checksums made to fit, so that the reader's later checks are reached.
std::string with_manifest(const std::string& package, const std::string& stored, std::uint32_t version,
                          std::uint32_t flags) {
  std::uint64_t data_offset;
  std::memcpy(&data_offset, package.data() + 32, 8);
  const std::string data = package.substr(data_offset);
  const std::uint64_t offset = (64 + stored.size() + 63) / 64 * 64;
  std::string head(64, '\0');
  std::memcpy(head.data(), package.data(), 8);
  const std::uint64_t fields[] = {64, stored.size(), offset, data.size(), XXH3_64bits(stored.data(), stored.size())};
  std::memcpy(head.data() + 8, &version, 4);
  std::memcpy(head.data() + 12, &flags, 4);
  std::memcpy(head.data() + 16, fields, sizeof fields);
  const std::uint64_t head_sum = XXH3_64bits(head.data(), 56);
  std::memcpy(head.data() + 56, &head_sum, 8);
  return head + stored + std::string(offset - 64 - stored.size(), '\0') + data;
}

// The package with its manifest edited, stored as plain JSON under format `version`.
std::string forged(const std::string& package, const std::function<void(nlohmann::json&)>& edit,
                   std::uint32_t version = 2) {
  nlohmann::json manifest = nlohmann::json::parse(manifest_text(package));
  edit(manifest);
  return with_manifest(package, manifest.dump(), version, 0);
}

TEST(CompressedPackage, ForgedEncodingsAreParseErrorsNamingTheTensor) {
  TempDir dir;
  const std::string path = dir.file("packed.esp");
  save_package(small_pruned_net(), path, {.compress = true});
  const std::string bytes = testing::read_bytes(path);
  const auto error_of = [](const std::string& b) -> std::string {
    try {
      load_package(std::as_bytes(std::span(b.data(), b.size())), "p.esp");
    } catch (const ParseError& e) {
      return e.what();
    }
    return "loaded";
  };
  ASSERT_EQ(error_of(forged(bytes, [](nlohmann::json&) {})), "loaded");  // the forging itself is sound
  const auto encoding = [](nlohmann::json& m) -> nlohmann::json& { return m["tensors"][0]["encoding"]; };
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[&](nlohmann::json& m) { encoding(m)["kind"] = "zip"; }, "kind"},
      {[&](nlohmann::json& m) { encoding(m)["coding"] = "zip"; }, "coding"},
      {[&](nlohmann::json& m) { encoding(m)["codebook_size"] = 0; }, "codebook size 0"},
      {[&](nlohmann::json& m) { encoding(m)["codebook_size"] = 300; }, "codebook size 300"},
      {[&](nlohmann::json& m) { encoding(m)["gap_bits"] = 9; }, "gap_bits 9"},
      {[&](nlohmann::json& m) { encoding(m)["entries"] = encoding(m)["entries"].get<int>() + 1; }, "tensor 'ip/0'"},
      {[&](nlohmann::json& m) { encoding(m)["entries"] = 300 * 64 + 1; }, "entries for 19200 places"},
      {[&](nlohmann::json& m) { m["tensors"][0]["shape"] = {1 << 20, 1 << 20}; }, "too large to decode"},
      {[&](nlohmann::json& m) { m["tensors"][0]["dtype"] = "f16"; }, "decode to f32"},
      {[&](nlohmann::json& m) { m["tensors"][0]["bytes"] = m["tensors"][0]["bytes"].get<int>() - 1; }, "tensor 'ip/0'"},
  };
  for (const auto& [edit, expected] : cases) {
    const std::string message = error_of(forged(bytes, edit));
    EXPECT_NE(message.find(expected), std::string::npos) << expected << ": " << message;
  }
  // An encoding in a version-1 file.
  const std::string old = error_of(forged(bytes, [](nlohmann::json&) {}, 1));
  EXPECT_NE(old.find("format version 2"), std::string::npos) << old;
}

TEST(CompressedPackage, DeflatedManifestsAreCheckedBeforeUse) {
  TempDir dir;
  const std::string path = dir.file("packed.esp");
  save_package(small_pruned_net(), path, {.compress = true});
  const std::string bytes = testing::read_bytes(path);
  std::uint32_t flags;
  std::memcpy(&flags, bytes.data() + 12, 4);
  ASSERT_EQ(flags, 1u);
  const std::string json_text = manifest_text(bytes);
  ASSERT_EQ(nlohmann::json::parse(json_text)["format_version"], 3);
  const auto error_of = [](const std::string& b) -> std::string {
    try {
      load_package(std::as_bytes(std::span(b.data(), b.size())), "p.esp");
    } catch (const Error& e) {
      return e.what();
    }
    return "loaded";
  };
  const std::string stream = deflated(json_text);
  ASSERT_EQ(error_of(with_manifest(bytes, stream, 3, 1)), "loaded");  // the forging itself is sound
  ASSERT_EQ(error_of(with_manifest(bytes, json_text, 2, 0)), "loaded");  // and the plain form reads as version 2
  const std::vector<std::pair<std::string, std::string>> cases = {
      {with_manifest(bytes, stream, 2, 1), "needs format version 3"},
      {with_manifest(bytes, stream, 3, 3), "header flags 0x00000003"},
      {with_manifest(bytes, stream, 5, 1), "format version 5"},  // newer than this reader
      {with_manifest(bytes, stream.substr(0, stream.size() - 3), 3, 1), "not a complete zlib stream"},
      {with_manifest(bytes, stream.substr(0, 2), 3, 1), "not a complete zlib stream"},
      {with_manifest(bytes, stream + "xy", 3, 1), "bytes after the end"},
      {with_manifest(bytes, json_text, 3, 1), "not a complete zlib stream"},
      {with_manifest(bytes, deflated_spaces((std::size_t{256} << 20) + 1), 3, 1), "inflates to more than"},
  };
  for (const auto& [file, expected] : cases) {
    const std::string message = error_of(file);
    EXPECT_NE(message.find(expected), std::string::npos) << expected << ": " << message;
    EXPECT_NE(message.find("p.esp"), std::string::npos) << message;
  }
  // Every flip of the deflated manifest (checksum made to fit) is an error or reads a valid manifest.
  for (std::size_t at = 0; at < stream.size(); at += 7) {
    std::string flipped = stream;
    flipped[at] = static_cast<char>(flipped[at] ^ 0x10);
    const std::string message = error_of(with_manifest(bytes, flipped, 3, 1));
    EXPECT_TRUE(message == "loaded" || message.find("p.esp") != std::string::npos) << message;
  }
}

class CompressedSqueezeNetPackage : public testing::SharedDataTest {};

TEST_F(CompressedSqueezeNetPackage, IsSmallerThanThePublishedFileAndRunsIdentically) {
  const auto dir = testing::shared_data_dir() / "caffe" / "squeezenet_v1.0_deep_compression";
  const std::string net = (dir / "compressed_SqueezeNet.net").string();
  const Graph graph = load_model((dir / "SqueezeNet_deploy.prototxt").string(), net);
  TempDir temp;
  const std::string packed = temp.file("squeezenet.esp");
  save_package(graph, packed, {.compress = true});
  EXPECT_LT(std::filesystem::file_size(packed), std::filesystem::file_size(net));
  EXPECT_EQ(std::filesystem::file_size(net), 675763u);
  const Graph loaded = load_model(packed);
  for (const LayerSpec& layer : graph.layers) {
    const LayerSpec* other = loaded.find_layer(layer.name);
    ASSERT_NE(other, nullptr);
    ASSERT_EQ(other->weights.size(), layer.weights.size());
    for (std::size_t i = 0; i < layer.weights.size(); ++i) {
      EXPECT_EQ(std::memcmp(other->weights[i].raw(), layer.weights[i].raw(), layer.weights[i].bytes()), 0)
          << layer.name;
    }
  }
  Tensor input = Tensor::empty(Shape{1, 3, 227, 227});
  std::mt19937 engine(3);
  std::uniform_real_distribution<float> pixel(-120.0f, 130.0f);
  for (std::int64_t i = 0; i < input.numel(); ++i) input.data<float>()[i] = pixel(engine);
  Net a(graph), b(loaded);
  const Tensor x = a.forward({{"data", input}}).begin()->second;
  const Tensor y = b.forward({{"data", input}}).begin()->second;
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.bytes()), 0);
}

}  // namespace
}  // namespace espresso
