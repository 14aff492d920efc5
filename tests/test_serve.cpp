// espresso serve (include/espresso/serve.h) on loopback: every endpoint, answers checked against the
// same model run directly through Session (no server, no batching, no JSON), batching, switching among
// 8 models under a budget that fits 3, back-pressure, every bad-input case, graceful shutdown, the CLI.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "espresso/context_model.h"
#include "espresso/data.h"
#include "espresso/import.h"
#include "espresso/model.h"
#include "espresso/package.h"
#include "espresso/serve.h"
#include "serve/batcher.h"
#include "serve/errors.h"
#include "serve/protocol.h"
#include "test_support.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

namespace espresso {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TempDir;

constexpr int kVariants = 8;

class Serve : public testing::SharedDataTest {
 protected:
  static fs::path data() { return testing::shared_data_dir(); }
  static std::string lenet() { return (data() / "caffe/lenet/lenet.prototxt").string(); }
  static std::string lenet_weights() { return (data() / "caffe/lenet/lenet_iter_10000.caffemodel").string(); }
  static std::string mnist_onnx() { return (data() / "onnx/mnist-1/model.onnx").string(); }

  // MNIST test digit `i`, scaled to [0, 1) as LeNet was trained, as a 1x1x28x28 tensor.
  static Tensor digit(int i) {
    static const data::LabeledImages digits =
        data::load_mnist((data() / "mnist").string(), data::Split::test);
    Tensor t = Tensor::empty({1, 1, 28, 28});
    for (int p = 0; p < 784; ++p) t.data<float>()[p] = digits.image(i)[p] * 0.00390625f;
    return t;
  }
  static std::uint8_t label(int i) {
    static const data::LabeledImages digits =
        data::load_mnist((data() / "mnist").string(), data::Split::test);
    return digits.labels[static_cast<std::size_t>(i)];
  }

  // LeNet packages that answer differently: variant k rotates the classifier's rows by k and scales
  // them, so a server that mixed models up gives other numbers.
  static std::vector<std::string> variants(const TempDir& dir) {
    std::vector<std::string> paths;
    for (int k = 0; k < kVariants; ++k) {
      Graph graph = load_model(lenet(), lenet_weights());
      for (LayerSpec& layer : graph.layers) {
        if (layer.name != "ip2") continue;
        const Tensor weight = layer.weights[0].clone();
        const Tensor bias = layer.weights[1].clone();
        Tensor new_weight = weight.clone();
        Tensor new_bias = bias.clone();
        const std::int64_t row = weight.numel() / 10;
        for (int r = 0; r < 10; ++r) {
          const int from = (r + k) % 10;
          for (std::int64_t c = 0; c < row; ++c)
            new_weight.data<float>()[r * row + c] =
                weight.data<float>()[from * row + c] * (1.0f + 0.1f * static_cast<float>(k));
          new_bias.data<float>()[r] = bias.data<float>()[from];
        }
        layer.weights[0] = new_weight;
        layer.weights[1] = new_bias;
      }
      graph.metadata.name = "lenet" + std::to_string(k);
      graph.metadata.version = std::string(1, '1');
      graph.metadata.task = std::string("classification");
      graph.metadata.preprocessing.scale = 0.00390625;
      for (int c = 0; c < 10; ++c) graph.metadata.labels.push_back("digit " + std::to_string((c + k) % 10));
      const std::string path = dir.file("lenet" + std::to_string(k) + ".esp");
      save_package(graph, path);
      paths.push_back(path);
    }
    return paths;
  }
};

// The outputs of running the model directly, batch by batch as given.
std::map<std::string, Tensor> direct(const std::string& path, const std::string& weights,
                                     const std::string& input, const Tensor& batch) {
  Session session(Model::load(path, weights));
  return session.run({{input, batch}});
}

Tensor stack(const std::vector<Tensor>& samples) {
  std::vector<std::int64_t> dims = samples.front().shape().dims();
  dims[0] = static_cast<std::int64_t>(samples.size());
  Tensor out = Tensor::empty(Shape(dims));
  std::size_t offset = 0;
  for (const Tensor& t : samples) {
    std::memcpy(out.data<float>() + offset, t.data<float>(), t.bytes());
    offset += static_cast<std::size_t>(t.numel());
  }
  return out;
}

json tensor_json(const std::string& name, const Tensor& t) {
  json dims = json::array();
  for (std::int64_t d : t.shape().dims()) dims.push_back(d);
  return {{"name", name}, {"datatype", "FP32"}, {"shape", dims}, {"data", t.to_vector()}};
}

std::string infer_body(const std::string& name, const Tensor& t) {
  return json{{"inputs", {tensor_json(name, t)}}}.dump();
}

void expect_near(const std::vector<float>& got, const Tensor& want, double tolerance,
                 const std::string& what) {
  ASSERT_EQ(static_cast<std::int64_t>(got.size()), want.numel()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want.data<float>()[i], tolerance) << what << " element " << i;
  }
}

std::vector<float> data_of(const json& output) { return output.at("data").get<std::vector<float>>(); }

class Running {
 public:
  Running(serve::ServerOptions options, std::vector<serve::ModelSpec> models) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<serve::Server>(options, std::move(models));
    port_ = server_->start();
  }
  ~Running() { server_->stop(); }
  httplib::Client client(int timeout_s = 60) const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(timeout_s, 0);
    c.set_connection_timeout(5, 0);
    return c;
  }
  int port() const { return port_; }
  serve::Server& server() { return *server_; }

 private:
  std::unique_ptr<serve::Server> server_;
  int port_ = 0;
};

serve::ModelSpec spec(const std::string& name, const std::string& path, const std::string& weights = "") {
  serve::ModelSpec s;
  s.name = name;
  s.path = path;
  s.weights = weights;
  return s;
}

// SHA-256 of a file by Debian's sha256sum, an implementation apart from the store's.
std::string sha256_hex_of(const std::string& path) {
  FILE* pipe = popen(("sha256sum '" + path + "'").c_str(), "r");
  char hex[65] = {};
  const std::size_t n = std::fread(hex, 1, 64, pipe);
  pclose(pipe);
  return std::string(hex, n);
}

json post_json(httplib::Client& c, const std::string& path, const std::string& body, int& status) {
  auto res = c.Post(path.c_str(), body, "application/json");
  if (!res) {
    status = -1;
    return json();
  }
  status = res->status;
  return json::parse(res->body, nullptr, false);
}

// The summed value of every metric line that starts with `prefix` (labels included in the prefix).
double metric(const std::string& text, const std::string& prefix) {
  double total = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) total += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return total;
}

