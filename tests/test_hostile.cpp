// Hostile models and inputs (issue #20) against the parsers and loaders: each must fail with a clear
// typed error before anything large is allocated, within 1 s and 100 MB (hostile_support.h). Needs only
// the loader libraries, so the sanitizer CI job runs it too (scripts/sanitize_ci.sh).
#include <zlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstring>

#include "data/datum.h"
#include "data/datum.pb.h"
#include "data/npy.h"
#include "espresso/data.h"
#include "espresso/import.h"
#include "espresso/limits.h"
#include "espresso/onnx.h"
#include "espresso/package.h"
#include "hostile_support.h"

namespace espresso::hostile {
namespace {

TEST(HostileModels, TwoToTheFortyElementShapesAreRefusedBeforeAllocating) {
  Scratch dir;
  const std::string input = save(dir, "input.onnx", relu_model({1 << 20, 1 << 20}));
  expect_refused<LimitError>("ONNX graph input 2^40 elements", [&] { load_model(input); }, "graph input 'x'");

  onnx::ModelProto with_weight = relu_model({1, 4});
  auto* w = with_weight.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(1 << 20);
  w->add_dims(1 << 20);
  const std::string initializer = save(dir, "initializer.onnx", with_weight);
  expect_refused<LimitError>("ONNX initializer 2^40 elements", [&] { load_model(initializer); }, "initializer 'w'");

  // Dimensions whose product overflows 64 bits must not wrap to a small count.
  const std::string overflow = save(dir, "overflow.onnx", relu_model({1LL << 40, 1LL << 40, 1 << 20}));
  expect_refused<LimitError>("ONNX input overflowing int64", [&] { load_model(overflow); }, "overflows");

  const std::string prototxt = dir.write("huge.prototxt", R"(name: "huge"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1048576 dim: 1048576 } } }
layer { name: "relu" type: "ReLU" bottom: "data" top: "relu" }
)");
  expect_refused<LimitError>("Caffe Input 2^40 elements", [&] { load_model(prototxt); }, "Input layer 'data'");

}

// ModelProto { graph { node { op_type "If" attribute { name "g" type GRAPH g { node { ... } } } } } },
// `levels` deep, written directly in the wire format (building it through protobuf would recurse as deep).
std::string deeply_nested_onnx(int levels) {
  auto varint_size = [](std::uint64_t n) {
    std::size_t size = 1;
    while (n >= 0x80) n >>= 7, ++size;
    return size;
  };
  auto put_varint = [](std::string& out, std::uint64_t n) {
    while (n >= 0x80) out.push_back(static_cast<char>((n & 0x7f) | 0x80)), n >>= 7;
    out.push_back(static_cast<char>(n));
  };
  const std::string attr_head = std::string("\x0a\x01g", 3) + std::string("\xa0\x01\x05", 3);  // name, type GRAPH
  const std::string node_head = std::string("\x22\x02If", 4);                                   // op_type
  std::vector<std::size_t> graph_size(static_cast<std::size_t>(levels) + 1, 0), node_size(graph_size), attr_size(graph_size);
  for (std::size_t i = 1; i <= static_cast<std::size_t>(levels); ++i) {
    attr_size[i] = attr_head.size() + 1 + varint_size(graph_size[i - 1]) + graph_size[i - 1];
    node_size[i] = node_head.size() + 1 + varint_size(attr_size[i]) + attr_size[i];
    graph_size[i] = 1 + varint_size(node_size[i]) + node_size[i];
  }
  std::string out("\x08\x08\x42\x02\x10\x0d", 6);  // ir_version 8, opset_import { version 13 }
  out.push_back('\x3a');                            // graph
  put_varint(out, graph_size[static_cast<std::size_t>(levels)]);
  for (std::size_t i = static_cast<std::size_t>(levels); i >= 1; --i) {
    out.push_back('\x0a');  // GraphProto.node
    put_varint(out, node_size[i]);
    out += node_head;
    out.push_back('\x2a');  // NodeProto.attribute
    put_varint(out, attr_size[i]);
    out += attr_head;
    out.push_back('\x32');  // AttributeProto.g
    put_varint(out, graph_size[i - 1]);
  }
  return out;
}

TEST(HostileModels, HundredThousandDeepSubgraphsAreRefused) {
  const std::string bytes = deeply_nested_onnx(100000);
  Scratch dir;
  const std::string path = dir.write("deep.onnx", bytes);
  expect_refused<LimitError>("ONNX subgraphs nested 100k deep", [&] { load_model(path); }, "nested deeper than");
  // Within the limit the nesting parses, and the importer names the node whose subgraphs are malformed
  // (these If nodes carry a graph attribute named `g`, not then_branch and else_branch).
  const std::string shallow = dir.write("shallow.onnx", deeply_nested_onnx(10));
  try {
    load_model(shallow);
    ADD_FAILURE() << "loaded";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("node 'If_0' (If)"), std::string::npos) << e.what();
  }
}

// An .esp package (docs/format.md) holding `manifest` as its JSON and no tensor data, with the
// header's checksums right, in format `version`.
std::string esp_with_manifest(const std::string& manifest, std::uint32_t version) {
  const std::uint64_t data_offset = (64 + manifest.size() + 63) / 64 * 64;
  std::string file(data_offset, '\0');
  const unsigned char magic[8] = {0x89, 'E', 'S', 'P', '\r', '\n', 0x1a, '\n'};
  std::memcpy(file.data(), magic, 8);
  auto put = [&](std::size_t at, auto value) { std::memcpy(file.data() + at, &value, sizeof value); };
  put(8, version);
  put(12, std::uint32_t{0});
  put(16, std::uint64_t{64});
  put(24, static_cast<std::uint64_t>(manifest.size()));
  put(32, data_offset);
  put(40, std::uint64_t{0});
  put(48, static_cast<std::uint64_t>(XXH3_64bits(manifest.data(), manifest.size())));
  std::memcpy(file.data() + 64, manifest.data(), manifest.size());
  put(56, static_cast<std::uint64_t>(XXH3_64bits(file.data(), 56)));
  return file;
}

// The manifest of Ifs nested `depth` deep, each then branch holding the next; the innermost gives its
// input back.
std::string nested_if_manifest(int depth) {
  const std::string branch_inputs = R"("inputs":[{"name":"c","shape":[]}])";
  std::string open, close;
  for (int d = 0; d < depth; ++d) {
    open += R"({"name":"if","type":"If","inputs":["c","c"],"outputs":["y"],"attrs":{},"weights":[],"subgraphs":[)"
            R"({"role":"else_branch","graph":{)" + branch_inputs + R"(,"outputs":["c"],"layers":[]}},)"
            R"({"role":"then_branch","graph":{)" + branch_inputs + R"(,"outputs":[")" + (d + 1 == depth ? "c" : "y") +
            R"("],"layers":[)";
    close += "]}}]}";
  }
  const std::string layers = open + close;
  return R"({"format":"espresso-model","format_version":4,"graph":{"name":"deep","inputs":[{"name":"c","shape":[]}],)"
         R"("outputs":[")" + std::string(depth > 0 ? "y" : "c") + R"("],"layers":[)" + layers + R"(]},"tensors":[]})";
}

