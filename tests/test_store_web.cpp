// The store server's web page and its APIs (docs/web.md): the embedded files at "/", signature status on
// GET /api/v1/models/NAME, and POST /api/v1/models/NAME/classify on real MNIST test digits (checked
// against the data set's labels), with its 4xx answers naming the field.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "espresso/data.h"
#include "espresso/import.h"
#include "espresso/package.h"
#include "espresso/store.h"
#include "espresso/web_assets.h"
#include "test_support.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

namespace espresso {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TempDir;

std::string png_of(const std::uint8_t* pixels, int width, int height) {
  std::string out;
  stbi_write_png_to_func([](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<std::size_t>(size));
  }, &out, width, height, 1, pixels, width);
  return out;
}

class StoreWeb : public testing::SharedDataTest {
 protected:
  void SetUp() override {
    testing::SharedDataTest::SetUp();
    if (IsSkipped()) return;
    const fs::path data = testing::shared_data_dir();
    Graph graph = load_model((data / "caffe/lenet/lenet.prototxt").string(),
                             (data / "caffe/lenet/lenet_iter_10000.caffemodel").string());
    graph.metadata.name = "lenet";
    graph.metadata.task = "classification";
    graph.metadata.preprocessing.scale = 0.00390625;
    for (int i = 0; i < 10; ++i) graph.metadata.labels.push_back("digit " + std::to_string(i));
    lenet_ = dir_.file("lenet.esp");
    save_package(graph, lenet_);
    graph.metadata.task = "detection";  // the same net, but its package says it is no classifier
    detector_ = dir_.file("detector.esp");
    save_package(graph, detector_);

    store::ServerOptions options;
    options.root = dir_.file("root");
    options.port = 0;
    options.threads = 4;
    options.max_image_bytes = 64 << 10;
    server_ = std::make_unique<store::Server>(options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    registry_ = "127.0.0.1:" + std::to_string(port_);
    store::ClientOptions client_options;
    client_options.cache = dir_.file("cache");
    client_ = std::make_unique<store::Client>(client_options);
    key_ = dir_.file("key");
    store::generate_key(key_);
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
  }
  store::Reference ref(const std::string& text) const { return store::Reference::parse(registry_ + "/" + text); }

  TempDir dir_;
  std::string lenet_, detector_, key_, registry_;
  int port_ = 0;
  std::unique_ptr<store::Server> server_;
  std::thread thread_;
  std::unique_ptr<store::Client> client_;
};

json error_of(const httplib::Result& r) {
  EXPECT_TRUE(r);
  if (!r) return json::object();
  const json body = json::parse(r->body, nullptr, false);
  EXPECT_TRUE(body.is_object()) << r->body;
  if (!body.is_object() || !body.contains("errors")) return json::object();
  return body["errors"][0];
}

TEST_F(StoreWeb, ServesThePageAndItsFiles) {
  httplib::Client http("127.0.0.1", port_);
  const auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type").rfind("text/html", 0), 0u);
  EXPECT_NE(page->body.find("<script src=\"app.js\""), std::string::npos);
  for (const web::Asset& asset : web::assets()) {
    const auto file = http.Get(std::string(asset.path));
    ASSERT_TRUE(file) << asset.path;
    EXPECT_EQ(file->status, 200) << asset.path;
    EXPECT_EQ(file->body, std::string(asset.bytes)) << asset.path;
  }
  // The page asks only for the three APIs, through relative URLs.
  const web::Asset* script = web::find_asset("/app.js");
  ASSERT_NE(script, nullptr);
  const std::string js(script->bytes);
  EXPECT_EQ(js.find("fetch('/"), std::string::npos);
  EXPECT_EQ(js.find("http://"), std::string::npos);
  EXPECT_EQ(http.Get("/nothing.html")->status, 404);
  EXPECT_EQ(http.Get("/%2e%2e/catalog.db")->status, 400);
}

TEST_F(StoreWeb, ClassifiesRealDigitsAndNamesTheFieldOfEachRefusal) {
  store::PushOptions sign;
  sign.sign_key = key_;
  client_->push(lenet_, ref("vision/lenet:1.0"), sign);
  client_->push(lenet_, ref("vision/lenet:copy"));
  client_->push(detector_, ref("vision/detector:1"));

  httplib::Client http("127.0.0.1", port_);
  const data::LabeledImages digits = data::load_mnist((testing::shared_data_dir() / "mnist").string(), data::Split::test);
  int correct = 0;
  for (int i = 0; i < 10; ++i) {
    const auto r = http.Post("/api/v1/models/vision/lenet/classify?version=1.0&top=3",
                             png_of(digits.image(i), 28, 28), "image/png");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json answer = json::parse(r->body);
    ASSERT_EQ(answer["top"].size(), 3u);
    const int label = digits.labels[static_cast<std::size_t>(i)];
    correct += answer["top"][0]["index"] == label;
    EXPECT_EQ(answer["top"][0]["label"], "digit " + answer["top"][0]["index"].dump());
    EXPECT_GE(answer["top"][0]["probability"].get<double>(), answer["top"][1]["probability"].get<double>());
    EXPECT_GT(answer["milliseconds"].get<double>(), 0.0);
    EXPECT_EQ(answer["version"], "1.0");
  }
  EXPECT_GE(correct, 9);
  // The multipart form's field "image" works the same.
  httplib::MultipartFormDataItems form = {{"image", png_of(digits.image(0), 28, 28), "digit.png", "image/png"}};
  const auto multipart = http.Post("/api/v1/models/vision/lenet/classify", form);
  ASSERT_TRUE(multipart);
  ASSERT_EQ(multipart->status, 200) << multipart->body;
  EXPECT_EQ(json::parse(multipart->body)["top"][0]["index"], digits.labels[0]);

  const std::string digit = png_of(digits.image(0), 28, 28);
  const auto refused = [&](const std::string& path, const std::string& body, int status, const std::string& field) {
    const auto r = http.Post(path, body, "application/octet-stream");
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, status) << path << ": " << r->body;
    EXPECT_EQ(error_of(r)["field"], field) << path << ": " << r->body;
  };
  refused("/api/v1/models/vision/lenet/classify", "not an image", 400, "image");
  refused("/api/v1/models/vision/lenet/classify", "", 400, "image");
  refused("/api/v1/models/vision/lenet/classify", std::string(70 << 10, 'x'), 413, "image");
  refused("/api/v1/models/vision/absent/classify", digit, 404, "name");
  refused("/api/v1/models/vision/lenet/classify?version=9.9", digit, 404, "version");
  refused("/api/v1/models/vision/lenet/classify?top=0", digit, 400, "top");
  refused("/api/v1/models/vision/detector/classify", digit, 422, "name");
  // A 40000 x 40000 PNG header: refused before decoding.
  const std::string bomb("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x9c\x40\0\0\x9c\x40\x08\0\0\0\0\0\0\0\0", 33);
  refused("/api/v1/models/vision/lenet/classify", bomb, 413, "image");
  // The server keeps serving.
  const auto after = http.Post("/api/v1/models/vision/lenet/classify", digit, "image/png");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);

  // Signature status: the signed release verifies; the release pushed without --sign is unsigned.
  const auto model = http.Get("/api/v1/models/vision/lenet");
  ASSERT_TRUE(model);
  const json answer = json::parse(model->body);
  std::map<std::string, json> by_version;
  for (const json& v : answer["versions"]) by_version[v["version"]] = v["signature"];
  EXPECT_EQ(by_version["1.0"]["status"], "verified") << model->body;
  EXPECT_EQ(by_version["1.0"]["key_id"], store::key_id(key_ + ".pub"));
  EXPECT_EQ(by_version["copy"]["status"], "unsigned") << model->body;
  const json detector = json::parse(http.Get("/api/v1/models/vision/detector")->body);
  EXPECT_EQ(detector["signature"]["status"], "unsigned") << detector.dump();

  // A signature document whose bytes were changed on the server's disk no longer verifies.
  const fs::path blobs = fs::path(dir_.file("root")) / "blobs" / "sha256";
  const std::string signature_digest = by_version["1.0"]["signature_digest"];
  const json signature_manifest = json::parse(testing::read_bytes((blobs / signature_digest.substr(7)).string()));
  const fs::path document_path = blobs / signature_manifest["layers"][0]["digest"].get<std::string>().substr(7);
  json document = json::parse(testing::read_bytes(document_path.string()));
  std::string forged = document["signature"];
  forged[0] = forged[0] == '0' ? '1' : '0';
  document["signature"] = forged;
  fs::permissions(document_path, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(document_path, std::ios::trunc) << document.dump();
  const json tampered = json::parse(http.Get("/api/v1/models/vision/lenet")->body);
  for (const json& v : tampered["versions"]) {
    if (v["version"] == "1.0") {
      EXPECT_EQ(v["signature"]["status"], "invalid") << v.dump();
    }
  }
}

}  // namespace
}  // namespace espresso