// The batcher alone, with a "model" that doubles its input and records the batch sizes it ran: rows go
// back to their requests, padding adds zero rows that never come back, and a model that fails at a
// larger batch (fixed batch 1) gets every request run alone.
TEST(ServeBatcher, SplitsPadsAndFallsBackToSingleRuns) {
  for (const bool fixed_batch : {false, true}) {
    std::mutex mutex;
    std::vector<std::int64_t> runs;
    std::vector<std::int64_t> reported;
    serve::BatcherOptions options;
    options.max_batch = 8;
    options.max_queue_delay = std::chrono::milliseconds(300);
    options.pad_to_buckets = true;
    serve::Batcher batcher(
        options,
        [&](const serve::TensorMap& inputs) {
          const Tensor& x = inputs.at("x");
          {
            std::lock_guard lock(mutex);
            runs.push_back(x.shape()[0]);
          }
          if (fixed_batch && x.shape()[0] != 1) throw ShapeError("fixed batch 1");
          Tensor y = Tensor::empty(x.shape());
          for (std::int64_t i = 0; i < x.numel(); ++i) y.data<float>()[i] = 2 * x.data<float>()[i];
          return serve::TensorMap{{"y", y}};
        },
        [&](std::int64_t samples) {
          std::lock_guard lock(mutex);
          reported.push_back(samples);
        });
    // Requests of 1, 2 and 2 samples: 5 rows, padded to 8.
    std::vector<std::future<serve::TensorMap>> results;
    for (int r = 0; r < 3; ++r) {
      const std::int64_t n = r == 0 ? 1 : 2;
      Tensor x = Tensor::empty({n, 3});
      for (std::int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>(100 * r + i);
      results.push_back(batcher.submit({{"x", x}}));
    }
    for (int r = 0; r < 3; ++r) {
      if (fixed_batch && r > 0) {
        EXPECT_THROW(results[static_cast<std::size_t>(r)].get(), ShapeError);
        continue;
      }
      const Tensor y = results[static_cast<std::size_t>(r)].get().at("y");
      ASSERT_EQ(y.shape()[0], r == 0 ? 1 : 2);
      for (std::int64_t i = 0; i < y.numel(); ++i)
        EXPECT_EQ(y.data<float>()[i], 2.0f * static_cast<float>(100 * r + i));
    }
    batcher.shutdown();
    if (!fixed_batch) {
      EXPECT_EQ(runs, std::vector<std::int64_t>({8}));
      EXPECT_EQ(reported, std::vector<std::int64_t>({5}));
    } else {
      // The padded batch failed; each request then ran alone (a batch of 2 fails too, as a model with a
      // fixed batch would), and the 2-sample requests end in the error.
      EXPECT_EQ(runs, std::vector<std::int64_t>({8, 1, 2, 2}));
      EXPECT_EQ(reported, std::vector<std::int64_t>({1}));
    }
  }
}

// The worker's joined-input memory is reused from batch to batch: a smaller later batch still gets zero
// padding (not the earlier batch's rows), and a model that keeps its input tensor keeps its values (the
// batcher takes fresh memory while the old one is held).
TEST(ServeBatcher, ReusedStagingPadsWithZerosAndSparesHeldInputs) {
  std::mutex mutex;
  std::vector<Tensor> seen;  // every batch's input, held on purpose
  serve::BatcherOptions options;
  options.max_batch = 4;
  options.max_queue_delay = std::chrono::milliseconds(300);
  options.pad_to_buckets = true;
  serve::Batcher batcher(
      options,
      [&](const serve::TensorMap& inputs) {
        const Tensor& x = inputs.at("x");
        std::lock_guard lock(mutex);
        seen.push_back(x);
        return serve::TensorMap{{"y", x.clone()}};
      },
      [](std::int64_t) {});
  const auto submit_rows = [&](const std::vector<float>& values) {
    std::vector<std::future<serve::TensorMap>> results;
    for (float v : values) {
      Tensor x = Tensor::empty({1, 2});
      x.data<float>()[0] = v;
      x.data<float>()[1] = -v;
      results.push_back(batcher.submit({{"x", x}}));
    }
    for (std::size_t r = 0; r < values.size(); ++r) {
      const Tensor y = results[r].get().at("y");
      ASSERT_EQ(y.shape()[0], 1);
      EXPECT_EQ(y.data<float>()[0], values[r]);
      EXPECT_EQ(y.data<float>()[1], -values[r]);
    }
  };
  submit_rows({1, 2, 3, 4});  // a full batch of 4
  submit_rows({5, 6, 7});     // 3 rows padded to 4
  // Drop the held tensors, so the next batch may reuse the memory, then a smaller batch again.
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(seen.size(), 2u);
    const std::vector<float> first(seen[0].data<float>(), seen[0].data<float>() + 8);
    EXPECT_EQ(first, std::vector<float>({1, -1, 2, -2, 3, -3, 4, -4}));
    const std::vector<float> second(seen[1].data<float>(), seen[1].data<float>() + 8);
    EXPECT_EQ(second, std::vector<float>({5, -5, 6, -6, 7, -7, 0, 0}));
    seen.clear();
  }
  submit_rows({8, 9, 10, 11});
  {
    std::lock_guard lock(mutex);
    seen.clear();
  }
  submit_rows({12, 13, 14});
  batcher.shutdown();
  ASSERT_EQ(seen.size(), 1u);
  const std::vector<float> last(seen[0].data<float>(), seen[0].data<float>() + 8);
  EXPECT_EQ(last, std::vector<float>({12, -12, 13, -13, 14, -14, 0, 0}));
}