TEST(HostileModels, DeeplyNestedEspSubgraphsAreRefused) {
  Scratch dir;
  const int limit = limits().max_subgraph_depth;
  // At the limit the package loads (the manifest is well formed); one level deeper is refused by the
  // reader, naming the layer and the limit, before it goes a level deeper.
  EXPECT_NO_THROW(load_package(dir.write("ok.esp", esp_with_manifest(nested_if_manifest(limit), 4))));
  expect_refused<LimitError>("esp subgraphs nested one past the limit",
                             [&] { load_package(dir.write("over.esp", esp_with_manifest(nested_if_manifest(limit + 1), 4))); },
                             "subgraphs nested " + std::to_string(limit + 1) + " deep exceed the limit");
  // 20000 deep: refused while the JSON is parsed, before it is built in memory.
  const std::string deep = dir.write("deep.esp", esp_with_manifest(nested_if_manifest(20000), 4));
  expect_refused<LimitError>("esp subgraphs nested 20k deep", [&] { load_package(deep); }, "max_subgraph_depth");
  // Subgraphs in a file that says it is version 3 are corrupt; a version this reader does not know is
  // refused by its number (as a version-3 reader refuses version 4).
  expect_refused<ParseError>("esp subgraphs in version 3",
                             [&] { load_package(dir.write("v3.esp", esp_with_manifest(nested_if_manifest(2), 3))); },
                             "needs format version 4");
  expect_refused<UnsupportedError>("esp version 5",
                                   [&] { load_package(dir.write("v5.esp", esp_with_manifest(nested_if_manifest(2), 5))); },
                                   "format version 5 is not supported");
}