// Many threads submit at once: each writes its request's values straight into its rows of the shared
// batch (PendingInputs), and gets back exactly those bits (the model returns its input), whatever batch
// it landed in. A request whose write throws gets the error; the others of its batch are unaffected.
TEST(ServeBatcher, ConcurrentWritersFillTheirOwnRows) {
  std::mutex mutex;
  std::vector<std::int64_t> runs;
  serve::BatcherOptions options;
  options.max_batch = 8;
  options.max_queue_delay = std::chrono::milliseconds(50);
  options.workers = 2;
  serve::Batcher batcher(
      options,
      [&](const serve::TensorMap& inputs) {
        const Tensor& x = inputs.at("x");
        {
          std::lock_guard lock(mutex);
          runs.push_back(x.shape()[0]);
        }
        return serve::TensorMap{{"y", x.clone()}, {"z", inputs.at("z").clone()}};
      },
      [](std::int64_t) {});
  // The values of request r, sample i: distinct bit patterns (negative zero, a NaN payload, subnormals).
  const auto value = [](int r, std::int64_t i) {
    const auto n = static_cast<std::uint32_t>(r * 64 + i);
    const std::uint32_t bits = r % 3 == 0 ? 0x7fc00000u + n : r % 3 == 1 ? 0x80000000u + n : n + 1;
    float f = 0;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  constexpr int kRequests = 48;
  std::vector<std::future<void>> clients;
  std::atomic<int> failures{0};
  for (int r = 0; r < kRequests; ++r) {
    clients.push_back(std::async(std::launch::async, [&, r] {
      const std::int64_t samples = r % 4 == 3 ? 2 : 1;
      serve::PendingInputs inputs;
      inputs["x"] = {Shape({samples, 5}), DType::f32, [&, r, samples](void* destination) {
                       float* out = static_cast<float*>(destination);
                       for (std::int64_t i = 0; i < samples * 5; ++i) out[i] = value(r, i);
                     }};
      inputs["z"] = {Shape({samples, 2}), DType::f32, [&, r, samples](void* destination) {
                       if (r % 16 == 5) throw serve::RequestError("inputs: request " + std::to_string(r) + " is broken");
                       float* out = static_cast<float*>(destination);
                       for (std::int64_t i = 0; i < samples * 2; ++i) out[i] = static_cast<float>(-r);
                     }};
      std::future<serve::TensorMap> result = batcher.submit(std::move(inputs));
      if (r % 16 == 5) {
        EXPECT_THROW(result.get(), serve::RequestError) << r;
        return;
      }
      const serve::TensorMap out = result.get();
      const Tensor& y = out.at("y");
      ASSERT_EQ(y.shape(), Shape({samples, 5})) << r;
      for (std::int64_t i = 0; i < samples * 5; ++i) {
        const float want = value(r, i);
        if (std::memcmp(&y.data<float>()[i], &want, sizeof want) != 0) ++failures;
      }
      for (std::int64_t i = 0; i < samples * 2; ++i) {
        if (out.at("z").data<float>()[i] != static_cast<float>(-r)) ++failures;
      }
    }));
  }
  for (auto& client : clients) client.get();
  batcher.shutdown();
  EXPECT_EQ(failures, 0) << "a request got rows that are not its own";
  std::lock_guard lock(mutex);
  EXPECT_TRUE(std::any_of(runs.begin(), runs.end(), [](std::int64_t n) { return n > 2; }))
      << "no batch held more than one request";
  for (std::int64_t n : runs) EXPECT_LE(n, 8);
}

// Binary tensor data decoded later, straight into a batch's rows (defer_binary + decode_input), has the
// bits of the values written, as the eager parse has; the offsets of several tensors in one body hold.
TEST(ServeProtocol, DeferredBinaryDecodeMatchesTheEagerParse) {
  const std::vector<float> a{1.5f, -0.0f, 1e-40f, 3.25f};
  const std::vector<std::uint8_t> b{0, 7, 255};
  const std::vector<std::int64_t> c{-5, 1 << 20};
  std::string raw(reinterpret_cast<const char*>(a.data()), a.size() * 4);
  raw.append(reinterpret_cast<const char*>(b.data()), b.size());
  raw.append(reinterpret_cast<const char*>(c.data()), c.size() * 8);
  const std::string header =
      json{{"inputs",
            {{{"name", "a"}, {"shape", {2, 2}}, {"datatype", "FP32"}, {"parameters", {{"binary_data_size", 16}}}},
             {{"name", "b"}, {"shape", {1, 3}}, {"datatype", "UINT8"}, {"parameters", {{"binary_data_size", 3}}}},
             {{"name", "c"}, {"shape", {2}}, {"datatype", "INT64"}, {"parameters", {{"binary_data_size", 16}}}},
             {{"name", "d"}, {"shape", {1, 2}}, {"datatype", "FP32"}, {"data", {0.5, -2}}}}}}
          .dump();
  const std::string body = header + raw;
  const serve::InferRequest eager = serve::parse_infer_request(body, header.size());
  const serve::InferRequest deferred = serve::parse_infer_request(body, header.size(), /*defer_binary=*/true);
  const std::vector<std::vector<float>> want{{a.begin(), a.end()}, {0, 7, 255}, {-5, 1 << 20}, {0.5f, -2.0f}};
  ASSERT_EQ(deferred.inputs.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const serve::RequestedInput& input = deferred.inputs[i];
    EXPECT_EQ(input.tensor.defined(), i == 3) << input.name;  // binary ones wait in the body
    std::vector<float> decoded(static_cast<std::size_t>(input.shape.numel()));
    serve::decode_input(input, decoded.data());
    ASSERT_EQ(decoded.size(), want[i].size()) << input.name;
    EXPECT_EQ(std::memcmp(decoded.data(), want[i].data(), decoded.size() * 4), 0) << input.name;
    const Tensor& e = eager.inputs[i].tensor;
    ASSERT_EQ(e.shape(), input.shape) << input.name;
    EXPECT_EQ(std::memcmp(decoded.data(), e.data<float>(), e.bytes()), 0) << input.name;
  }
  // The same refusals as the eager parse: a size that disagrees with the shape.
  std::string wrong = header;
  wrong.replace(wrong.find("16"), 2, "12");
  EXPECT_THROW(serve::parse_infer_request(wrong + raw, wrong.size(), true), serve::RequestError);
}

// Binary tensor data of every width decodes to the values written (FP32 by one copy, the others element
// by element): the written values are the reference.
TEST(ServeProtocol, DecodesBinaryDatatypes) {
  const auto body_for = [](const std::string& datatype, const std::string& raw, std::size_t& header_length) {
    const std::string header = json{{"inputs",
                                     {{{"name", "x"},
                                       {"shape", {1, 3}},
                                       {"datatype", datatype},
                                       {"parameters", {{"binary_data_size", raw.size()}}}}}}}
                                   .dump();
    header_length = header.size();
    return header + raw;
  };
  const auto raw_of = [](const auto& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(values[0]));
  };
  const auto check = [&](const std::string& datatype, const std::string& raw, std::vector<float> want) {
    std::size_t header_length = 0;
    const std::string body = body_for(datatype, raw, header_length);
    const serve::InferRequest request = serve::parse_infer_request(body, header_length);
    ASSERT_EQ(request.inputs.size(), 1u) << datatype;
    const Tensor& x = request.inputs[0].tensor;
    ASSERT_EQ(x.numel(), 3) << datatype;
    EXPECT_EQ(std::vector<float>(x.data<float>(), x.data<float>() + 3), want) << datatype;
  };
  check("FP32", raw_of(std::vector<float>{1.5f, -2.25f, 1e-3f}), {1.5f, -2.25f, 1e-3f});
  check("FP64", raw_of(std::vector<double>{0.5, -4.0, 3e5}), {0.5f, -4.0f, 3e5f});
  check("INT8", raw_of(std::vector<std::int8_t>{-128, 0, 127}), {-128, 0, 127});
  check("UINT8", raw_of(std::vector<std::uint8_t>{0, 200, 255}), {0, 200, 255});
  check("INT16", raw_of(std::vector<std::int16_t>{-32768, 7, 32767}), {-32768, 7, 32767});
  check("UINT16", raw_of(std::vector<std::uint16_t>{0, 1000, 65535}), {0, 1000, 65535});
  check("INT32", raw_of(std::vector<std::int32_t>{-100000, 3, 100000}), {-100000, 3, 100000});
  check("UINT32", raw_of(std::vector<std::uint32_t>{0, 4, 1u << 20}), {0, 4, 1 << 20});
  check("INT64", raw_of(std::vector<std::int64_t>{-9, 0, 1 << 24}), {-9, 0, 1 << 24});
  check("UINT64", raw_of(std::vector<std::uint64_t>{1, 2, 3}), {1, 2, 3});
}

TEST_F(Serve, ModelSpecsParse) {
  const serve::ModelSpec a = serve::ModelSpec::parse("digits=" + lenet() + "," + lenet_weights());
  EXPECT_EQ(a.name, "digits");
  EXPECT_EQ(a.path, lenet());
  EXPECT_EQ(a.weights, lenet_weights());
  EXPECT_EQ(serve::ModelSpec::parse(mnist_onnx()).name, "model");
  const serve::ModelSpec ref = serve::ModelSpec::parse("localhost:5000/zoo/lenet:1");
  EXPECT_EQ(ref.name, "lenet");
  EXPECT_EQ(ref.reference, "localhost:5000/zoo/lenet:1");
  EXPECT_THROW(serve::ModelSpec::parse("bad/name=" + lenet()), ServeError);
  EXPECT_THROW(serve::ModelSpec::parse("x="), ServeError);
  EXPECT_THROW(serve::Server({}, {spec("x", "/nonexistent/model.onnx")}), ServeError);
  EXPECT_THROW(serve::Server({}, {}), ServeError);
}

TEST_F(Serve, EveryEndpointAnswersAsTheModelDoes) {
  TempDir dir;
  const std::vector<std::string> packages = variants(dir);
  serve::ServerOptions options;
  options.max_queue_delay = std::chrono::microseconds(0);
  Running running(options, {spec("lenet", lenet(), lenet_weights()), spec("mnist", mnist_onnx()),
                            spec("digits", packages[3])});
  httplib::Client c = running.client();

  auto live = c.Get("/v2/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(c.Get("/v2/health/ready")->status, 200);
  const json server = json::parse(c.Get("/v2")->body);
  EXPECT_EQ(server["name"], "espresso");
  EXPECT_NE(std::find(server["extensions"].begin(), server["extensions"].end(), "binary_tensor_data"),
            server["extensions"].end());

  // Metadata: the graph's input, and the output's shape from the direct run.
  const json meta = json::parse(c.Get("/v2/models/lenet")->body);
  EXPECT_EQ(meta["name"], "lenet");
  EXPECT_EQ(meta["inputs"][0]["name"], "data");
  EXPECT_EQ(meta["inputs"][0]["datatype"], "FP32");
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 1, 28, 28}));
  EXPECT_EQ(meta["outputs"][0]["name"], "prob");
  EXPECT_EQ(meta["outputs"][0]["shape"], json({-1, 10}));
  EXPECT_EQ(json::parse(c.Get("/v2/models/digits/versions/1")->body)["versions"], json({"1"}));
  EXPECT_EQ(c.Get("/v2/models/digits/versions/1/ready")->status, 200);
  EXPECT_EQ(c.Get("/v2/models/lenet/ready")->status, 200);

  // JSON inference, a batch of two digits, against the direct run.
  const Tensor two = stack({digit(0), digit(1)});
  int status = 0;
  json answer = post_json(c, "/v2/models/lenet/infer",
                          json{{"id", "r1"}, {"inputs", {tensor_json("data", two)}}}.dump(), status);
  ASSERT_EQ(status, 200) << answer.dump();
  EXPECT_EQ(answer["id"], "r1");
  EXPECT_EQ(answer["model_name"], "lenet");
  EXPECT_EQ(answer["outputs"][0]["shape"], json({2, 10}));
  expect_near(data_of(answer["outputs"][0]), direct(lenet(), lenet_weights(), "data", two)["prob"], 1e-6,
              "lenet");

  // The ONNX model, a version in the path, the outputs selection.
  answer = post_json(
      c, "/v2/models/digits/versions/1/infer",
      json{{"inputs", {tensor_json("data", digit(2))}}, {"outputs", {{{"name", "prob"}}}}}.dump(), status);
  ASSERT_EQ(status, 200) << answer.dump();
  expect_near(data_of(answer["outputs"][0]), direct(packages[3], "", "data", digit(2))["prob"], 1e-6,
              "digits");
  answer = post_json(c, "/v2/models/mnist/infer", infer_body("Input3", digit(3)), status);
  ASSERT_EQ(status, 200) << answer.dump();
  expect_near(data_of(answer["outputs"][0]), direct(mnist_onnx(), "", "Input3", digit(3))["Plus214_Output_0"],
              1e-5, "mnist");

  // UINT8 pixels and nested data give what the same values as FP32 give.
  {
    static const data::LabeledImages digits =
        data::load_mnist((data() / "mnist").string(), data::Split::test);
    json rows = json::array();
    Tensor as_float = Tensor::empty({1, 1, 28, 28});
    for (int y = 0; y < 28; ++y) {
      json row = json::array();
      for (int x = 0; x < 28; ++x) {
        row.push_back(digits.image(4)[y * 28 + x]);
        as_float.data<float>()[y * 28 + x] = digits.image(4)[y * 28 + x];
      }
      rows.push_back(row);
    }
    json input = {{"name", "Input3"},
                  {"datatype", "UINT8"},
                  {"shape", {1, 1, 28, 28}},
                  {"data", json::array({json::array({rows})})}};
    answer = post_json(c, "/v2/models/mnist/infer", json{{"inputs", {input}}}.dump(), status);
    ASSERT_EQ(status, 200) << answer.dump();
    expect_near(data_of(answer["outputs"][0]),
                direct(mnist_onnx(), "", "Input3", as_float)["Plus214_Output_0"], 1e-4, "uint8");
  }

  // Binary data extension: input as raw FP32 after the JSON, output asked for as binary.
  {
    const Tensor three = stack({digit(5), digit(6), digit(7)});
    const std::string header =
        json{{"inputs",
              {{{"name", "data"},
                {"datatype", "FP32"},
                {"shape", {3, 1, 28, 28}},
                {"parameters", {{"binary_data_size", three.bytes()}}}}}},
             {"outputs", {{{"name", "prob"}, {"parameters", {{"binary_data", true}}}}}}}
            .dump();
    std::string body = header;
    body.append(static_cast<const char*>(three.raw()), three.bytes());
    httplib::Headers headers = {{"Inference-Header-Content-Length", std::to_string(header.size())}};
    auto res = c.Post("/v2/models/lenet/infer", headers, body, "application/octet-stream");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    ASSERT_TRUE(res->has_header("Inference-Header-Content-Length"));
    const std::size_t json_length = std::stoul(res->get_header_value("Inference-Header-Content-Length"));
    const json reply = json::parse(res->body.substr(0, json_length));
    EXPECT_EQ(reply["outputs"][0]["parameters"]["binary_data_size"], 3 * 10 * 4);
    EXPECT_FALSE(reply["outputs"][0].contains("data"));
    ASSERT_EQ(res->body.size(), json_length + 120);
    std::vector<float> got(30);
    std::memcpy(got.data(), res->body.data() + json_length, 120);
    expect_near(got, direct(lenet(), lenet_weights(), "data", three)["prob"], 1e-6, "binary");
  }

  // Metrics after these requests.
  const std::string text = c.Get("/metrics")->body;
  EXPECT_GE(metric(text, "espresso_requests_total{model=\"lenet\",status=\"200\"}"), 2);
  EXPECT_GE(metric(text, "espresso_request_duration_seconds_count{model=\"lenet\"}"), 2);
  EXPECT_GE(metric(text, "espresso_batch_size_count{model=\"lenet\"}"), 2);
  EXPECT_EQ(metric(text, "espresso_resident_models "), 3);
  EXPECT_GT(metric(text, "espresso_resident_bytes "), 0);
  EXPECT_EQ(metric(text, "espresso_model_loads_total "), 3);
  EXPECT_EQ(metric(text, "espresso_model_evictions_total "), 0);

  // The store's catalog JSON: the same keys as store serve's /api/v1/models and the package's card.
  const json list = json::parse(c.Get("/api/v1/models")->body);
  ASSERT_EQ(list["models"].size(), 3u);
  EXPECT_TRUE(list["next_cursor"].is_null());
  for (const json& entry : list["models"]) {
    for (const char* key : {"name", "version", "digest", "description", "task", "license", "author",
                            "size_bytes", "params", "flops", "metrics"})
      EXPECT_TRUE(entry.contains(key)) << key;
  }
  const json filtered = json::parse(c.Get("/api/v1/models?task=classification")->body);
  ASSERT_EQ(filtered["models"].size(), 1u);
  EXPECT_EQ(filtered["models"][0]["name"], "digits");
  const json card = json::parse(c.Get("/api/v1/models/digits")->body);
  EXPECT_EQ(card["name"], "digits");
  EXPECT_EQ(card["latest"], "1");
  EXPECT_EQ(card["digest"], "sha256:" + sha256_hex_of(packages[3]));
  EXPECT_EQ(card["card"]["name"], "lenet3");
  EXPECT_EQ(card["card"]["labels"].size(), 10u);
  EXPECT_EQ(card["versions"][0]["version"], "1");
  EXPECT_EQ(c.Get("/api/v1/models/nothing")->status, 404);

  // The image route: a PNG of a digit, top-K from the package's preprocessing and labels.
  {
    static const data::LabeledImages digits =
        data::load_mnist((data() / "mnist").string(), data::Split::test);
    const std::string png = dir.file("digit.png");
    ASSERT_NE(stbi_write_png(png.c_str(), 28, 28, 1, digits.image(8), 28), 0);
    const std::string bytes = testing::read_bytes(png);
    const Tensor want = direct(packages[3], "", "data", digit(8))["prob"];
    std::int64_t best = 0;
    for (std::int64_t i = 1; i < 10; ++i) {
      if (want.data<float>()[i] > want.data<float>()[best]) best = i;
    }
    for (const std::string path : {"/v1/classify/digits?top=3", "/api/v1/models/digits/classify?top=3"}) {
      auto res = c.Post(path.c_str(), bytes, "image/png");
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
      const json top = json::parse(res->body);
      ASSERT_EQ(top["top"].size(), 3u);
      EXPECT_EQ(top["top"][0]["index"], best);
      EXPECT_EQ(top["top"][0]["label"], "digit " + std::to_string((best + 3) % 10));
      EXPECT_NEAR(top["top"][0]["probability"].get<double>(), want.data<float>()[best], 1e-5);
    }
    // The rotation undone: variant 3's label names the digit that is really there.
    EXPECT_EQ(json::parse(c.Post("/v1/classify/digits", bytes, "image/png")->body)["top"][0]["label"],
              "digit " + std::to_string(label(8)));
    auto not_image = c.Post("/v1/classify/digits", std::string("not an image"), "image/png");
    EXPECT_EQ(not_image->status, 400);
    EXPECT_TRUE(json::parse(not_image->body).contains("error"));
    EXPECT_EQ(c.Post("/v1/classify/digits?top=0", bytes, "image/png")->status, 400);
    auto other_version = c.Post("/api/v1/models/digits/classify?version=no-such", bytes, "image/png");
    EXPECT_EQ(other_version->status, 404);
    EXPECT_NE(other_version->body.find("version"), std::string::npos) << other_version->body;
  }
}