std::string png_chunk(const std::string& type, const std::string& data) {
  auto be32 = [](std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  const std::string body = type + data;
  const auto crc = static_cast<std::uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())));
  return be32(static_cast<std::uint32_t>(data.size())) + body + be32(crc);
}

// One gray pixel of data behind a header that declares 65535 x 65535 (4 Gi pixels).
std::string bomb_png() {
  const std::string ihdr("\x00\x00\xff\xff\x00\x00\xff\xff\x08\x00\x00\x00\x00", 13);
  const std::string row("\x00\x7f", 2);  // filter byte, one pixel
  std::string compressed(compressBound(static_cast<uLong>(row.size())), '\0');
  uLongf length = static_cast<uLongf>(compressed.size());
  compress(reinterpret_cast<Bytef*>(compressed.data()), &length, reinterpret_cast<const Bytef*>(row.data()),
           static_cast<uLong>(row.size()));
  compressed.resize(length);
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + png_chunk("IDAT", compressed) +
         png_chunk("IEND", "");
}

TEST(HostileImages, OnePixelPngDeclaring65535x65535IsRefusedBeforeDecoding) {
  Scratch dir;
  const std::string bytes = bomb_png();
  ASSERT_LT(bytes.size(), 100u);
  const std::string path = dir.write("bomb.png", bytes);
  expect_refused<LimitError>("PNG declaring 65535x65535", [&] {
    data::load_image(path, {.channels = 3, .height = 32, .width = 32});
  }, "65535x65535");
  // The same image inside an encoded LMDB Datum.
  caffe::Datum datum;
  datum.set_encoded(true);
  datum.set_data(bytes);
  const std::string record = datum.SerializeAsString();
  expect_refused<LimitError>("encoded Datum declaring 65535x65535", [&] {
    data::Sample sample;
    data::decode_datum(record, sample, "record 0");
  }, "record 0");
}

// A PNG whose image-data chunk declares 2 GiB in a file of a few dozen bytes: stb would allocate the
// declared size before finding the data missing.
TEST(HostileImages, PngChunkLongerThanTheFileIsRefused) {
  Scratch dir;
  std::string bytes = bomb_png();
  const std::size_t idat = bytes.find("IDAT") - 4;
  bytes.replace(idat, 4, std::string("\x80\x00\x00\x00", 4));
  const std::string path = dir.write("chunk.png", bytes);
  expect_refused<DataError>("PNG chunk declaring 2 GiB", [&] {
    data::load_image(path, {.channels = 3, .height = 32, .width = 32});
  }, "declares 2147483648 bytes, past the end");
}

// A JPEG whose Huffman table declares 16 x 255 codes: Debian's stb_image would write them past its
// 256-entry table.
TEST(HostileImages, JpegHuffmanTableWithTooManyCodesIsRefused) {
  Scratch dir;
  std::string dht("\x00", 1);            // DC table 0
  dht += std::string(16, '\xff');        // 16 code lengths, 255 codes each
  dht += std::string(16 * 255, '\x01');  // the symbols
  const std::size_t length = dht.size() + 2;
  // stb also takes fill bytes before the start-of-image marker (the fuzzer's second find).
  for (const std::string& soi : {std::string("\xff\xd8", 2), std::string("\xff\xff\xff\xd8", 4)}) {
    const std::string bytes = soi + std::string("\xff\xc4", 2) + static_cast<char>(length >> 8) +
                              static_cast<char>(length & 0xff) + dht + std::string("\xff\xd9", 2);
    const std::string path = dir.write("huffman.jpg", bytes);
    expect_refused<DataError>("JPEG Huffman table of 4080 codes", [&] {
      data::load_image(path, {.channels = 3, .height = 32, .width = 32});
    }, "declares 4080 codes, more than 256");
  }
}