TEST_F(Serve, BadInputGetsJsonErrorsNamingTheField) {
  TempDir dir;
  const std::string broken = dir.write("broken.onnx", "this is not a protobuf");
  serve::ServerOptions options;
  options.max_body_bytes = 64 << 10;
  options.read_timeout = std::chrono::seconds(1);
  options.max_queue_delay = std::chrono::microseconds(0);
  Running running(options, {spec("lenet", lenet(), lenet_weights()), spec("broken", broken)});
  httplib::Client c = running.client();
  const std::string good = infer_body("data", digit(0));
  const auto expect_error = [&](const std::string& path, const std::string& body, int want,
                                const std::string& names, const httplib::Headers& headers = {}) {
    auto res = c.Post(path.c_str(), headers, body, "application/json");
    ASSERT_TRUE(res) << path << " " << body.substr(0, 80);
    EXPECT_EQ(res->status, want) << res->body;
    const json error = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(error.is_object() && error.contains("error")) << res->body;
    EXPECT_NE(error["error"].get<std::string>().find(names), std::string::npos)
        << error["error"] << " lacks " << names;
  };
  const std::string inf = "/v2/models/lenet/infer";
  expect_error(inf, "{\"inputs\": [", 400, "body: not valid JSON");
  expect_error(inf, "[1, 2]", 400, "JSON object");
  expect_error(inf, "{}", 400, "inputs");
  expect_error(inf,
               R"({"inputs": [{"name": "data", "shape": [1,1,28,28], "datatype": "BYTES", "data": []}]})",
               400, "inputs[0].datatype");
  expect_error(
      inf, R"({"inputs": [{"name": "data", "shape": [1,1,28,28], "datatype": "FP32", "data": [1, 2, 3]}]})",
      400, "inputs[0].data: 3 values");
  expect_error(inf,
               R"({"inputs": [{"name": "data", "shape": [1,1,28,28], "datatype": "FP32", "data": ["a"]}]})",
               400, "inputs[0].data");
  expect_error(inf,
               R"({"inputs": [{"name": "data", "shape": [1,3,28,28], "datatype": "FP32", "data": [0]}]})",
               400, "inputs[0].data");
  {
    json wrong_shape = {{"inputs",
                         {{{"name", "data"},
                           {"datatype", "FP32"},
                           {"shape", {1, 1, 14, 56}},
                           {"data", std::vector<float>(784, 0.0f)}}}}};
    expect_error(inf, wrong_shape.dump(), 400, "inputs[0].shape");
    json zero_batch = {
        {"inputs",
         {{{"name", "data"}, {"datatype", "FP32"}, {"shape", {0, 1, 28, 28}}, {"data", json::array()}}}}};
    expect_error(inf, zero_batch.dump(), 400, "inputs[0].shape");
    json negative = {
        {"inputs",
         {{{"name", "data"}, {"datatype", "FP32"}, {"shape", {-1, 1, 28, 28}}, {"data", json::array()}}}}};
    expect_error(inf, negative.dump(), 400, "inputs[0].shape");
    json uint8 = {{"inputs",
                   {{{"name", "data"},
                     {"datatype", "UINT8"},
                     {"shape", {1, 1, 28, 28}},
                     {"data", std::vector<int>(784, 300)}}}}};
    expect_error(inf, uint8.dump(), 400, "out of range for UINT8");
    json unknown_input = {{"inputs", {tensor_json("pixels", digit(0))}}};
    expect_error(inf, unknown_input.dump(), 400, "inputs[0].name");
    json unknown_output = {{"inputs", {tensor_json("data", digit(0))}}, {"outputs", {{{"name", "logits"}}}}};
    expect_error(inf, unknown_output.dump(), 400, "outputs[0].name");
  }
  // Binary extension faults: a header length past the body, sizes that disagree, bytes left over.
  expect_error(inf, good, 400, "Inference-Header-Content-Length",
               {{"Inference-Header-Content-Length", "999999"}});
  expect_error(inf, good, 400, "Inference-Header-Content-Length",
               {{"Inference-Header-Content-Length", "12x"}});
  {
    const std::string header =
        R"({"inputs": [{"name": "data", "shape": [1,1,28,28], "datatype": "FP32", "parameters": {"binary_data_size": 100}}]})";
    expect_error(inf, header + std::string(100, '\0'), 400, "binary_data_size",
                 {{"Inference-Header-Content-Length", std::to_string(header.size())}});
    expect_error(inf, good + "extra", 400, "binary data",
                 {{"Inference-Header-Content-Length", std::to_string(good.size())}});
  }
  // Too large, unknown model and version, unknown paths, a model that cannot be loaded.
  expect_error(inf, std::string(100 << 10, ' '), 413, "body");
  expect_error("/v2/models/nosuch/infer", good, 404, "nosuch");
  expect_error("/v2/models/lenet/versions/7/infer", good, 404, "version");
  expect_error("/v2/models/broken/infer", good, 500, "broken");
  EXPECT_EQ(c.Get("/v2/models/broken/ready")->status, 400);
  EXPECT_EQ(c.Get("/v2/models/nosuch")->status, 404);
  EXPECT_EQ(c.Get("/v2/models/lenet/versions/7")->status, 404);
  EXPECT_EQ(c.Get("/v2/nothing")->status, 404);
  EXPECT_EQ(c.Get("/v2/models/lenet/infer")->status, 400);

  // A client that sends half its body and stalls is dropped after the read timeout; others are served.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(running.port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    const std::string head =
        "POST /v2/models/lenet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(good.size()) +
        "\r\n\r\n" + good.substr(0, 20);
    ASSERT_EQ(::send(fd, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
    timeval wait{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    const auto start = std::chrono::steady_clock::now();
    char reply[4096];
    const ssize_t n = ::recv(fd, reply, sizeof reply, 0);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ::close(fd);
    EXPECT_LT(waited, 4.5) << "the stalled client was never dropped";
    if (n > 0) {
      EXPECT_NE(std::string(reply, static_cast<std::size_t>(n)).find("408"), std::string::npos);
    }
  }
  int status = 0;
  const json answer = post_json(c, inf, good, status);
  EXPECT_EQ(status, 200) << answer.dump();
  expect_near(data_of(answer["outputs"][0]), direct(lenet(), lenet_weights(), "data", digit(0))["prob"], 1e-6,
              "after faults");
}

class ServeBatching : public Serve, public ::testing::WithParamInterface<bool> {};

TEST_P(ServeBatching, BatchesAndMatchesUnbatched) {
  serve::ServerOptions options;
  options.max_batch = 16;
  options.max_queue_delay = std::chrono::milliseconds(500);
  options.pad_batches =
      GetParam() ? serve::ServerOptions::PadBatches::always : serve::ServerOptions::PadBatches::never;
  Running running(options, {spec("lenet", lenet(), lenet_weights())});
  constexpr int kClients = 12;
  std::vector<std::future<std::pair<int, json>>> answers;
  for (int i = 0; i < kClients; ++i) {
    answers.push_back(std::async(std::launch::async, [&, i] {
      httplib::Client c = running.client();
      int status = 0;
      json reply = post_json(c, "/v2/models/lenet/infer", infer_body("data", digit(i)), status);
      return std::make_pair(status, reply);
    }));
  }
  for (int i = 0; i < kClients; ++i) {
    const auto [status, reply] = answers[static_cast<std::size_t>(i)].get();
    ASSERT_EQ(status, 200) << reply.dump();
    expect_near(data_of(reply["outputs"][0]), direct(lenet(), lenet_weights(), "data", digit(i))["prob"],
                1e-5, "client " + std::to_string(i));
  }
  const std::string text = running.client().Get("/metrics")->body;
  const double batches = metric(text, "espresso_batch_size_count{model=\"lenet\"}");
  const double singles = metric(text, "espresso_batch_size_bucket{model=\"lenet\",le=\"1\"}");
  EXPECT_EQ(metric(text, "espresso_batch_size_sum{model=\"lenet\"}"), kClients);
  EXPECT_LT(batches, kClients) << text;
  EXPECT_LT(singles, batches) << "no batch held more than one request:\n" << text;
}

INSTANTIATE_TEST_SUITE_P(Padding, ServeBatching, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Padded" : "Exact";
                         });

// Concurrent binary requests (the path of large inputs: the body decoded straight into the batch) batch
// together and answer as the model run directly; a malformed binary body among them is a 400 and the
// thread's reused body buffer serves the next request intact.
class ServeBinary : public Serve {
 protected:
  void binary_requests_batch_and_match(Device device, double tolerance);
};

void ServeBinary::binary_requests_batch_and_match(Device device, double tolerance) {
  serve::ServerOptions options;
  options.device = device;
  options.max_batch = 16;
  options.max_queue_delay = std::chrono::milliseconds(300);
  options.workers_per_model = 2;
  options.http_threads = 16;
  Running running(options, {spec("lenet", lenet(), lenet_weights())});
  const auto binary_body = [](const Tensor& t, std::size_t claimed, std::size_t& header_length) {
    const std::string header =
        json{{"inputs",
              {{{"name", "data"},
                {"datatype", "FP32"},
                {"shape", {t.shape()[0], 1, 28, 28}},
                {"parameters", {{"binary_data_size", claimed}}}}}},
             {"parameters", {{"binary_data_output", true}}}}
            .dump();
    header_length = header.size();
    return header + std::string(static_cast<const char*>(t.raw()), t.bytes());
  };
  constexpr int kClients = 12;
  std::vector<std::future<void>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::async(std::launch::async, [&, i] {
      httplib::Client c = running.client();
      for (int round = 0; round < 2; ++round) {
        const Tensor x = i % 3 == 2 ? stack({digit(i), digit(i + 1)}) : digit(i);
        const bool broken = i == 4 && round == 0;
        std::size_t header_length = 0;
        const std::string body = binary_body(x, broken ? x.bytes() - 4 : x.bytes(), header_length);
        auto res = c.Post("/v2/models/lenet/infer", {{"Inference-Header-Content-Length", std::to_string(header_length)}},
                          body, "application/octet-stream");
        ASSERT_TRUE(res) << i;
        if (broken) {
          EXPECT_EQ(res->status, 400) << res->body;
          EXPECT_NE(res->body.find("binary_data_size"), std::string::npos) << res->body;
          continue;  // the server closed this connection; the client opens another
        }
        ASSERT_EQ(res->status, 200) << res->body;
        const std::size_t json_length = std::stoul(res->get_header_value("Inference-Header-Content-Length"));
        const Tensor want = direct(lenet(), lenet_weights(), "data", x)["prob"];
        ASSERT_EQ(res->body.size(), json_length + want.bytes()) << i;
        std::vector<float> got(static_cast<std::size_t>(want.numel()));
        std::memcpy(got.data(), res->body.data() + json_length, want.bytes());
        expect_near(got, want, tolerance, "client " + std::to_string(i));
      }
    }));
  }
  for (auto& client : clients) client.get();
  const std::string text = running.client().Get("/metrics")->body;
  const double batches = metric(text, "espresso_batch_size_count{model=\"lenet\"}");
  EXPECT_EQ(metric(text, "espresso_batch_size_sum{model=\"lenet\"}"), 2 * (kClients + kClients / 3) - 1);
  EXPECT_LT(batches, 2 * kClients - 1) << "no batch held more than one request:\n" << text;
}