// 16-bit PNM files: Debian's stb reads their samples in the wrong byte order and, asked for another
// channel count, reads past its buffer (the fuzzer's input: a 3x2 grey image at 16 bits without pixels).
TEST(HostileImages, SixteenBitPnmIsRefused) {
  Scratch dir;
  for (const std::string& header : {std::string("P5\n3 2\n510\n"), std::string("P6\n1 1\n65535\n") + std::string(6, '\x10')}) {
    const std::string path = dir.write("deep.pnm", header);
    expect_refused<DataError>("16-bit PNM", [&] {
      data::load_image(path, {.channels = 3, .height = 8, .width = 8});
    }, "16-bit PNM images");
  }
  // A header number of ten digits (stb's int would overflow) is refused before stb reads it.
  const std::string huge = dir.write("huge.pgm", "P5\n5055301530 2\n255\n");
  expect_refused<DataError>("PNM header number of ten digits", [&] {
    data::load_image(huge, {.channels = 3, .height = 8, .width = 8});
  }, "too large");
  // An 8-bit PNM still decodes.
  const std::string path = dir.write("grey.pgm", std::string("P5\n2 1\n255\n\x10\xf0", 13));
  EXPECT_EQ(data::load_image(path, {.channels = 1, .height = 1, .width = 2}).size(), 2u);
}

TEST(HostileModels, ExternalDataMustStayInsideTheModelsFolder) {
  Scratch dir;
  fs::create_directories(fs::path(dir.path()) / "a" / "b" / "model");
  const std::string folder = (fs::path(dir.path()) / "a" / "b" / "model").string();
  auto write_model = [&](const std::string& name, const std::string& location) {
    const std::string path = folder + "/" + name;
    std::ofstream(path, std::ios::binary) << external_model(location).SerializeAsString();
    return path;
  };
  const std::string passwd = write_model("passwd.onnx", "../../etc/passwd");
  expect_refused<FileError>("external data ../../etc/passwd", [&] { load_model(passwd); }, "contains '..'");
  const std::string absolute = write_model("absolute.onnx", "/etc/passwd");
  expect_refused<FileError>("external data /etc/passwd", [&] { load_model(absolute); }, "absolute");

  // A symlink inside the folder to a file outside it, and a symlinked subfolder.
  const float values[4] = {1, 2, 3, 4};
  const fs::path secret = fs::path(dir.path()) / "a" / "secret.bin";
  std::ofstream(secret, std::ios::binary).write(reinterpret_cast<const char*>(values), sizeof values);
  fs::create_symlink(secret, fs::path(folder) / "weights.bin");
  fs::create_symlink(fs::path(dir.path()) / "a", fs::path(folder) / "up");
  const std::string linked = write_model("linked.onnx", "weights.bin");
  expect_refused<FileError>("external data symlink out of the folder", [&] { load_model(linked); },
                            "leads out of the model's folder");
  const std::string through_folder = write_model("through.onnx", "up/secret.bin");
  expect_refused<FileError>("external data via a symlinked folder", [&] { load_model(through_folder); },
                            "leads out of the model's folder");

  // A regular file inside the folder, also through a subfolder, still loads.
  fs::remove(fs::path(folder) / "weights.bin");
  fs::create_directories(fs::path(folder) / "sub");
  std::ofstream(fs::path(folder) / "sub" / "w.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(values), sizeof values);
  EXPECT_EQ(load_model(write_model("inside.onnx", "sub/w.bin")).layers.size(), 2u);
}

TEST(HostileData, NpyAndIdxHeadersAreCheckedBeforeAllocating) {
  Scratch dir;
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }";
  header += std::string(64 - (10 + header.size() + 1) % 64, ' ') + "\n";
  std::string npy("\x93NUMPY\x01\x00", 8);
  npy.push_back(static_cast<char>(header.size() & 0xff));
  npy.push_back(static_cast<char>(header.size() >> 8));
  const std::string path = dir.write("huge.npy", npy + header + "abcd");
  expect_refused<LimitError>(".npy shape 2^40", [&] { data::read_npy(path); }, "huge.npy");
  const std::string idx = dir.write("t10k-images-idx3-ubyte", std::string("\x00\x00\x08\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00", 16));
  expect_refused<LimitError>("IDX header 2^48 bytes", [&] { data::read_idx_images(idx); }, "IDX header");
}

TEST(Limits, AreConfigurable) {
  const Limits saved = limits();
  Limits tight = saved;
  tight.max_tensor_elements = 100;
  set_limits(tight);
  EXPECT_THROW(Tensor::empty(Shape{11, 10}), LimitError);
  EXPECT_NO_THROW(Tensor::empty(Shape{10, 10}));
  set_limits(saved);
  EXPECT_NO_THROW(Tensor::empty(Shape{11, 10}));
  EXPECT_THROW(Shape({1LL << 40, 1LL << 40}).numel(), ShapeError);
}

}  // namespace
}  // namespace espresso::hostile