TEST_F(ServeBinary, BatchAndMatchTheModel) { binary_requests_batch_and_match(Device::cpu(), 1e-5); }

// The same on the GPU: batches in page-locked host staging, padded to powers of two, uploaded by one
// DMA each; answers as the model run on the CPU.
TEST_F(ServeBinary, BatchOnTheGpuAndMatchTheCpu) {
  if (!testing::have_gpu()) GTEST_SKIP() << "no CUDA device";
  binary_requests_batch_and_match(Device::cuda(0), 1e-4);
}

TEST_F(Serve, EightModelsUnderABudgetForThreeStayCorrect) {
  TempDir dir;
  const std::vector<std::string> packages = variants(dir);
  const std::size_t one = Model::bytes_needed(load_package(packages[0]), Device::cpu());
  serve::ServerOptions options;
  options.memory_budget_bytes = 3 * one + one / 2;
  options.max_batch = 8;
  options.max_queue_delay = std::chrono::milliseconds(2);
  std::vector<serve::ModelSpec> specs;
  for (int k = 0; k < kVariants; ++k)
    specs.push_back(spec("lenet" + std::to_string(k), packages[static_cast<std::size_t>(k)]));
  Running running(options, specs);
  // The reference: each model run directly on each digit.
  constexpr int kDigits = 4;
  std::vector<std::vector<Tensor>> want(kVariants);
  for (int k = 0; k < kVariants; ++k) {
    for (int d = 0; d < kDigits; ++d)
      want[k].push_back(direct(packages[static_cast<std::size_t>(k)], "", "data", digit(d))["prob"]);
  }
  std::atomic<int> checked{0};
  std::vector<std::thread> clients;
  std::vector<std::string> failures(4);
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t + 1));
      httplib::Client c = running.client();
      for (int i = 0; i < 30; ++i) {
        const int k = static_cast<int>(random() % kVariants);
        const int d = static_cast<int>(random() % kDigits);
        int status = 0;
        const json reply = post_json(c, "/v2/models/lenet" + std::to_string(k) + "/infer",
                                     infer_body("data", digit(d)), status);
        if (status != 200) {
          failures[static_cast<std::size_t>(t)] = reply.dump();
          return;
        }
        const std::vector<float> got = data_of(reply["outputs"][0]);
        for (int j = 0; j < 10; ++j) {
          if (std::abs(got[static_cast<std::size_t>(j)] - want[k][d].data<float>()[j]) > 1e-5) {
            failures[static_cast<std::size_t>(t)] =
                "model " + std::to_string(k) + " digit " + std::to_string(d) + " differs";
            return;
          }
        }
        ++checked;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  for (const std::string& failure : failures) EXPECT_EQ(failure, "");
  EXPECT_EQ(checked, 120);
  const std::string text = running.client().Get("/metrics")->body;
  EXPECT_LE(metric(text, "espresso_resident_models "), 3);
  EXPECT_LE(metric(text, "espresso_resident_bytes "), static_cast<double>(options.memory_budget_bytes));
  EXPECT_GT(metric(text, "espresso_model_evictions_total "), 0);
  EXPECT_GT(metric(text, "espresso_model_loads_total "), kVariants);
  EXPECT_LE(running.server().resident_models().size(), 3u);
  // The preloader's hook: a model loaded ahead of its first request.
  running.server().preload("lenet7");
  const std::vector<std::string> resident = running.server().resident_models();
  EXPECT_NE(std::find(resident.begin(), resident.end(), "lenet7"), resident.end());
}

// The web page of docs/web.md is served at "/" from the binary, beside the catalog JSON it reads.
TEST_F(Serve, ServesTheWebPage) {
  TempDir dir;
  Running running({}, {spec("lenet", lenet(), lenet_weights())});
  httplib::Client c = running.client();
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("app.js"), std::string::npos);
  auto script = c.Get("/app.js");
  ASSERT_TRUE(script);
  EXPECT_EQ(script->status, 200);
  EXPECT_NE(script->body.find("/classify"), std::string::npos);
  // Paths that are no file of the page stay 404 with a JSON error.
  auto missing = c.Get("/no-such-file.js");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_TRUE(json::parse(missing->body).contains("error"));
  // The page's filters: license and max_bytes filter, bad numbers name their parameter.
  EXPECT_EQ(json::parse(c.Get("/api/v1/models?max_bytes=1")->body)["models"].size(), 0u);
  EXPECT_EQ(json::parse(c.Get("/api/v1/models?max_bytes=1000000000")->body)["models"].size(), 1u);
  EXPECT_EQ(json::parse(c.Get("/api/v1/models?license=none-such")->body)["models"].size(), 0u);
  auto bad = c.Get("/api/v1/models?min_accuracy=high");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body).value("field", ""), "min_accuracy");
}

// A context model trained on a log where mornings in the park ask for lenet1 and evenings at home
// for lenet2.
std::vector<serve::Observation> routine_log() {
  std::vector<serve::Observation> log;
  for (int day = 0; day < 14; ++day) {
    for (int minute = 0; minute < 60; minute += 6) {
      char morning[64];
      char evening[64];
      std::snprintf(morning, sizeof morning, "2026-11-%02dT08:%02d:00Z", day + 1, minute);
      std::snprintf(evening, sizeof evening, "2026-11-%02dT20:%02d:00Z", day + 1, minute);
      log.push_back({serve::parse_request_context(
                         json{{"time", morning}, {"location", "park"}, {"app", "lens"}}.dump(), 0),
                     "lenet1"});
      log.push_back({serve::parse_request_context(
                         json{{"time", evening}, {"location", "home"}, {"app", "lens"}}.dump(), 0),
                     "lenet2"});
    }
  }
  return log;
}

bool wait_for(const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

TEST_F(Serve, ContextModelRecommendsLogsAndPreloads) {
  TempDir dir;
  const std::vector<std::string> packages = variants(dir);
  serve::ContextModel trained;
  trained.train(routine_log());
  const std::string model_path = dir.file("context.esp");
  trained.save(model_path);
  const std::string log_path = dir.file("requests.jsonl");

  serve::ServerOptions options;
  options.context_model = model_path;
  options.context_log = log_path;
  options.memory_budget_bytes = 64 << 20;
  std::vector<serve::ModelSpec> specs;
  for (int k = 0; k < 4; ++k) specs.push_back(spec("lenet" + std::to_string(k), packages[static_cast<std::size_t>(k)]));
  Running running(options, specs);
  httplib::Client c = running.client();

  // Recommend: a park morning ranks lenet1 first and plans to preload it.
  int status = 0;
  json answer = post_json(c, "/api/v1/recommend",
                          json{{"time", "2026-12-07T08:20:00Z"}, {"location", "park"}, {"app", "lens"}}.dump(), status);
  ASSERT_EQ(status, 200) << answer.dump();
  ASSERT_FALSE(answer["models"].empty());
  EXPECT_EQ(answer["models"][0]["name"], "lenet1");
  EXPECT_TRUE(answer["preload"].is_array());
  EXPECT_EQ(answer["preload"][0], "lenet1");
  answer = post_json(c, "/api/v1/recommend", json{{"time", "2026-12-07T20:20:00Z"}, {"location", "home"}}.dump(), status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(answer["models"][0]["name"], "lenet2");
  // Bad bodies: 400 naming the field.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"time\": \"yesterday\"}", "time"},
      {"{\"recent\": [\"cat\", 3]}", "recent[1]"},
      {"{\"location\": 5}", "location"},
      {"{\"top\": 0}", "top"},
      {"{\"budget_bytes\": \"lots\"}", "budget_bytes"},
      {"[1, 2]", ""},
      {"{not json", ""},
  };
  for (const auto& [body, field] : bad) {
    const json error = post_json(c, "/api/v1/recommend", body, status);
    EXPECT_EQ(status, 400) << body;
    EXPECT_EQ(error.value("field", ""), field) << body;
    EXPECT_FALSE(error.value("error", "").empty()) << body;
  }

  // Preloading: nothing resident yet; a park-morning request for lenet0 makes lenet1 resident before
  // anyone asked for it.
  EXPECT_TRUE(running.server().resident_models().empty());
  const std::string morning = json{{"time", "2026-12-07T08:25:00Z"}, {"location", "park"}, {"app", "lens"}}.dump();
  auto reply = c.Post("/v2/models/lenet0/infer", httplib::Headers{{"X-Espresso-Context", morning}},
                      infer_body("data", digit(0)), "application/json");
  ASSERT_TRUE(reply);
  ASSERT_EQ(reply->status, 200) << reply->body;
  EXPECT_TRUE(wait_for([&] { return contains(running.server().resident_models(), "lenet1"); }));
  const std::string text = c.Get("/metrics")->body;
  EXPECT_GE(metric(text, "espresso_context_preloads_total "), 1);
  EXPECT_EQ(metric(text, "espresso_context_logged_total "), 1);
  EXPECT_FALSE(contains(running.server().resident_models(), "lenet3"));

  // The log: one line per request with a context (this one), none for a request without.
  reply = c.Post("/v2/models/lenet3/infer", infer_body("data", digit(1)), "application/json");
  ASSERT_EQ(reply->status, 200);
  // A bad context header: 400 naming header and field, nothing logged.
  reply = c.Post("/v2/models/lenet0/infer", httplib::Headers{{"X-Espresso-Context", "{\"time\": []}"}},
                 infer_body("data", digit(0)), "application/json");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status, 400);
  EXPECT_EQ(json::parse(reply->body).value("field", ""), "X-Espresso-Context.time");
  const std::vector<serve::Observation> logged = serve::read_request_log(log_path);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0].model, "lenet0");
  EXPECT_EQ(logged[0].context.location, "park");
  EXPECT_EQ(logged[0].context.app, "lens");
  EXPECT_NEAR(logged[0].context.hour_of_day(), 8.0 + 25.0 / 60.0, 1e-9);
  // The image route logs too.
  const std::string evening = json{{"time", "2026-12-07T20:05:00Z"}, {"location", "home"}}.dump();
  static const data::LabeledImages digits = data::load_mnist((data() / "mnist").string(), data::Split::test);
  const std::string png_path = dir.file("digit.png");
  ASSERT_NE(stbi_write_png(png_path.c_str(), 28, 28, 1, digits.image(2), 28), 0);
  reply = c.Post("/v1/classify/lenet0", httplib::Headers{{"X-Espresso-Context", evening}},
                 testing::read_bytes(png_path), "image/png");
  ASSERT_TRUE(reply);
  ASSERT_EQ(reply->status, 200) << reply->body;
  ASSERT_EQ(serve::read_request_log(log_path).size(), 2u);
  EXPECT_EQ(serve::read_request_log(log_path)[1].context.location, "home");
}

TEST_F(Serve, ContextModelRetrainsFromTheLog) {
  TempDir dir;
  const std::vector<std::string> packages = variants(dir);
  const std::string log_path = dir.file("requests.jsonl");
  {
    serve::RequestLog log(log_path);
    for (const serve::Observation& o : routine_log()) log.append(o);
  }
  serve::ServerOptions options;
  options.context_log = log_path;
  options.retrain_every = 2;
  std::vector<serve::ModelSpec> specs;
  for (int k = 0; k < 3; ++k) specs.push_back(spec("lenet" + std::to_string(k), packages[static_cast<std::size_t>(k)]));
  Running running(options, specs);
  httplib::Client c = running.client();
  int status = 0;
  const std::string morning = json{{"time", "2026-12-07T08:25:00Z"}, {"location", "park"}, {"app", "lens"}}.dump();
  // No model yet: 503 saying how to get one.
  json answer = post_json(c, "/api/v1/recommend", morning, status);
  EXPECT_EQ(status, 503);
  EXPECT_NE(answer.value("error", "").find("--context-model"), std::string::npos);
  for (int i = 0; i < 2; ++i) {
    auto reply = c.Post("/v2/models/lenet0/infer", httplib::Headers{{"X-Espresso-Context", morning}},
                        infer_body("data", digit(0)), "application/json");
    ASSERT_EQ(reply->status, 200);
  }
  ASSERT_TRUE(wait_for([&] { return running.server().context_stats().retrainings >= 1; }, std::chrono::seconds(60)));
  answer = post_json(c, "/api/v1/recommend", morning, status);
  ASSERT_EQ(status, 200) << answer.dump();
  EXPECT_EQ(answer["models"][0]["name"], "lenet1");
  // --retrain-every needs a log.
  serve::ServerOptions no_log;
  no_log.retrain_every = 5;
  EXPECT_THROW(serve::Server(no_log, {spec("lenet0", packages[0])}), ServeError);
}

TEST_F(Serve, BackPressureAnswers429WithRetryAfter) {
  serve::ServerOptions options;
  options.max_concurrency = 2;
  options.max_batch = 64;
  options.max_queue_delay = std::chrono::milliseconds(1500);
  Running running(options, {spec("lenet", lenet(), lenet_weights())});
  {
    httplib::Client c = running.client();
    int status = 0;
    post_json(c, "/v2/models/lenet/infer", infer_body("data", digit(0)), status);  // loaded before the burst
    ASSERT_EQ(status, 200);
  }
  constexpr int kClients = 8;
  std::vector<std::future<std::pair<int, std::string>>> answers;
  for (int i = 0; i < kClients; ++i) {
    answers.push_back(std::async(std::launch::async, [&, i] {
      httplib::Client c = running.client();
      auto res = c.Post("/v2/models/lenet/infer", infer_body("data", digit(i)), "application/json");
      if (!res) return std::make_pair(-1, std::string());
      return std::make_pair(res->status, res->get_header_value("Retry-After"));
    }));
  }
  int ok = 0;
  int refused = 0;
  for (auto& answer : answers) {
    const auto [status, retry_after] = answer.get();
    if (status == 200) ++ok;
    if (status == 429) {
      ++refused;
      EXPECT_EQ(retry_after, "1");
    }
  }
  EXPECT_EQ(ok + refused, kClients) << "a request failed other than with 429";
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1);
  httplib::Client c = running.client();
  int status = 0;
  post_json(c, "/v2/models/lenet/infer", infer_body("data", digit(1)), status);
  EXPECT_EQ(status, 200);
  EXPECT_GE(metric(c.Get("/metrics")->body, "espresso_requests_total{model=\"lenet\",status=\"429\"}"), 1);
}

TEST_F(Serve, StopFinishesTheRequestsInFlight) {
  serve::ServerOptions options;
  options.max_batch = 64;
  options.max_queue_delay = std::chrono::milliseconds(1000);
  auto running = std::make_unique<Running>(
      options, std::vector<serve::ModelSpec>{spec("lenet", lenet(), lenet_weights())});
  {
    httplib::Client c = running->client();
    int status = 0;
    post_json(c, "/v2/models/lenet/infer", infer_body("data", digit(0)), status);
    ASSERT_EQ(status, 200);
  }
  constexpr int kClients = 4;
  std::vector<std::future<std::pair<int, json>>> answers;
  for (int i = 0; i < kClients; ++i) {
    answers.push_back(std::async(std::launch::async, [&, i] {
      httplib::Client c = running->client();
      int status = 0;
      json reply = post_json(c, "/v2/models/lenet/infer", infer_body("data", digit(i)), status);
      return std::make_pair(status, reply);
    }));
  }
  // Stop once all four are queued, waiting for their batch to fill.
  for (int wait = 0; wait < 1000; ++wait) {
    auto metrics = running->client().Get("/metrics");
    if (metrics && metric(metrics->body, "espresso_requests_in_flight ") == kClients) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int port = running->port();
  const auto start = std::chrono::steady_clock::now();
  running->server().stop();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  for (int i = 0; i < kClients; ++i) {
    const auto [status, reply] = answers[static_cast<std::size_t>(i)].get();
    ASSERT_EQ(status, 200) << "request " << i << " in flight was dropped: " << reply.dump();
    expect_near(data_of(reply["outputs"][0]), direct(lenet(), lenet_weights(), "data", digit(i))["prob"],
                1e-5, "in flight");
  }
  httplib::Client late("127.0.0.1", port);
  late.set_connection_timeout(1, 0);
  EXPECT_FALSE(late.Get("/v2/health/live")) << "the server still accepts connections after stop()";
  running.reset();
}

TEST_F(Serve, CliServesAndStopsOnSigterm) {
  const std::string command = testing::espresso_cli() +
                              " serve --listen 127.0.0.1:0 --models lenet=" + lenet() + "," + lenet_weights();
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  FILE* lines = ::fdopen(out[0], "r");
  char first[256] = {};
  ASSERT_NE(std::fgets(first, sizeof first, lines), nullptr);
  std::smatch match;
  const std::string text = first;
  ASSERT_TRUE(std::regex_search(text, match, std::regex(R"(^listening on 127\.0\.0\.1:(\d+) )"))) << text;
  httplib::Client c("127.0.0.1", std::stoi(match[1]));
  c.set_read_timeout(30, 0);
  auto res = c.Post("/v2/models/lenet/infer", infer_body("data", digit(9)), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(lines);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

}  // namespace
}  // namespace espresso
