// The model store with real processes on loopback: our server (`espresso store serve`), our client
// verbs, Docker's reference registry and skopeo. Every process is started here on a free port and
// killed at the end of its test; each wait is bounded.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "espresso/espresso.h"
#include "espresso/import.h"
#include "espresso/package.h"
#include "espresso/store.h"
#include "store/auth.h"
#include "store/trust.h"
#include "test_support.h"

namespace espresso {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TempDir;

// ---- processes and raw HTTP -------------------------------------------------------------------------

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A child process with its stdout on a pipe; killed (SIGKILL) and reaped when it goes out of scope.
class Process {
 public:
  explicit Process(const std::vector<std::string>& argv, bool quiet_stderr = false,
                   const std::vector<std::string>& env = {}) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      if (quiet_stderr) {
        const int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, STDERR_FILENO);
      }
      ::close(out[0]);
      ::close(out[1]);
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~Process() {
    kill(SIGKILL);
    if (out_ >= 0) ::close(out_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // The first line the process prints, waiting at most `seconds`; "" on timeout or exit.
  std::string first_line(int seconds) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char c;
      if (::read(out_, &c, 1) != 1) return "";
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }
  void kill(int signal) {
    if (pid_ <= 0) return;
    ::kill(pid_, signal);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

struct RawResponse {
  int status = 0;  // 0: no answer (the server closed the connection)
  std::string head;
  std::string body;
};

// Sends bytes as they are (so requests can lie about their length) and reads until the server closes.
// `close_write` half-closes after sending (a client that stops mid-body); httplib then drops the
// connection without answering.
RawResponse raw_http(int port, const std::string& request, bool close_write = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  RawResponse response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return response;
  }
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  if (close_write) ::shutdown(fd, SHUT_WR);
  std::string all;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) break;
    all.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) == 0 && end != std::string::npos) {
    response.status = std::stoi(all.substr(9, 3));
    response.head = all.substr(0, end);
    response.body = all.substr(end + 4);
  }
  return response;
}

std::string header(const RawResponse& r, const std::string& name) {
  std::string head = r.head;
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string key = "\r\n" + name + ":";
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::size_t at = lower.find(key);
  if (at == std::string::npos) return "";
  std::size_t start = at + key.size();
  while (start < head.size() && head[start] == ' ') ++start;
  return head.substr(start, head.find("\r\n", start) - start);
}

std::string request(const std::string& method, const std::string& path, const std::string& body = "",
                    const std::string& extra_headers = "") {
  return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

struct CliResult {
  int rc = -1;
  std::string output;
};

// The CLI with `env` prepended (VAR=value ...), bounded by `timeout`; stdout and stderr together.
// A shell command's exit status and its output (stdout and stderr together).
CliResult shell(const std::string& command) {
  CliResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

CliResult cli(const std::string& env, const std::string& args, int seconds = 120) {
  return shell("env " + env + " timeout " + std::to_string(seconds) + " " + testing::espresso_cli() + " " + args);
}

std::string read_all(const fs::path& path) { return testing::read_bytes(path.string()); }

void flip_byte(const fs::path& path, std::uint64_t offset) {
  ::chmod(path.c_str(), 0644);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x5a));
}

// Our server on a free port, its root in a temp dir.
class StoreServerProcess {
 public:
  explicit StoreServerProcess(const fs::path& root, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {testing::espresso_cli(), "store", "serve", "--root", root.string(), "--listen",
                                     "127.0.0.1:0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<Process>(argv);
    const std::string line = process_->first_line(20);
    const std::size_t colon = line.find("127.0.0.1:");
    if (colon != std::string::npos) port_ = std::stoi(line.substr(colon + 10));
  }
  int port() const { return port_; }
  std::string registry() const { return "127.0.0.1:" + std::to_string(port_); }
  void kill9() { process_->kill(SIGKILL); }

 private:
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

// Docker's reference registry (Debian's docker-registry) with filesystem storage in a temp dir. With
// `access_log`, every request it answers is a line in DIR/access.log (see requests()).
class DockerRegistryProcess {
 public:
  explicit DockerRegistryProcess(const fs::path& dir, bool access_log = false) : dir_(dir) {
    port_ = free_port();
    fs::create_directories(dir / "storage");
    std::ofstream(dir / "config.yml") << "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: "
                                      << (access_log ? "false" : "true") << "\n"
                                      << "storage:\n  filesystem:\n    rootdirectory: " << (dir / "storage").string()
                                      << "\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:" << port_ << "\n";
    const std::string command = "/usr/bin/docker-registry serve " + (dir / "config.yml").string();
    process_ = access_log ? std::make_unique<Process>(std::vector<std::string>{"/bin/sh", "-c", "exec " + command + " >" +
                                                                                                 (dir / "access.log").string() + " 2>&1"})
                          : std::make_unique<Process>(std::vector<std::string>{"/usr/bin/docker-registry", "serve", (dir / "config.yml").string()}, true);
    for (int i = 0; i < 100; ++i) {
      if (raw_http(port_, request("GET", "/v2/")).status == 200) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  bool ready() const { return ready_; }
  std::string registry() const { return "127.0.0.1:" + std::to_string(port_); }
  void stop() { process_.reset(); }
  // Requests in the access log whose request line holds `text` (e.g. "GET /v2/vision/lenet/").
  int requests(const std::string& text) const {
    std::ifstream log(dir_ / "access.log");
    int count = 0;
    for (std::string line; std::getline(log, line);) count += line.find("\"" + text) != std::string::npos ? 1 : 0;
    return count;
  }
  // The file that holds a blob in the filesystem storage driver's layout.
  fs::path blob_file(const std::string& digest) const {
    const std::string hex = digest.substr(7);
    return dir_ / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex.substr(0, 2) / hex / "data";
  }

 private:
  fs::path dir_;
  std::unique_ptr<Process> process_;
  int port_ = 0;
  bool ready_ = false;
};

// LeNet from the shared data as an .esp package with a card's worth of metadata.
std::string make_lenet_package(const TempDir& dir, const std::string& description = "LeNet handwritten digits") {
  const fs::path lenet = testing::shared_data_dir() / "caffe" / "lenet";
  Graph graph = load_model((lenet / "lenet.prototxt").string(), (lenet / "lenet_iter_10000.caffemodel").string());
  graph.metadata.name = "lenet";
  graph.metadata.version = "1.0";
  graph.metadata.description = description;
  graph.metadata.task = "classification";
  graph.metadata.license = "BSD-3-Clause";
  graph.metadata.labels = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  graph.metadata.metrics = {{"mnist_top1", 0.9905}};
  const std::string path = dir.file("lenet.esp");
  save_package(graph, path);
  return path;
}

json parse_json_line(const std::string& output) {
  const std::size_t start = output.find('{');
  return json::parse(start == std::string::npos ? std::string("null") : output.substr(start), nullptr, false);
}

// ---- names ------------------------------------------------------------------------------------------

TEST(StoreNames, RepositoriesTagsAndDigestsAreValidatedStrictly) {
  for (const char* good : {"lenet", "vision/lenet", "a.b_c__d--e/f0", "x/y/z"}) EXPECT_TRUE(store::valid_repository(good)) << good;
  for (const std::string& bad : std::vector<std::string>{"", "..", "a/../b", "/abs", "abs/", "a//b", "a\\b", std::string("a\0b", 3), "%2e%2e",
                                "a/%2e%2e/b", "UPPER", "a..b", "-a", "a_-b", "a/./b"})
    EXPECT_FALSE(store::valid_repository(bad)) << bad;
  EXPECT_TRUE(store::valid_tag("1.0"));
  EXPECT_TRUE(store::valid_tag("v2_rc-1"));
  for (const char* bad : {"", ".hidden", "-x", "a/b", "a..b/"}) EXPECT_FALSE(store::valid_tag(bad)) << bad;
  EXPECT_FALSE(store::valid_tag(std::string(129, 'a')));
  EXPECT_TRUE(store::valid_digest("sha256:" + std::string(64, 'a')));
  EXPECT_FALSE(store::valid_digest("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(store::valid_digest("sha512:" + std::string(64, 'a')));
  EXPECT_FALSE(store::valid_digest("sha256:" + std::string(63, 'a')));
}

TEST(StoreNames, ReferencesParseAndRefuseTraversal) {
  const store::Reference r = store::Reference::parse("127.0.0.1:5000/vision/lenet:1.0");
  EXPECT_EQ(r.registry, "127.0.0.1:5000");
  EXPECT_EQ(r.name, "vision/lenet");
  EXPECT_EQ(r.tag, "1.0");
  const store::Reference d = store::Reference::parse("localhost/lenet@sha256:" + std::string(64, 'b'));
  EXPECT_EQ(d.registry, "localhost");
  EXPECT_EQ(d.digest, "sha256:" + std::string(64, 'b'));
  EXPECT_EQ(store::Reference::parse("lenet", "reg.example:1").str(), "reg.example:1/lenet:latest");
  EXPECT_THROW(store::Reference::parse("lenet:1.0"), StoreError);  // no registry anywhere
  for (const std::string& bad : std::vector<std::string>{"r.io/../etc:1", "r.io//abs:1", "r.io/a\\b:1", "r.io/%2e%2e/x:1",
                                std::string("r.io/a\0b:1", 11), "r.io/a:../x", "r.io/a@sha256:zz"})
    EXPECT_THROW(store::Reference::parse(bad), StoreError) << bad;
  // Files are never taken for references.
  EXPECT_FALSE(store::Reference::looks_like("lenet.esp"));
  EXPECT_FALSE(store::Reference::looks_like("models/lenet.onnx"));
  EXPECT_FALSE(store::Reference::looks_like("/abs/lenet.prototxt"));
  EXPECT_TRUE(store::Reference::looks_like("127.0.0.1:5000/lenet:1"));
  EXPECT_TRUE(store::Reference::looks_like("lenet:1.0"));
}

TEST(StoreDigest, MatchesKnownSha256Vectors) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(store::sha256_digest("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(store::sha256_digest(""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// ---- the server's protocol, byte by byte -------------------------------------------------------------

class StoreProtocol : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(dir_.path()) / "root";
    server_ = std::make_unique<StoreServerProcess>(root_, std::vector<std::string>{"--max-manifest-bytes", "4096",
                                                                                    "--upload-ttl", "2"});
    ASSERT_GT(server_->port(), 0) << "the server did not start";
    port_ = server_->port();
  }
  // Uploads a blob monolithically; returns its digest.
  std::string upload(const std::string& repo, const std::string& bytes) {
    const std::string digest = store::sha256_digest(bytes);
    const RawResponse r = raw_http(port_, request("POST", "/v2/" + repo + "/blobs/uploads/?digest=" + digest, bytes));
    EXPECT_EQ(r.status, 201) << r.body;
    return digest;
  }
  std::string manifest_json(const std::string& config_digest, std::size_t config_size, const std::string& layer_digest,
                            std::size_t layer_size, const std::string& title = "model.esp") {
    return json({{"schemaVersion", 2},
                 {"mediaType", store::kManifestMediaType},
                 {"artifactType", "application/x-test"},
                 {"config", {{"mediaType", "application/x-test-config"}, {"digest", config_digest}, {"size", config_size}}},
                 {"layers", json::array({{{"mediaType", "application/octet-stream"},
                                          {"digest", layer_digest},
                                          {"size", layer_size},
                                          {"annotations", {{"org.opencontainers.image.title", title}}}}})}})
        .dump();
  }
  bool alive() { return raw_http(port_, request("GET", "/v2/")).status == 200; }

  TempDir dir_;
  fs::path root_;
  std::unique_ptr<StoreServerProcess> server_;
  int port_ = 0;
};

TEST_F(StoreProtocol, HostileNamesAreRefusedWith400AndNothingIsWrittenOutsideTheRoot) {
  const std::vector<std::string> paths = {
      "/v2/../../etc/manifests/1", "/v2/%2e%2e/%2e%2e/x/manifests/1", "/v2/a%2fb/manifests/1",
      "/v2/a%5cb/manifests/1",     "/v2/a\\b/manifests/1",             "/v2/a%00b/manifests/1",
      "/v2//abs/manifests/1",      "/v2/Upper/manifests/1",            "/v2/a/..%2f..%2fx/blobs/uploads/"};
  for (const std::string& path : paths) {
    EXPECT_EQ(raw_http(port_, request("GET", path)).status, 400) << "GET " << path;
    EXPECT_EQ(raw_http(port_, request("PUT", path, "{}", "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n")).status, 400)
        << "PUT " << path;
    EXPECT_EQ(raw_http(port_, request("POST", path, "x")).status, 400) << "POST " << path;
  }
  // The API's model names are checked the same way.
  EXPECT_EQ(raw_http(port_, request("GET", "/api/v1/models/%2e%2e%2fetc")).status, 400);
  // Only the root was created in the temp dir, and inside it only the store's own layout.
  std::vector<std::string> top;
  for (const auto& e : fs::directory_iterator(dir_.path())) top.push_back(e.path().filename().string());
  EXPECT_EQ(top, std::vector<std::string>{"root"});
  for (const auto& e : fs::directory_iterator(root_)) {
    const std::string name = e.path().filename().string();
    EXPECT_TRUE(name == "blobs" || name == "uploads" || name == "tmp" || name.rfind("catalog.db", 0) == 0) << name;
  }
  EXPECT_TRUE(alive());
}

TEST_F(StoreProtocol, BlobsUploadMonolithicallyAndInChunksAndServeRanges) {
  std::string bytes(300000, '\0');
  std::mt19937 random(7);
  for (char& c : bytes) c = static_cast<char>(random());
  const std::string digest = upload("t/blob", bytes);
  RawResponse got = raw_http(port_, request("GET", "/v2/t/blob/blobs/" + digest));
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body, bytes);
  EXPECT_EQ(header(got, "Docker-Content-Digest"), digest);
  got = raw_http(port_, request("GET", "/v2/t/blob/blobs/" + digest, "", "Range: bytes=1000-1999\r\n"));
  EXPECT_EQ(got.status, 206);
  EXPECT_EQ(got.body, bytes.substr(1000, 1000));
  got = raw_http(port_, request("GET", "/v2/t/blob/blobs/" + digest, "", "Range: bytes=250000-\r\n"));
  EXPECT_EQ(got.status, 206);
  EXPECT_EQ(got.body, bytes.substr(250000));
  EXPECT_EQ(raw_http(port_, request("GET", "/v2/t/blob/blobs/" + digest, "", "Range: bytes=400000-\r\n")).status, 416);
  EXPECT_EQ(raw_http(port_, request("HEAD", "/v2/t/blob/blobs/" + digest)).status, 200);
  EXPECT_EQ(raw_http(port_, request("HEAD", "/v2/t/blob/blobs/sha256:" + std::string(64, '0'))).status, 404);

  // Chunked: POST, two PATCHes, a status query in between (the resume point), PUT with the digest.
  std::string other = bytes;
  std::reverse(other.begin(), other.end());
  const std::string other_digest = store::sha256_digest(other);
  RawResponse start = raw_http(port_, request("POST", "/v2/t/blob/blobs/uploads/"));
  ASSERT_EQ(start.status, 202);
  const std::string location = header(start, "Location");
  RawResponse patch = raw_http(port_, request("PATCH", location, other.substr(0, 100000), "Content-Range: 0-99999\r\n"));
  ASSERT_EQ(patch.status, 202) << patch.body;
  EXPECT_EQ(header(patch, "Range"), "0-99999");
  // A chunk that does not continue where the upload stands: 416, and the upload is unchanged.
  EXPECT_EQ(raw_http(port_, request("PATCH", location, other.substr(0, 10), "Content-Range: 5-14\r\n")).status, 416);
  RawResponse status = raw_http(port_, request("GET", location));
  EXPECT_EQ(status.status, 204);
  EXPECT_EQ(header(status, "Range"), "0-99999");
  ASSERT_EQ(raw_http(port_, request("PATCH", location, other.substr(100000), "Content-Range: 100000-299999\r\n")).status, 202);
  // The wrong digest is refused and the session is gone; the right one needs a fresh upload.
  EXPECT_EQ(raw_http(port_, request("PUT", location + "?digest=" + digest)).status, 400);
  EXPECT_EQ(raw_http(port_, request("HEAD", "/v2/t/blob/blobs/" + other_digest)).status, 404);
  start = raw_http(port_, request("POST", "/v2/t/blob/blobs/uploads/"));
  const std::string second = header(start, "Location");
  ASSERT_EQ(raw_http(port_, request("PATCH", second, other.substr(0, 5), "Content-Range: 0-4\r\n")).status, 202);
  const RawResponse done = raw_http(port_, request("PUT", second + "?digest=" + other_digest, other.substr(5)));
  ASSERT_EQ(done.status, 201) << done.body;
  got = raw_http(port_, request("GET", "/v2/t/blob/blobs/" + other_digest));
  EXPECT_EQ(got.body, other);
  // The stored file is named by its digest and holds exactly the bytes.
  EXPECT_EQ(read_all(root_ / "blobs" / "sha256" / other_digest.substr(7)), other);
}

TEST_F(StoreProtocol, BodiesShorterOrLongerThanDeclaredAreRefused) {
  const std::string bytes(1000, 'x');
  const std::string digest = store::sha256_digest(bytes);
  // Declared 1000, sent 500, then the client stops sending.
  std::string short_request = "POST /v2/t/len/blobs/uploads/?digest=" + digest +
                              " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + bytes.substr(0, 500);
  const RawResponse cut = raw_http(port_, short_request, true);
  EXPECT_TRUE(cut.status == 0 || cut.status == 400) << cut.status;
  EXPECT_EQ(raw_http(port_, request("HEAD", "/v2/t/len/blobs/" + digest)).status, 404);
  // Declared 1000, sent 2000 whose digest is given: the server reads 1000, which do not match.
  const std::string doubled = bytes + bytes;
  std::string long_request = "POST /v2/t/len/blobs/uploads/?digest=" + store::sha256_digest(doubled) +
                             " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + doubled;
  EXPECT_EQ(raw_http(port_, long_request).status, 400);
  EXPECT_EQ(raw_http(port_, request("HEAD", "/v2/t/len/blobs/" + store::sha256_digest(doubled))).status, 404);
  // A chunk whose Content-Range disagrees with its Content-Length.
  const std::string location = header(raw_http(port_, request("POST", "/v2/t/len/blobs/uploads/")), "Location");
  EXPECT_EQ(raw_http(port_, request("PATCH", location, bytes, "Content-Range: 0-499\r\n")).status, 400);
  // A short PATCH leaves the upload where it was.
  std::string short_patch = "PATCH " + location + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" +
                            bytes.substr(0, 300);
  raw_http(port_, short_patch, true);
  const RawResponse status = raw_http(port_, request("GET", location));
  EXPECT_EQ(status.status, 204);
  EXPECT_EQ(header(status, "Range"), "0-0");
  EXPECT_TRUE(alive());
}

TEST_F(StoreProtocol, ManifestsAreValidatedTaggedAtomicallyAndListed) {
  const std::string config = "{\"a\":1}";
  const std::string layer = "layer bytes";
  const std::string config_digest = upload("t/m", config);
  const std::string layer_digest = upload("t/m", layer);
  const std::string type = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
  // Oversized: 413 before the body is read, and after it when Content-Length is absent (chunked).
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/big", std::string(5000, ' '), type)).status, 413);
  std::string chunked = "PUT /v2/t/m/manifests/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + type +
                        "Transfer-Encoding: chunked\r\n\r\n1388\r\n" + std::string(5000, ' ') + "\r\n0\r\n\r\n";
  EXPECT_EQ(raw_http(port_, chunked).status, 413);
  // References to blobs the registry lacks, sizes that disagree, unsafe titles, broken JSON.
  const std::string missing = "sha256:" + std::string(64, 'c');
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/1", manifest_json(config_digest, config.size(), missing, 5), type)).status, 400);
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/1", manifest_json(config_digest, config.size(), layer_digest, 99), type)).status, 400);
  for (const std::string& title : std::vector<std::string>{"../../etc/passwd", "/etc/passwd", "a\\b", "..", std::string("a\0b", 3)}) {
    const RawResponse r = raw_http(port_, request("PUT", "/v2/t/m/manifests/1",
                                                  manifest_json(config_digest, config.size(), layer_digest, layer.size(), title), type));
    EXPECT_EQ(r.status, 400) << "title " << json(title).dump() << ": " << r.body;
  }
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/1", "{not json", type)).status, 400);
  // Fields of the wrong JSON type: 400 naming the field, not a 500 from the JSON library.
  for (const auto& [field, value] : std::vector<std::pair<std::string, json>>{
           {"mediaType", 5}, {"artifactType", json::array()}, {"schemaVersion", "2"}}) {
    json wrong = json::parse(manifest_json(config_digest, config.size(), layer_digest, layer.size()));
    wrong[field] = value;
    const RawResponse r = raw_http(port_, request("PUT", "/v2/t/m/manifests/1", wrong.dump(), type));
    EXPECT_EQ(r.status, 400) << field << ": " << r.body;
  }
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/bad..tag/x", "{}", type)).status, 404);
  // By digest, the digest must match the bytes.
  const std::string good = manifest_json(config_digest, config.size(), layer_digest, layer.size());
  EXPECT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/sha256:" + std::string(64, 'd'), good, type)).status, 400);
  RawResponse put = raw_http(port_, request("PUT", "/v2/t/m/manifests/1", good, type));
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(header(put, "Docker-Content-Digest"), store::sha256_digest(good));
  RawResponse got = raw_http(port_, request("GET", "/v2/t/m/manifests/1"));
  EXPECT_EQ(got.body, good);
  EXPECT_EQ(header(got, "Content-Type"), std::string(store::kManifestMediaType));
  // Moving the tag: the next GET sees the new manifest whole.
  const std::string moved = manifest_json(layer_digest, layer.size(), config_digest, config.size());
  ASSERT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/1", moved, type)).status, 201);
  EXPECT_EQ(raw_http(port_, request("GET", "/v2/t/m/manifests/1")).body, moved);
  EXPECT_EQ(raw_http(port_, request("GET", "/v2/t/m/manifests/" + store::sha256_digest(good))).body, good);
  ASSERT_EQ(raw_http(port_, request("PUT", "/v2/t/m/manifests/2", good, type)).status, 201);
  EXPECT_EQ(json::parse(raw_http(port_, request("GET", "/v2/t/m/tags/list")).body)["tags"], json::array({"1", "2"}));
  RawResponse page = raw_http(port_, request("GET", "/v2/t/m/tags/list?n=1"));
  EXPECT_EQ(json::parse(page.body)["tags"], json::array({"1"}));
  EXPECT_NE(header(page, "Link").find("last=1"), std::string::npos);
  EXPECT_EQ(raw_http(port_, request("GET", "/v2/t/none/tags/list")).status, 404);
  EXPECT_EQ(raw_http(port_, request("GET", "/v2/t/m/manifests/3")).status, 404);

  // Referrers: a manifest whose subject is `good` is listed for it, filtered by artifactType.
  json referrer = json::parse(good);
  referrer["artifactType"] = "application/x-signature";
  referrer["subject"] = {{"mediaType", store::kManifestMediaType}, {"digest", store::sha256_digest(good)}, {"size", good.size()}};
  const std::string referrer_bytes = referrer.dump();
  put = raw_http(port_, request("PUT", "/v2/t/m/manifests/" + store::sha256_digest(referrer_bytes), referrer_bytes, type));
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(header(put, "OCI-Subject"), store::sha256_digest(good));
  json index = json::parse(raw_http(port_, request("GET", "/v2/t/m/referrers/" + store::sha256_digest(good))).body);
  ASSERT_EQ(index["manifests"].size(), 1u);
  EXPECT_EQ(index["manifests"][0]["digest"], store::sha256_digest(referrer_bytes));
  EXPECT_EQ(index["manifests"][0]["artifactType"], "application/x-signature");
  index = json::parse(raw_http(port_, request("GET", "/v2/t/m/referrers/" + store::sha256_digest(good) + "?artifactType=x/none")).body);
  EXPECT_TRUE(index["manifests"].empty());
  EXPECT_TRUE(alive());
}

TEST_F(StoreProtocol, StaleUploadSessionsExpire) {
  const std::string location = header(raw_http(port_, request("POST", "/v2/t/old/blobs/uploads/")), "Location");
  ASSERT_FALSE(location.empty());
  ASSERT_EQ(raw_http(port_, request("PATCH", location, "abc", "Content-Range: 0-2\r\n")).status, 202);
  EXPECT_EQ(std::distance(fs::directory_iterator(root_ / "uploads"), fs::directory_iterator()), 1);
  // TTL 2 s, checked every second.
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  EXPECT_EQ(raw_http(port_, request("GET", location)).status, 404);
  EXPECT_EQ(raw_http(port_, request("PATCH", location, "def", "Content-Range: 3-5\r\n")).status, 404);
  EXPECT_EQ(std::distance(fs::directory_iterator(root_ / "uploads"), fs::directory_iterator()), 0);
}

TEST_F(StoreProtocol, SearchApiRefusesBadParameters) {
  for (const char* query : {"?cursor=abc", "?limit=0", "?limit=101", "?sort=random", "?max_bytes=-1", "?min_accuracy=high"})
    EXPECT_EQ(raw_http(port_, request("GET", std::string("/api/v1/models") + query)).status, 400) << query;
  const RawResponse empty = raw_http(port_, request("GET", "/api/v1/models?q=anything"));
  EXPECT_EQ(empty.status, 200);
  EXPECT_TRUE(json::parse(empty.body)["models"].empty());
  EXPECT_EQ(raw_http(port_, request("GET", "/api/v1/models/none")).status, 404);
  // FTS5 syntax in the text is matched literally, never parsed as a query.
  EXPECT_EQ(raw_http(port_, request("GET", "/api/v1/models?q=%22%29%20OR%20NEAR%28")).status, 200);
}

// ---- client and server together ----------------------------------------------------------------------

class StoreRoundTrip : public testing::SharedDataTest {
 protected:
  void SetUp() override {
    testing::SharedDataTest::SetUp();
    if (IsSkipped()) return;
    package_ = make_lenet_package(dir_);
    root_ = fs::path(dir_.path()) / "root";
    server_ = std::make_unique<StoreServerProcess>(root_);
    ASSERT_GT(server_->port(), 0) << "the server did not start";
    cache_ = dir_.file("cache");
    env_ = "ESPRESSO_CACHE=" + cache_;
  }
  std::string ref(const std::string& name) const { return server_->registry() + "/" + name; }

  TempDir dir_;
  std::string package_;
  fs::path root_;
  std::unique_ptr<StoreServerProcess> server_;
  std::string cache_;
  std::string env_;
};

TEST_F(StoreRoundTrip, PushPullSearchShowAndThePulledModelComputesTheSame) {
  CliResult push = cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0") + " --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  const json pushed = parse_json_line(push.output);
  EXPECT_EQ(pushed["blobs_uploaded"], 2);
  // Pushing again sends nothing: the registry has every blob.
  const json again = parse_json_line(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0") + " --json").output);
  EXPECT_EQ(again["blobs_uploaded"], 0);
  EXPECT_EQ(again["digest"], pushed["digest"]);

  CliResult pull = cli(env_, "pull " + ref("vision/lenet:1.0") + " --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  const json pulled = parse_json_line(pull.output);
  EXPECT_EQ(pulled["digest"], pushed["digest"]);
  EXPECT_FALSE(pulled["from_cache"].get<bool>());
  const std::string cached = pulled["package"];
  EXPECT_EQ(read_all(cached), read_all(package_));
  // The same input through the original and the pulled package gives bit-identical outputs.
  Net original(load_model(package_));
  Net copy(load_model(cached));
  std::mt19937 random(3);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  Tensor input = Tensor::empty(Shape({2, 1, 28, 28}));
  for (std::int64_t i = 0; i < input.numel(); ++i) input.data<float>()[i] = pixel(random);
  const auto a = original.forward({{"data", input}});
  const auto b = copy.forward({{"data", input}});
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    ASSERT_EQ(tensor.numel(), b.at(name).numel());
    EXPECT_EQ(std::memcmp(tensor.data<float>(), b.at(name).data<float>(), sizeof(float) * static_cast<std::size_t>(tensor.numel())), 0) << name;
  }
  // A second pull downloads nothing; the CLI's model verbs take the reference directly.
  EXPECT_TRUE(parse_json_line(cli(env_, "pull " + ref("vision/lenet:1.0") + " --json").output)["from_cache"].get<bool>());
  const CliResult info_ref = cli(env_, "info " + ref("vision/lenet:1.0"));
  const CliResult info_file = cli(env_, "info " + package_);
  ASSERT_EQ(info_ref.rc, 0) << info_ref.output;
  EXPECT_EQ(info_ref.output.substr(info_ref.output.find('\n')), info_file.output.substr(info_file.output.find('\n')));

  // Search: full text with ranking, filters and the model page.
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("other/net:2") ).rc, 0);
  json found = parse_json_line(cli(env_, "search --registry " + server_->registry() + " handwritten --json").output);
  ASSERT_EQ(found["models"].size(), 2u);
  found = parse_json_line(cli(env_, "search --registry " + server_->registry() + " vision --json").output);
  ASSERT_EQ(found["models"].size(), 1u);
  EXPECT_EQ(found["models"][0]["name"], "vision/lenet");
  EXPECT_EQ(found["models"][0]["params"], 431080);  // LeNet's parameter count (Caffe's own tutorial)
  EXPECT_TRUE(parse_json_line(cli(env_, "search --registry " + server_->registry() + " --task detection --json").output)["models"].empty());
  EXPECT_TRUE(parse_json_line(cli(env_, "search --registry " + server_->registry() + " --max-bytes 1000 --json").output)["models"].empty());
  EXPECT_TRUE(parse_json_line(cli(env_, "search --registry " + server_->registry() + " --min-accuracy 0.999 --json").output)["models"].empty());
  EXPECT_EQ(parse_json_line(cli(env_, "search --registry " + server_->registry() + " --min-accuracy 0.99 --license bsd-3-clause --json").output)["models"].size(), 2u);
  json page = parse_json_line(cli(env_, "search --registry " + server_->registry() + " --limit 1 --json").output);
  ASSERT_EQ(page["models"].size(), 1u);
  ASSERT_TRUE(page["next_cursor"].is_string());
  json next = parse_json_line(cli(env_, "search --registry " + server_->registry() + " --limit 1 --cursor " +
                                            page["next_cursor"].get<std::string>() + " --json").output);
  ASSERT_EQ(next["models"].size(), 1u);
  EXPECT_NE(next["models"][0]["name"], page["models"][0]["name"]);
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.1")).rc, 0);
  const json shown = parse_json_line(cli(env_, "show " + ref("vision/lenet") + " --json").output);
  EXPECT_EQ(shown["latest"], "1.1");
  EXPECT_EQ(shown["versions"].size(), 2u);
  EXPECT_EQ(shown["card"]["labels"].size(), 10u);
  const CliResult list = cli(env_, "cache list");
  EXPECT_NE(list.output.find("vision/lenet:1.0"), std::string::npos) << list.output;
}

TEST_F(StoreRoundTrip, OfflineModeServesTheCacheAndNeverConnects) {
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0")).rc, 0);
  ASSERT_EQ(cli(env_, "pull " + ref("vision/lenet:1.0")).rc, 0);
  const std::string registry = server_->registry();
  server_->kill9();
  // The server is gone: only a client that never opens a socket can succeed here.
  const CliResult offline = cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + registry + "/vision/lenet:1.0 --json");
  ASSERT_EQ(offline.rc, 0) << offline.output;
  EXPECT_TRUE(parse_json_line(offline.output)["from_cache"].get<bool>());
  EXPECT_EQ(cli(env_ + " ESPRESSO_OFFLINE=1", "info " + registry + "/vision/lenet:1.0").rc, 0);
  const CliResult missing = cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + registry + "/vision/lenet:9");
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.output.find("ESPRESSO_OFFLINE"), std::string::npos) << missing.output;
  const CliResult push = cli(env_ + " ESPRESSO_OFFLINE=1", "push " + package_ + " " + registry + "/x:1");
  EXPECT_NE(push.output.find("ESPRESSO_OFFLINE"), std::string::npos) << push.output;
  // Without offline mode the dead server is a clear error.
  const CliResult online = cli(env_, "pull " + registry + "/vision/lenet:2");
  EXPECT_EQ(online.rc, 1);
  EXPECT_NE(online.output.find("error: registry " + registry), std::string::npos) << online.output;
}

TEST_F(StoreRoundTrip, TamperedBlobsInTheCacheAndOnTheServerAreDetected) {
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0")).rc, 0);
  const json pulled = parse_json_line(cli(env_, "pull " + ref("vision/lenet:1.0") + " --json").output);
  const std::string package_digest = store::sha256_file_digest(package_);
  const fs::path cached_blob = fs::path(cache_) / "blobs" / "sha256" / package_digest.substr(7);
  ASSERT_TRUE(fs::exists(cached_blob));
  flip_byte(cached_blob, 1000);
  // cache verify finds it; offline use refuses it; online, pull fetches a good copy again.
  CliResult verify = cli(env_, "cache verify");
  EXPECT_EQ(verify.rc, 1);
  EXPECT_NE(verify.output.find("BAD " + package_digest), std::string::npos) << verify.output;
  CliResult offline = cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + ref("vision/lenet:1.0"));
  EXPECT_EQ(offline.rc, 1);
  EXPECT_NE(offline.output.find("does not match"), std::string::npos) << offline.output;
  CliResult repaired = cli(env_, "pull " + ref("vision/lenet:1.0") + " --json");
  ASSERT_EQ(repaired.rc, 0) << repaired.output;
  EXPECT_EQ(store::sha256_file_digest(cached_blob), package_digest);
  EXPECT_EQ(cli(env_, "cache verify").rc, 0);

  // On the server: a fresh cache refuses the bytes and keeps nothing; fsck names the blob.
  const fs::path server_blob = root_ / "blobs" / "sha256" / package_digest.substr(7);
  flip_byte(server_blob, 2000);
  const std::string fresh = "ESPRESSO_CACHE=" + dir_.file("fresh");
  CliResult bad = cli(fresh, "pull " + ref("vision/lenet:1.0"));
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.output.find("tampered or corrupt on the server"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(fs::path(dir_.file("fresh")) / "blobs" / "sha256" / package_digest.substr(7)));
  CliResult fsck = cli("", "store fsck --root " + root_.string());
  EXPECT_EQ(fsck.rc, 1);
  EXPECT_NE(fsck.output.find("BAD " + package_digest), std::string::npos) << fsck.output;
  EXPECT_EQ(raw_http(server_->port(), request("GET", "/v2/")).status, 200);
}

TEST_F(StoreRoundTrip, AnInterruptedDownloadResumesFromWhereItStopped) {
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0")).rc, 0);
  const std::string bytes = read_all(package_);
  const std::string digest = store::sha256_digest(bytes);
  // What a killed pull leaves behind: the first 60 % of the package in the partial file.
  const fs::path partial = fs::path(cache_) / "partial" / "sha256" / digest.substr(7);
  fs::create_directories(partial.parent_path());
  const std::size_t kept = bytes.size() * 6 / 10;
  std::ofstream(partial, std::ios::binary) << bytes.substr(0, kept);
  const json pulled = parse_json_line(cli(env_, "pull " + ref("vision/lenet:1.0") + " --json").output);
  const std::uint64_t card_bytes = pulled["bytes_downloaded"].get<std::uint64_t>() - (bytes.size() - kept);
  EXPECT_LT(card_bytes, 4096u) << "the package's first 60 % was downloaded again";
  EXPECT_EQ(read_all(pulled["package"].get<std::string>()), bytes);
  EXPECT_FALSE(fs::exists(partial));
  // A partial file with wrong bytes costs one clean download, never a corrupt blob.
  const std::string other_cache = dir_.file("other");
  const fs::path bad_partial = fs::path(other_cache) / "partial" / "sha256" / digest.substr(7);
  fs::create_directories(bad_partial.parent_path());
  std::ofstream(bad_partial, std::ios::binary) << std::string(kept, 'z');
  const CliResult again = cli("ESPRESSO_CACHE=" + other_cache, "pull " + ref("vision/lenet:1.0") + " --json");
  ASSERT_EQ(again.rc, 0) << again.output;
  EXPECT_EQ(read_all(parse_json_line(again.output)["package"].get<std::string>()), bytes);
}

TEST_F(StoreRoundTrip, EightProcessesPullIntoOneCacheAndEachBlobArrivesOnce) {
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0")).rc, 0);
  std::vector<std::future<CliResult>> pulls;
  for (int i = 0; i < 8; ++i)
    pulls.push_back(std::async(std::launch::async, [&] { return cli(env_, "pull " + ref("vision/lenet:1.0") + " --json"); }));
  std::uint64_t downloaded = 0;
  for (auto& pull : pulls) {
    const CliResult r = pull.get();
    ASSERT_EQ(r.rc, 0) << r.output;
    downloaded += parse_json_line(r.output)["bytes_downloaded"].get<std::uint64_t>();
  }
  const std::string card = store::model_card(package_);
  // The package and the card, each once (the card the server holds is the one push computed).
  EXPECT_EQ(downloaded, fs::file_size(package_) + card.size());
  EXPECT_EQ(cli(env_, "cache verify").rc, 0);
  std::size_t partials = 0;
  for (const auto& e : fs::directory_iterator(fs::path(cache_) / "partial" / "sha256")) partials += e.is_regular_file();
  EXPECT_EQ(partials, 0u);
}

TEST_F(StoreRoundTrip, CachePruneKeepsWhatReferencesUse) {
  ASSERT_EQ(cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0")).rc, 0);
  ASSERT_EQ(cli(env_, "pull " + ref("vision/lenet:1.0")).rc, 0);
  const fs::path stray = fs::path(cache_) / "blobs" / "sha256" / std::string(64, 'e');
  std::ofstream(stray) << "orphan";
  const fs::path partial = fs::path(cache_) / "partial" / "sha256" / std::string(64, 'f');
  std::ofstream(partial) << "half";
  const CliResult prune = cli(env_, "cache prune");
  ASSERT_EQ(prune.rc, 0) << prune.output;
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_EQ(cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + ref("vision/lenet:1.0")).rc, 0);
}

TEST_F(StoreRoundTrip, SignedReleasesVerifyAndForgeriesAreRefused) {
  const std::string k1 = dir_.file("k1");
  const std::string k2 = dir_.file("k2");
  ASSERT_EQ(cli("", "keygen " + k1).rc, 0);
  ASSERT_EQ(cli("", "keygen " + k2).rc, 0);
  EXPECT_EQ(cli("", "keygen " + k1).rc, 1) << "an existing key was overwritten";
  struct stat info {};
  ::stat(k1.c_str(), &info);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const CliResult signed_push = cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0") + " --sign " + k1 + " --json");
  ASSERT_EQ(signed_push.rc, 0) << signed_push.output;
  const std::string key1 = parse_json_line(signed_push.output)["signed_by"];
  EXPECT_EQ(key1, store::key_id(k1 + ".pub"));
  const std::string d1 = parse_json_line(signed_push.output)["digest"];
  const CliResult unsigned_push = cli(env_, "push " + package_ + " " + ref("vision/lenet:2.0") + " --json");
  ASSERT_EQ(unsigned_push.rc, 0);
  const std::string d2 = parse_json_line(unsigned_push.output)["digest"];

  CliResult pull = cli(env_, "pull " + ref("vision/lenet:1.0") + " --trust " + k1 + ".pub --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["signed_by"], key1);
  pull = cli("ESPRESSO_CACHE=" + dir_.file("c2") + " ESPRESSO_TRUSTED_KEYS=" + k2 + ".pub", "pull " + ref("vision/lenet:1.0"));
  EXPECT_EQ(pull.rc, 1);
  EXPECT_NE(pull.output.find("not trusted"), std::string::npos) << pull.output;
  pull = cli(env_, "pull " + ref("vision/lenet:2.0") + " --trust " + k1 + ".pub");
  EXPECT_EQ(pull.rc, 1);
  EXPECT_NE(pull.output.find("not signed"), std::string::npos) << pull.output;
  // Offline, the cached signature is checked again.
  EXPECT_EQ(cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + ref("vision/lenet:1.0") + " --trust " + k1 + ".pub").rc, 0);
  EXPECT_EQ(cli(env_ + " ESPRESSO_OFFLINE=1", "pull " + ref("vision/lenet:1.0") + " --trust " + k2 + ".pub").rc, 1);

  // Mix-and-match: 1.0's genuine signature served as 2.0's.
  const int port = server_->port();
  const std::string type = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
  const std::string sig1 = raw_http(port, request("GET", "/v2/vision/lenet/manifests/sha256-" + d1.substr(7) + ".sig")).body;
  ASSERT_FALSE(sig1.empty());
  ASSERT_EQ(raw_http(port, request("PUT", "/v2/vision/lenet/manifests/sha256-" + d2.substr(7) + ".sig", sig1, type)).status, 201);
  pull = cli("ESPRESSO_CACHE=" + dir_.file("c3"), "pull " + ref("vision/lenet:2.0") + " --trust " + k1 + ".pub");
  EXPECT_EQ(pull.rc, 1);
  EXPECT_NE(pull.output.find("mix-and-match refused"), std::string::npos) << pull.output;
  // A document naming 2.0 correctly whose signature bytes are not the key's.
  json doc = json::parse(raw_http(port, request("GET", "/v2/vision/lenet/blobs/" +
                                                          json::parse(sig1)["layers"][0]["digest"].get<std::string>())).body);
  doc["version"] = "2.0";
  doc["manifest_digest"] = d2;
  const std::string forged = doc.dump();
  const std::string forged_digest = store::sha256_digest(forged);
  ASSERT_EQ(raw_http(port, request("POST", "/v2/vision/lenet/blobs/uploads/?digest=" + forged_digest, forged)).status, 201);
  json forged_manifest = json::parse(sig1);
  forged_manifest["layers"][0]["digest"] = forged_digest;
  forged_manifest["layers"][0]["size"] = forged.size();
  ASSERT_EQ(raw_http(port, request("PUT", "/v2/vision/lenet/manifests/sha256-" + d2.substr(7) + ".sig", forged_manifest.dump(), type)).status, 201);
  pull = cli("ESPRESSO_CACHE=" + dir_.file("c4"), "pull " + ref("vision/lenet:2.0") + " --trust " + k1 + ".pub");
  EXPECT_EQ(pull.rc, 1);
  EXPECT_NE(pull.output.find("does not verify"), std::string::npos) << pull.output;
  // Signatures are listed by the referrers API of our server: the genuine one and the forgery (whose
  // subject, copied from it, is still 1.0).
  const json referrers = json::parse(raw_http(port, request("GET", "/v2/vision/lenet/referrers/" + d1)).body);
  ASSERT_EQ(referrers["manifests"].size(), 2u);
  for (const json& r : referrers["manifests"]) EXPECT_EQ(r["artifactType"], std::string(store::kSignatureArtifactType));
}

// ---- a misbehaving registry: the client refuses what does not add up -----------------------------

// A one-connection-at-a-time HTTP server whose answers the test writes byte by byte.
class FakeRegistry {
 public:
  explicit FakeRegistry(std::function<std::string(const std::string& request_line, const std::string& head)> answer)
      : answer_(std::move(answer)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::listen(listener_, 16);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRegistry() {
    stop_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    thread_.join();
  }
  std::string registry() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stop_) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) return;
      std::string head;
      char c;
      while (head.find("\r\n\r\n") == std::string::npos && ::recv(fd, &c, 1, 0) == 1) head += c;
      const std::string reply = answer_(head.substr(0, head.find("\r\n")), head);
      ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
      ::shutdown(fd, SHUT_RDWR);
      ::close(fd);
    }
  }
  std::function<std::string(const std::string&, const std::string&)> answer_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string http_reply(int status, const std::string& body, const std::string& headers = "", std::size_t length = std::string::npos) {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Length: " +
         std::to_string(length == std::string::npos ? body.size() : length) + "\r\nConnection: close\r\n" + headers + "\r\n" + body;
}

class StoreFaults : public ::testing::Test {
 protected:
  StoreFaults() {
    package_.resize(100000);
    std::mt19937 random(5);
    for (char& c : package_) c = static_cast<char>(random());
    manifest_ = json({{"schemaVersion", 2},
                      {"mediaType", store::kManifestMediaType},
                      {"artifactType", store::kArtifactType},
                      {"config", {{"mediaType", store::kCardMediaType}, {"digest", store::sha256_digest(card_)}, {"size", card_.size()}}},
                      {"layers", json::array({{{"mediaType", store::kPackageMediaType},
                                               {"digest", store::sha256_digest(package_)},
                                               {"size", package_.size()}}})}})
                    .dump();
  }
  // Manifest and card answered correctly; the package blob as `blob` says.
  std::string answer(const std::string& line, const std::string& head,
                     const std::function<std::string(const std::string& head)>& blob) {
    if (line.find("/manifests/") != std::string::npos) return http_reply(200, manifest_, "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n");
    if (line.find(store::sha256_digest(card_)) != std::string::npos) return http_reply(200, card_);
    return blob(head);
  }
  store::Client client() const {
    store::ClientOptions options;
    options.cache = dir_.file("cache");
    return store::Client(options);
  }
  fs::path partial() const {
    return fs::path(dir_.file("cache")) / "partial" / "sha256" / store::sha256_digest(package_).substr(7);
  }
  TempDir dir_;
  std::string card_ = "{\"name\":\"fake\"}";
  std::string package_;
  std::string manifest_;
};

TEST_F(StoreFaults, AServerThatIgnoresRangeGetsTheDownloadRestartedAndVerified) {
  FakeRegistry fake([&](const std::string& line, const std::string& head) {
    return answer(line, head, [&](const std::string&) { return http_reply(200, package_); });
  });
  fs::create_directories(partial().parent_path());
  std::ofstream(partial(), std::ios::binary) << package_.substr(0, 40000);
  const store::PullResult r = client().pull(store::Reference::parse(fake.registry() + "/fake/model:1"));
  EXPECT_EQ(r.bytes_downloaded, package_.size() + card_.size());
  EXPECT_EQ(read_all(r.package), package_);
}

TEST_F(StoreFaults, MoreBytesThanTheManifestSaysAreRefusedAndNothingIsCached) {
  FakeRegistry fake([&](const std::string& line, const std::string& head) {
    return answer(line, head, [&](const std::string&) { return http_reply(200, package_ + "0123456789"); });
  });
  try {
    client().pull(store::Reference::parse(fake.registry() + "/fake/model:1"));
    FAIL() << "an oversized blob was accepted";
  } catch (const IntegrityError& e) {
    EXPECT_NE(std::string(e.what()).find("more bytes than the manifest"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::path(dir_.file("cache")) / "blobs" / "sha256" / store::sha256_digest(package_).substr(7)));
}

TEST_F(StoreFaults, AShortBodyIsKeptAndTheNextPullResumesWithRange) {
  std::atomic<bool> cut{true};
  std::string seen_range;
  FakeRegistry fake([&](const std::string& line, const std::string& head) {
    return answer(line, head, [&](const std::string& h) {
      if (cut) return http_reply(200, package_.substr(0, 60000), "", package_.size());  // declares all, sends 60 %
      const std::size_t at = h.find("Range: bytes=");
      if (at == std::string::npos) return http_reply(200, package_);
      const std::size_t from = std::stoul(h.substr(at + 13));
      seen_range = h.substr(at, h.find("\r\n", at) - at);
      return http_reply(206, package_.substr(from),
                        "Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(package_.size() - 1) + "/" +
                            std::to_string(package_.size()) + "\r\n");
    });
  });
  const store::Reference ref = store::Reference::parse(fake.registry() + "/fake/model:1");
  try {
    client().pull(ref);
    FAIL() << "a short body was accepted";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("resume"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(partial()), 60000u);
  cut = false;
  const store::PullResult r = client().pull(ref);
  EXPECT_EQ(seen_range, "Range: bytes=60000-");
  EXPECT_EQ(r.bytes_downloaded, package_.size() - 60000);
  EXPECT_EQ(read_all(r.package), package_);
}

TEST_F(StoreFaults, AnswersThatContradictTheRequestOrTheDigestAreRefused) {
  {
    // 206 for another offset than asked.
    FakeRegistry fake([&](const std::string& line, const std::string& head) {
      return answer(line, head, [&](const std::string&) {
        return http_reply(206, package_.substr(10), "Content-Range: bytes 10-99999/100000\r\n");
      });
    });
    fs::create_directories(partial().parent_path());
    std::ofstream(partial(), std::ios::binary) << package_.substr(0, 50000);
    try {
      client().pull(store::Reference::parse(fake.registry() + "/fake/model:1"));
      FAIL() << "a wrong Content-Range was accepted";
    } catch (const StoreError& e) {
      EXPECT_NE(std::string(e.what()).find("answered a Range request for byte 50000"), std::string::npos) << e.what();
    }
  }
  {
    // A manifest whose Docker-Content-Digest is not its hash; a digest reference it does not match.
    FakeRegistry fake([&](const std::string& line, const std::string&) {
      if (line.find("/manifests/") != std::string::npos)
        return http_reply(200, manifest_, "Docker-Content-Digest: sha256:" + std::string(64, 'a') + "\r\n");
      return http_reply(404, "{}");
    });
    EXPECT_THROW(client().pull(store::Reference::parse(fake.registry() + "/fake/model:1")), IntegrityError);
    EXPECT_THROW(client().pull(store::Reference::parse(fake.registry() + "/fake/model@sha256:" + std::string(64, 'b'))),
                 IntegrityError);
  }
  {
    // A manifest with a path for a title is never used.
    json hostile = json::parse(manifest_);
    hostile["layers"][0]["annotations"] = {{"org.opencontainers.image.title", "../../.bashrc"}};
    FakeRegistry fake([&](const std::string&, const std::string&) { return http_reply(200, hostile.dump()); });
    try {
      client().pull(store::Reference::parse(fake.registry() + "/fake/model:1"));
      FAIL() << "a hostile title was accepted";
    } catch (const StoreError& e) {
      EXPECT_NE(std::string(e.what()).find("unsafe title"), std::string::npos) << e.what();
    }
  }
}

// ---- crashes: kill -9 of the server and of a pull, concurrent publishers --------------------------------

// A package of about `megabytes` MB: one InnerProduct layer with random weights (seeded).
std::string make_big_package(const TempDir& dir, const std::string& name, int megabytes, unsigned seed) {
  const std::int64_t inputs = 16384;
  const std::int64_t outputs = std::max<std::int64_t>(1, static_cast<std::int64_t>(megabytes) * 1000000 / (inputs * 4));
  Graph graph;
  graph.name = name;
  graph.inputs = {{"data", Shape{1, inputs}}};
  LayerSpec ip = testing::layer("ip", "InnerProduct", {"data"}, {"ip"});
  ip.attrs.set("num_output", outputs);
  Tensor w = Tensor::empty(Shape{outputs, inputs});
  Tensor b = Tensor::empty(Shape{outputs});
  std::mt19937 random(seed);
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = static_cast<float>(random() % 1000) * 1e-3f;
  for (std::int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 0.0f;
  ip.weights = {w, b};
  graph.layers = {ip};
  graph.outputs = {"ip"};
  graph.metadata.name = name;
  graph.metadata.description = "synthetic " + std::to_string(megabytes) + " MB model " + std::to_string(seed);
  const std::string path = dir.file(name + ".esp");
  save_package(graph, path);
  return path;
}

int big_megabytes() {
  const char* mb = std::getenv("ESPRESSO_STORE_BIG_MB");
  return mb != nullptr ? std::max(1, std::atoi(mb)) : 32;
}

TEST(StoreCrash, APullKilledHalfwayResumesWithTheRestOnly) {
  TempDir dir;
  const int megabytes = big_megabytes();
  const std::string package = make_big_package(dir, "big", megabytes, 1);
  const std::uint64_t size = fs::file_size(package);
  StoreServerProcess server(fs::path(dir.path()) / "root");
  ASSERT_GT(server.port(), 0);
  const std::string cache = dir.file("cache");
  const std::string ref = server.registry() + "/big/model:1";
  ASSERT_EQ(cli("ESPRESSO_CACHE=" + cache, "push " + package + " " + ref).rc, 0);
  const std::string digest = store::sha256_file_digest(package);
  const fs::path partial = fs::path(cache) / "partial" / "sha256" / digest.substr(7);
  std::uint64_t kept = 0;
  for (int attempt = 0; attempt < 5 && kept == 0; ++attempt) {
    Process pull({testing::espresso_cli(), "pull", ref}, true, {"ESPRESSO_CACHE=" + cache});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::error_code ec;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto now = fs::file_size(partial, ec);
      if (!ec && now >= size / 2) break;
      if (::waitpid(pull.pid(), nullptr, WNOHANG) != 0) break;
    }
    pull.kill(SIGKILL);
    kept = fs::file_size(partial, ec);
    if (ec) kept = 0;
    if (kept == 0) fs::remove_all(cache, ec);  // it finished before the kill: try again
  }
  ASSERT_GE(kept, size / 2) << "never caught the pull halfway";
  ASSERT_LT(kept, size);
  const CliResult resumed = cli("ESPRESSO_CACHE=" + cache, "pull " + ref + " --json");
  ASSERT_EQ(resumed.rc, 0) << resumed.output;
  const json result = parse_json_line(resumed.output);
  const std::uint64_t transferred = result["bytes_downloaded"].get<std::uint64_t>();
  std::printf("[ store    ] %llu-byte blob: killed at %.1f %%, resumed pull transferred %.1f %%\n",
              static_cast<unsigned long long>(size), 100.0 * static_cast<double>(kept) / static_cast<double>(size),
              100.0 * static_cast<double>(transferred) / static_cast<double>(size));
  EXPECT_LE(static_cast<double>(transferred), 0.55 * static_cast<double>(size));
  EXPECT_EQ(store::sha256_file_digest(result["package"].get<std::string>()), digest);
}

TEST(StoreCrash, ServerKilledDuringUploadsAndTagMovesLeavesEveryTagWhole) {
  TempDir dir;
  const fs::path root = fs::path(dir.path()) / "root";
  const std::string a = make_big_package(dir, "a", 2, 1);
  const std::string b = make_big_package(dir, "b", 2, 2);
  std::string manifest_a, manifest_b;
  {
    StoreServerProcess server(root);
    ASSERT_GT(server.port(), 0);
    ASSERT_EQ(cli("ESPRESSO_CACHE=" + dir.file("c"), "push " + a + " " + server.registry() + "/kill/model:live").rc, 0);
    ASSERT_EQ(cli("ESPRESSO_CACHE=" + dir.file("c"), "push " + b + " " + server.registry() + "/kill/model:b").rc, 0);
    manifest_a = raw_http(server.port(), request("GET", "/v2/kill/model/manifests/live")).body;
    manifest_b = raw_http(server.port(), request("GET", "/v2/kill/model/manifests/b")).body;
    server.kill9();
  }
  ASSERT_FALSE(manifest_a.empty());
  ASSERT_FALSE(manifest_b.empty());
  const std::string type = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
  std::set<std::string> written = {store::sha256_digest(manifest_a), store::sha256_digest(manifest_b)};
  std::mutex written_mutex;
  for (int round = 0; round < 10; ++round) {
    StoreServerProcess server(root);
    ASSERT_GT(server.port(), 0) << "round " << round << ": the server did not restart";
    const int port = server.port();
    // Every tag resolves to a whole release: the manifest, and every blob it names with the right bytes.
    const RawResponse live = raw_http(port, request("GET", "/v2/kill/model/manifests/live"));
    ASSERT_EQ(live.status, 200) << "round " << round;
    {
      std::lock_guard lock(written_mutex);
      EXPECT_TRUE(written.count(store::sha256_digest(live.body))) << "round " << round << ": a manifest nobody wrote";
    }
    const json m = json::parse(live.body);
    std::vector<json> descriptors = {m["config"]};
    for (const json& layer : m["layers"]) descriptors.push_back(layer);
    for (const json& d : descriptors) {
      const RawResponse blob = raw_http(port, request("GET", "/v2/kill/model/blobs/" + d["digest"].get<std::string>()));
      ASSERT_EQ(blob.status, 200) << "round " << round;
      EXPECT_EQ(store::sha256_digest(blob.body), d["digest"]) << "round " << round;
    }
    // A writer uploads fresh blobs in chunks and moves the tag between manifests that use them; the
    // server dies at a different moment each round.
    std::atomic<bool> stop{false};
    std::thread writer([&, round] {
      std::mt19937 random(static_cast<unsigned>(round));
      for (int k = 0; !stop; ++k) {
        std::string bytes(256 * 1024, '\0');
        for (char& c : bytes) c = static_cast<char>(random());
        const std::string digest = store::sha256_digest(bytes);
        const RawResponse started = raw_http(port, request("POST", "/v2/kill/model/blobs/uploads/"));
        if (started.status != 202) return;
        const std::string location = header(started, "Location");
        bool ok = true;
        for (std::size_t at = 0; at < bytes.size() && ok; at += 65536) {
          ok = raw_http(port, request("PATCH", location, bytes.substr(at, 65536),
                                      "Content-Range: " + std::to_string(at) + "-" + std::to_string(at + 65535) + "\r\n"))
                   .status == 202;
        }
        if (!ok || raw_http(port, request("PUT", location + "?digest=" + digest)).status != 201) return;
        json next = json::parse(k % 2 ? manifest_a : manifest_b);
        next["layers"].push_back({{"mediaType", "application/octet-stream"}, {"digest", digest}, {"size", bytes.size()}});
        const std::string body = next.dump();
        {
          std::lock_guard lock(written_mutex);
          written.insert(store::sha256_digest(body));
        }
        if (raw_http(port, request("PUT", "/v2/kill/model/manifests/live", body, type)).status != 201) return;
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + 17 * round));
    server.kill9();
    stop = true;
    writer.join();
  }
  const CliResult fsck = cli("", "store fsck --root " + root.string());
  EXPECT_EQ(fsck.rc, 0) << fsck.output;
  EXPECT_NE(fsck.output.find("0 bad, 0 missing"), std::string::npos) << fsck.output;
}

TEST(StoreCrash, EightPublishersAndEightPullersAtOnce) {
  TempDir dir;
  StoreServerProcess server(fs::path(dir.path()) / "root");
  ASSERT_GT(server.port(), 0);
  std::vector<std::string> packages;
  for (int i = 0; i < 8; ++i) packages.push_back(make_big_package(dir, "p" + std::to_string(i), 1, static_cast<unsigned>(i + 10)));
  const std::string shared = make_big_package(dir, "shared", 4, 99);
  ASSERT_EQ(cli("ESPRESSO_CACHE=" + dir.file("pc"), "push " + shared + " " + server.registry() + "/team/shared:1").rc, 0);
  const std::string cache = dir.file("cache");
  std::vector<std::future<CliResult>> jobs;
  for (int i = 0; i < 8; ++i) {
    jobs.push_back(std::async(std::launch::async, [&, i] {
      return cli("ESPRESSO_CACHE=" + dir.file("pc" + std::to_string(i)),
                 "push " + packages[static_cast<std::size_t>(i)] + " " + server.registry() + "/team/model" + std::to_string(i % 4) + ":" + std::to_string(i) + " --json");
    }));
    jobs.push_back(std::async(std::launch::async, [&] {
      return cli("ESPRESSO_CACHE=" + cache, "pull " + server.registry() + "/team/shared:1 --json");
    }));
  }
  std::uint64_t pulled = 0;
  for (auto& job : jobs) {
    const CliResult r = job.get();
    ASSERT_EQ(r.rc, 0) << r.output;
    const json j = parse_json_line(r.output);
    if (j.contains("bytes_downloaded")) pulled += j["bytes_downloaded"].get<std::uint64_t>();
  }
  EXPECT_EQ(pulled, fs::file_size(shared) + store::model_card(shared).size()) << "a blob was fetched more than once";
  EXPECT_EQ(cli("ESPRESSO_CACHE=" + cache, "cache verify").rc, 0);
  for (int i = 0; i < 8; ++i) {
    const CliResult r = cli("ESPRESSO_CACHE=" + dir.file("check"), "pull " + server.registry() + "/team/model" + std::to_string(i % 4) + ":" + std::to_string(i) + " --json");
    ASSERT_EQ(r.rc, 0) << r.output;
    EXPECT_EQ(store::sha256_file_digest(parse_json_line(r.output)["package"].get<std::string>()),
              store::sha256_file_digest(packages[static_cast<std::size_t>(i)]));
  }
  EXPECT_EQ(cli("", "store fsck --root " + (fs::path(dir.path()) / "root").string()).rc, 0);
}

TEST_F(StoreRoundTrip, VersionRangesResolveToTheHighestMatchingTagOnlineAndOffline) {
  std::map<std::string, std::string> digests;
  for (const char* tag : {"1.0", "1.2", "1.10", "2.0", "2.1.0-rc.1", "latest"}) {
    const CliResult push = cli(env_, "push " + package_ + " " + ref("vision/lenet:") + tag + " --json");
    ASSERT_EQ(push.rc, 0) << push.output;
    digests[tag] = parse_json_line(push.output)["digest"];
  }
  // Each tag's manifest names its version, so each has its own digest.
  ASSERT_NE(digests["1.10"], digests["1.2"]);
  const auto pull = [&](const std::string& range, const std::string& env = "") {
    return cli(env_ + " " + env, "pull '" + ref("vision/lenet:") + range + "' --json");
  };
  CliResult caret = pull("^1.2");
  ASSERT_EQ(caret.rc, 0) << caret.output;
  EXPECT_EQ(parse_json_line(caret.output)["tag"], "1.10");
  EXPECT_EQ(parse_json_line(caret.output)["digest"], digests["1.10"]);
  CliResult bounded = pull(">=1.0,<1.5");
  ASSERT_EQ(bounded.rc, 0) << bounded.output;
  EXPECT_EQ(parse_json_line(bounded.output)["tag"], "1.2");
  EXPECT_EQ(parse_json_line(pull("*").output)["tag"], "2.0");  // never the release candidate
  const CliResult none = pull("^3");
  EXPECT_NE(none.rc, 0);
  EXPECT_NE(none.output.find("no tag matches the range '^3'"), std::string::npos) << none.output;
  // Offline: only the tags pulled before into this cache (1.2, 1.10, 2.0) are candidates.
  CliResult offline = pull("~1.10", "ESPRESSO_OFFLINE=1");
  ASSERT_EQ(offline.rc, 0) << offline.output;
  EXPECT_EQ(parse_json_line(offline.output)["digest"], digests["1.10"]);
  const CliResult offline_none = pull("~1.0", "ESPRESSO_OFFLINE=1");
  EXPECT_NE(offline_none.rc, 0);
  EXPECT_NE(offline_none.output.find("no cached tag matches"), std::string::npos) << offline_none.output;
  // A bad range is refused before anything is sent.
  const CliResult bad = pull("^1.2.3.4");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.output.find("version range"), std::string::npos) << bad.output;
}

// ---- interop with Debian's docker-registry and skopeo ----------------------------------------------

TEST_F(StoreRoundTrip, OurClientPushesToAndPullsFromDockerRegistry) {
  if (!fs::exists("/usr/bin/docker-registry")) GTEST_SKIP() << "docker-registry is not installed (apt install docker-registry)";
  DockerRegistryProcess docker(fs::path(dir_.path()) / "docker");
  ASSERT_TRUE(docker.ready()) << "docker-registry did not answer on " << docker.registry();
  const std::string remote = docker.registry() + "/vision/lenet:1.0";
  const CliResult push = cli(env_, "push " + package_ + " " + remote + " --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  // Chunked upload path too: a second model pushed in 256 KiB PATCHes would need an option; the
  // package (1.7 MB) already goes as one PATCH and a PUT. Pull into an empty cache.
  const CliResult pull = cli("ESPRESSO_CACHE=" + dir_.file("dcache"), "pull " + remote + " --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  const json pulled = parse_json_line(pull.output);
  EXPECT_EQ(pulled["digest"], parse_json_line(push.output)["digest"]);
  EXPECT_EQ(read_all(pulled["package"].get<std::string>()), read_all(package_));
}

TEST_F(StoreRoundTrip, SkopeoReadsOurManifestsAndCopiesToDockerRegistry) {
  if (!fs::exists("/usr/bin/skopeo")) GTEST_SKIP() << "skopeo is not installed (apt install skopeo)";
  const CliResult push = cli(env_, "push " + package_ + " " + ref("vision/lenet:1.0") + " --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  const std::string digest = parse_json_line(push.output)["digest"];
  const std::string source = "docker://" + ref("vision/lenet:1.0");
  const CliResult raw = shell("timeout 60 skopeo inspect --raw --tls-verify=false " + source);
  ASSERT_EQ(raw.rc, 0) << raw.output;
  EXPECT_EQ(store::sha256_digest(raw.output), digest);
  EXPECT_EQ(json::parse(raw.output)["artifactType"], std::string(store::kArtifactType));
  if (!fs::exists("/usr/bin/docker-registry")) return;
  DockerRegistryProcess docker(fs::path(dir_.path()) / "docker");
  ASSERT_TRUE(docker.ready());
  const std::string copy = "timeout 120 skopeo copy --src-tls-verify=false --dest-tls-verify=false " + source +
                           " docker://" + docker.registry() + "/copied/lenet:1.0 >/dev/null 2>&1";
  ASSERT_EQ(std::system(copy.c_str()), 0);
  const CliResult pull = cli("ESPRESSO_CACHE=" + dir_.file("ccache"), "pull " + docker.registry() + "/copied/lenet:1.0 --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["digest"], digest);
}

// ---- HTTPS ------------------------------------------------------------------------------------------------

// HTTPS with a private CA: the server gets a certificate for 127.0.0.1 signed by a CA that only the
// client's ESPRESSO_CA_FILE (and skopeo's --cert-dir) trusts.
class StoreTls : public testing::SharedDataTest {};

TEST_F(StoreTls, PushAndPullOverHttpsTrustOnlyTheGivenCa) {
  if (!fs::exists("/usr/bin/openssl")) GTEST_SKIP() << "openssl is not installed (apt install openssl)";
  TempDir dir;
  const std::string ca = dir.file("ca.pem"), cert = dir.file("server.pem"), key = dir.file("server.key");
  const std::string ecc = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
  ASSERT_EQ(shell("openssl req -x509" + ecc + "-keyout " + dir.file("ca.key") + " -out " + ca +
                  " -days 2 -subj /CN=espresso-test-ca").rc, 0);
  ASSERT_EQ(shell("openssl req" + ecc + "-keyout " + key + " -out " + dir.file("server.csr") + " -subj /CN=127.0.0.1").rc, 0);
  std::ofstream(dir.file("san.ext")) << "subjectAltName=IP:127.0.0.1\n";
  ASSERT_EQ(shell("openssl x509 -req -in " + dir.file("server.csr") + " -CA " + ca + " -CAkey " + dir.file("ca.key") +
                  " -CAcreateserial -days 2 -extfile " + dir.file("san.ext") + " -out " + cert).rc, 0);

  const std::string package = make_lenet_package(dir);
  StoreServerProcess server(fs::path(dir.path()) / "root", {"--tls-cert", cert, "--tls-key", key});
  ASSERT_GT(server.port(), 0) << "the HTTPS server did not start";
  const std::string ref = server.registry() + "/vision/lenet:1.0";
  const std::string trusted = "ESPRESSO_TLS=1 ESPRESSO_CA_FILE=" + ca + " ESPRESSO_CACHE=" + dir.file("cache");
  const CliResult push = cli(trusted, "push " + package + " " + ref + " --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  const CliResult pull = cli(trusted, "pull " + ref + " --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(read_all(parse_json_line(pull.output)["package"].get<std::string>()), read_all(package));

  // The system's CA store does not know the private CA; plain HTTP gets no answer from a TLS port.
  const CliResult untrusted = cli("ESPRESSO_TLS=1 ESPRESSO_CACHE=" + dir.file("cache2"), "pull " + ref);
  EXPECT_EQ(untrusted.rc, 1);
  EXPECT_NE(untrusted.output.find("not trusted"), std::string::npos) << untrusted.output;
  EXPECT_NE(untrusted.output.find("ESPRESSO_CA_FILE"), std::string::npos) << untrusted.output;
  EXPECT_EQ(cli("ESPRESSO_CACHE=" + dir.file("cache3"), "pull " + ref).rc, 1);
  const CliResult missing_ca = cli("ESPRESSO_TLS=1 ESPRESSO_CA_FILE=" + dir.file("none.pem") + " ESPRESSO_CACHE=" +
                                   dir.file("cache4"), "pull " + ref);
  EXPECT_EQ(missing_ca.rc, 1);
  EXPECT_NE(missing_ca.output.find("none.pem"), std::string::npos) << missing_ca.output;

  // A real peer: skopeo verifies the certificate against the CA in --cert-dir.
  if (fs::exists("/usr/bin/skopeo")) {
    fs::create_directories(dir.file("certs"));
    fs::copy_file(ca, dir.file("certs") + "/ca.crt");
    const CliResult raw = shell("timeout 60 skopeo inspect --raw --cert-dir " + dir.file("certs") + " docker://" + ref);
    ASSERT_EQ(raw.rc, 0) << raw.output;
    EXPECT_EQ(store::sha256_digest(raw.output), parse_json_line(push.output)["digest"].get<std::string>());
  }

  // Our server as a pull-through cache of the HTTPS one (an https:// upstream is HTTPS even on loopback).
  ::setenv("ESPRESSO_CA_FILE", ca.c_str(), 1);
  StoreServerProcess mirror(fs::path(dir.path()) / "mirror", {"--upstream", "https://" + server.registry()});
  ::unsetenv("ESPRESSO_CA_FILE");
  ASSERT_GT(mirror.port(), 0);
  const CliResult mirrored = cli("ESPRESSO_CACHE=" + dir.file("cache5"), "pull " + mirror.registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(mirrored.rc, 0) << mirrored.output;
  EXPECT_EQ(read_all(parse_json_line(mirrored.output)["package"].get<std::string>()), read_all(package));

  // A key that is not the certificate's, a missing file, a certificate without its key: refused at start.
  const std::string root = " --root " + dir.file("bad") + " --listen 127.0.0.1:0 ";
  const CliResult wrong = cli("", "store serve" + root + "--tls-cert " + cert + " --tls-key " + dir.file("ca.key"), 10);
  EXPECT_EQ(wrong.rc, 1);
  EXPECT_NE(wrong.output.find("private key"), std::string::npos) << wrong.output;
  const CliResult absent = cli("", "store serve" + root + "--tls-cert " + dir.file("no.pem") + " --tls-key " + key, 10);
  EXPECT_EQ(absent.rc, 1);
  EXPECT_NE(absent.output.find("no.pem"), std::string::npos) << absent.output;
  EXPECT_NE(cli("", "store serve" + root + "--tls-cert " + cert, 10).rc, 0);
}

// ---- --upstream: our server as a pull-through cache in front of docker-registry ---------------------------

// The same random input through two packages gives bit-identical outputs.
void expect_identical_outputs(const std::string& a_path, const std::string& b_path) {
  Net a(load_model(a_path));
  Net b(load_model(b_path));
  std::mt19937 random(11);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  Tensor input = Tensor::empty(Shape({2, 1, 28, 28}));
  for (std::int64_t i = 0; i < input.numel(); ++i) input.data<float>()[i] = pixel(random);
  const auto x = a.forward({{"data", input}});
  const auto y = b.forward({{"data", input}});
  ASSERT_EQ(x.size(), y.size());
  for (const auto& [name, tensor] : x) {
    ASSERT_EQ(tensor.numel(), y.at(name).numel());
    EXPECT_EQ(std::memcmp(tensor.data<float>(), y.at(name).data<float>(), sizeof(float) * static_cast<std::size_t>(tensor.numel())), 0) << name;
  }
}

TEST(StoreUpstream, ASilentUpstreamIs504AndAMalformedUrlIsRefused) {
  // An upstream that takes connections (the kernel's backlog) and never answers.
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(silent, 16), 0);
  socklen_t length = sizeof address;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&address), &length);
  const std::string upstream_url = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  TempDir dir;
  StoreServerProcess proxy(fs::path(dir.path()) / "root", {"--upstream", upstream_url, "--upstream-timeout", "1"});
  ASSERT_GT(proxy.port(), 0);
  const auto started = std::chrono::steady_clock::now();
  const RawResponse manifest = raw_http(proxy.port(), request("GET", "/v2/vision/lenet/manifests/1.0"));
  EXPECT_EQ(manifest.status, 504) << manifest.body;
  EXPECT_NE(manifest.body.find("UPSTREAM_TIMEOUT"), std::string::npos) << manifest.body;
  EXPECT_NE(manifest.body.find("upstream " + upstream_url), std::string::npos) << manifest.body;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(8));
  const RawResponse blob = raw_http(proxy.port(), request("GET", "/v2/vision/lenet/blobs/sha256:" + std::string(64, 'a')));
  EXPECT_EQ(blob.status, 504) << blob.body;
  EXPECT_TRUE(fs::is_empty(fs::path(dir.path()) / "root" / "blobs" / "sha256"));
  ::close(silent);
  for (const char* bad : {"http://127.0.0.1:5000/v2", "ftp://host", "http://"}) {
    const CliResult refused = cli("", "store serve --root " + dir.file("bad") + " --listen 127.0.0.1:0 --upstream '" + bad + "'", 10);
    EXPECT_NE(refused.rc, 0) << bad;
    EXPECT_NE(refused.output.find("--upstream"), std::string::npos) << refused.output;
  }
}

TEST_F(StoreRoundTrip, UpstreamModeCachesDockerRegistryVerifiesAndFetchesEachBlobOnce) {
  if (!fs::exists("/usr/bin/docker-registry")) GTEST_SKIP() << "docker-registry is not installed (apt install docker-registry)";
  DockerRegistryProcess docker(fs::path(dir_.path()) / "docker", true);
  ASSERT_TRUE(docker.ready()) << "docker-registry did not answer on " << docker.registry();
  const std::string upstream_url = "http://" + docker.registry();
  const CliResult push = cli(env_, "push " + package_ + " " + docker.registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  const std::string digest = parse_json_line(push.output)["digest"];
  const fs::path proxy_root = fs::path(dir_.path()) / "proxy";
  auto proxy = std::make_unique<StoreServerProcess>(proxy_root, std::vector<std::string>{"--upstream", upstream_url, "--upstream-recheck", "3600"});
  ASSERT_GT(proxy->port(), 0) << "the pull-through server did not start";

  // First pull through the cache: fetched from docker-registry, the same model comes out.
  const int before = docker.requests("GET /v2/vision/lenet/");
  const CliResult first = cli("ESPRESSO_CACHE=" + dir_.file("c1"), "pull " + proxy->registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(first.rc, 0) << first.output;
  EXPECT_EQ(parse_json_line(first.output)["digest"], digest);
  const std::string pulled = parse_json_line(first.output)["package"];
  EXPECT_EQ(read_all(pulled), read_all(package_));
  expect_identical_outputs(package_, pulled);
  const int after_first = docker.requests("GET /v2/vision/lenet/") + docker.requests("HEAD /v2/vision/lenet/");
  EXPECT_GE(after_first - before, 3) << "manifest, card and package come from the upstream";

  // Second pull into an empty cache, by tag and by digest: served from the proxy's store alone.
  const CliResult second = cli("ESPRESSO_CACHE=" + dir_.file("c2"), "pull " + proxy->registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(second.rc, 0) << second.output;
  EXPECT_EQ(parse_json_line(second.output)["digest"], digest);
  const CliResult by_digest = cli("ESPRESSO_CACHE=" + dir_.file("c3"), "pull " + proxy->registry() + "/vision/lenet@" + digest + " --json");
  ASSERT_EQ(by_digest.rc, 0) << by_digest.output;
  EXPECT_EQ(docker.requests("GET /v2/vision/lenet/") + docker.requests("HEAD /v2/vision/lenet/"), after_first)
      << "the second pull went to the upstream";
  EXPECT_EQ(cli("", "store fsck --root " + proxy_root.string()).rc, 0);

  // Pushes are refused with a clear 405.
  const CliResult refused = cli(env_, "push " + package_ + " " + proxy->registry() + "/vision/lenet:2.0");
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.output.find("405"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("pull-through cache of " + upstream_url), std::string::npos) << refused.output;
  // A version range resolves through the upstream's tag list.
  const CliResult ranged = cli("ESPRESSO_CACHE=" + dir_.file("c8"), "pull '" + proxy->registry() + "/vision/lenet:^1' --json");
  ASSERT_EQ(ranged.rc, 0) << ranged.output;
  EXPECT_EQ(parse_json_line(ranged.output)["tag"], "1.0");
  EXPECT_EQ(parse_json_line(ranged.output)["digest"], digest);

  // Eight requests at once for a blob the proxy lacks: one download from the upstream.
  TempDir big_dir;
  const std::string big = make_big_package(big_dir, "big", 8, 5);
  ASSERT_EQ(cli(env_, "push " + big + " " + docker.registry() + "/synthetic/big:1").rc, 0);
  const std::string big_digest = store::sha256_file_digest(big);
  const std::string blob_path = "/v2/synthetic/big/blobs/" + big_digest;
  const int heads_before = docker.requests("HEAD " + blob_path);  // the push asked whether it was there
  std::vector<std::future<RawResponse>> gets;
  for (int i = 0; i < 8; ++i)
    gets.push_back(std::async(std::launch::async, [&] { return raw_http(proxy->port(), request("GET", blob_path)); }));
  for (auto& got : gets) {
    const RawResponse r = got.get();
    EXPECT_EQ(r.status, 200) << r.body.substr(0, 300);
    EXPECT_EQ(store::sha256_digest(r.body), big_digest);
  }
  EXPECT_EQ(docker.requests("GET " + blob_path), 1);
  EXPECT_EQ(docker.requests("HEAD " + blob_path), heads_before + 1);

  // A blob altered in the upstream's storage: refused with 502, never stored, and refused again.
  TempDir other_dir;
  const std::string other = make_lenet_package(other_dir, "LeNet, another release");
  ASSERT_EQ(cli(env_, "push " + other + " " + docker.registry() + "/vision/tampered:1.0").rc, 0);
  const std::string other_digest = store::sha256_file_digest(other);
  flip_byte(docker.blob_file(other_digest), 1000);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const CliResult bad = cli("ESPRESSO_CACHE=" + dir_.file("c4"), "pull " + proxy->registry() + "/vision/tampered:1.0");
    EXPECT_NE(bad.rc, 0);
    EXPECT_NE(bad.output.find("502"), std::string::npos) << bad.output;
    EXPECT_NE(bad.output.find("do not match the digest"), std::string::npos) << bad.output;
    EXPECT_NE(bad.output.find(upstream_url), std::string::npos) << bad.output;
  }
  EXPECT_FALSE(fs::exists(proxy_root / "blobs" / "sha256" / other_digest.substr(7)));
  EXPECT_EQ(raw_http(proxy->port(), request("GET", "/api/v1/models/vision/tampered")).status, 404);
  EXPECT_EQ(cli("", "store fsck --root " + proxy_root.string()).rc, 0);

  // A tag the upstream lacks is a 404 that names the upstream.
  const RawResponse missing = raw_http(proxy->port(), request("GET", "/v2/vision/lenet/manifests/9.9"));
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find(upstream_url), std::string::npos) << missing.body;

  // With re-checking on every request, a tag moved upstream is followed...
  proxy.reset();
  proxy = std::make_unique<StoreServerProcess>(proxy_root, std::vector<std::string>{"--upstream", upstream_url, "--upstream-recheck", "0"});
  ASSERT_GT(proxy->port(), 0);
  TempDir third_dir;
  const std::string third = make_lenet_package(third_dir, "LeNet, release two");
  const CliResult moved = cli(env_, "push " + third + " " + docker.registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(moved.rc, 0) << moved.output;
  const std::string moved_digest = parse_json_line(moved.output)["digest"];
  ASSERT_NE(moved_digest, digest);
  const CliResult followed = cli("ESPRESSO_CACHE=" + dir_.file("c5"), "pull " + proxy->registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(followed.rc, 0) << followed.output;
  EXPECT_EQ(parse_json_line(followed.output)["digest"], moved_digest);

  // ...and with the upstream down, what is cached is still served, and the rest is a clear 502.
  docker.stop();
  const CliResult stale = cli("ESPRESSO_CACHE=" + dir_.file("c6"), "pull " + proxy->registry() + "/vision/lenet:1.0 --json");
  ASSERT_EQ(stale.rc, 0) << stale.output;
  EXPECT_EQ(parse_json_line(stale.output)["digest"], moved_digest);
  const CliResult down = cli("ESPRESSO_CACHE=" + dir_.file("c7"), "pull " + proxy->registry() + "/vision/never:1.0");
  EXPECT_NE(down.rc, 0);
  EXPECT_NE(down.output.find("502"), std::string::npos) << down.output;
  EXPECT_NE(down.output.find("upstream " + upstream_url), std::string::npos) << down.output;
  EXPECT_NE(down.output.find("cannot be reached"), std::string::npos) << down.output;
}

}  // namespace
}  // namespace espresso

namespace espresso {
namespace {

// ---- authentication: access keys, bearer tokens, scopes ------------------------------------------------

struct IssuedKey {
  std::string id;
  std::string secret;
};

IssuedKey issue_key(const fs::path& root, const std::string& grant) {
  const CliResult made = cli("", "store token create --root " + root.string() + " --grant '" + grant + "'");
  EXPECT_EQ(made.rc, 0) << made.output;
  IssuedKey key;
  const std::size_t id = made.output.find("key id: ");
  const std::size_t secret = made.output.find("secret: ");
  if (id == std::string::npos || secret == std::string::npos) return key;
  key.id = made.output.substr(id + 8, made.output.find('\n', id) - id - 8);
  key.secret = made.output.substr(secret + 8, made.output.find('\n', secret) - secret - 8);
  return key;
}

std::string basic(const IssuedKey& key) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::string bytes = key.id + ":" + key.secret;
  std::string text;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
    text += kAlphabet[(v >> 18) & 63];
    text += kAlphabet[(v >> 12) & 63];
    text += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    text += i + 2 < bytes.size() ? kAlphabet[v & 63] : '=';
  }
  return "Basic " + text;
}

class StoreAuth : public ::testing::Test {
 protected:
  void start(const std::vector<std::string>& flags) {
    root_ = fs::path(dir_.path()) / "root";
    fs::create_directories(root_);
    team_ = issue_key(root_, "team/*:pull,push");
    server_ = std::make_unique<StoreServerProcess>(root_, flags);
    ASSERT_GT(server_->port(), 0) << "the server did not start";
    port_ = server_->port();
    package_ = make_lenet_package(dir_);
  }
  // Client environment with its own cache and credentials file.
  std::string env(const std::string& who) const {
    return "ESPRESSO_CACHE=" + dir_.file(who + "-cache") + " ESPRESSO_CREDENTIALS=" + dir_.file(who + "-credentials.json");
  }
  CliResult login(const std::string& who, const IssuedKey& key, const std::string& secret) const {
    const std::string file = dir_.file(who + "-secret.txt");
    std::ofstream(file) << secret << "\n";
    return cli(env(who), "login " + server_->registry() + " --key-id " + key.id + " < " + file);
  }
  // A token from the token service for `scope`, with the key's Basic credentials ("" when refused).
  std::string token(const IssuedKey& key, const std::string& scope) {
    const RawResponse r = raw_http(port_, request("GET", "/token?service=espresso&scope=" + scope, "",
                                                  "Authorization: " + basic(key) + "\r\n"));
    if (r.status != 200) return "";
    return json::parse(r.body).value("token", "");
  }
  RawResponse start_upload(const std::string& repo, const std::string& bearer) {
    return raw_http(port_, request("POST", "/v2/" + repo + "/blobs/uploads/", "",
                                   bearer.empty() ? "" : "Authorization: Bearer " + bearer + "\r\n"));
  }

  TempDir dir_;
  fs::path root_;
  IssuedKey team_;
  std::unique_ptr<StoreServerProcess> server_;
  int port_ = 0;
  std::string package_;
};

TEST_F(StoreAuth, PushNeedsATokenScopedToRepositoryAndActionAndAnonymousPullWorks) {
  start({"--auth", "--token-ttl", "300"});
  // No token: 401 with the challenge that tells a client where to get one and for what.
  const RawResponse bare = start_upload("team/lenet", "");
  EXPECT_EQ(bare.status, 401) << bare.body;
  const std::string challenge = header(bare, "WWW-Authenticate");
  // The realm is built from the Host header (this raw request sends "127.0.0.1"; our client sends the port).
  EXPECT_NE(challenge.find("Bearer realm=\"http://127.0.0.1/token\""), std::string::npos) << challenge;
  EXPECT_NE(challenge.find("service=\"espresso\""), std::string::npos) << challenge;
  EXPECT_NE(challenge.find("scope=\"repository:team/lenet:pull,push\""), std::string::npos) << challenge;

  // Our client without an access key: the anonymous token does not include push.
  CliResult push = cli(env("anon"), "push " + package_ + " " + server_->registry() + "/team/lenet:1.0");
  EXPECT_EQ(push.rc, 1) << push.output;
  EXPECT_NE(push.output.find("403"), std::string::npos) << push.output;
  EXPECT_NE(push.output.find("espresso login"), std::string::npos) << push.output;
  // A wrong secret is refused at login and nothing is stored.
  CliResult wrong = login("dev", team_, "esk_not-the-secret");
  EXPECT_EQ(wrong.rc, 1) << wrong.output;
  EXPECT_NE(wrong.output.find("401"), std::string::npos) << wrong.output;
  EXPECT_FALSE(fs::exists(dir_.file("dev-credentials.json")));
  CliResult good = login("dev", team_, team_.secret);
  ASSERT_EQ(good.rc, 0) << good.output;
  struct stat info {};
  ASSERT_EQ(::stat(dir_.file("dev-credentials.json").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  push = cli(env("dev"), "push " + package_ + " " + server_->registry() + "/team/lenet:1.0 --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  // The key grants team/* only: another namespace is 403.
  CliResult outside = cli(env("dev"), "push " + package_ + " " + server_->registry() + "/other/lenet:1.0");
  EXPECT_EQ(outside.rc, 1) << outside.output;
  EXPECT_NE(outside.output.find("403"), std::string::npos) << outside.output;
  // Anyone may pull (anonymous pull is on by default).
  CliResult pull = cli(env("anon"), "pull " + server_->registry() + "/team/lenet:1.0 --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["digest"], parse_json_line(push.output)["digest"]);
  CliResult logout = cli(env("dev"), "logout " + server_->registry());
  EXPECT_EQ(logout.rc, 0) << logout.output;
  EXPECT_EQ(cli(env("dev"), "push " + package_ + " " + server_->registry() + "/team/lenet:1.1").rc, 1);
}

TEST_F(StoreAuth, WrongScopeIs403AndExpiredForgedOrRevokedTokensAre401) {
  start({"--auth"});
  // A token asked for outside the key's grants carries no access to it: 403 naming action and repository.
  const std::string narrow = token(team_, "repository:other/x:pull,push");
  ASSERT_FALSE(narrow.empty());
  RawResponse r = start_upload("other/x", narrow);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_NE(r.body.find("DENIED"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("push on other/x"), std::string::npos) << r.body;
  EXPECT_NE(header(r, "WWW-Authenticate").find("error=\"insufficient_scope\""), std::string::npos);
  // The right scope works.
  const std::string fitting = token(team_, "repository:team/x:pull,push");
  r = start_upload("team/x", fitting);
  EXPECT_EQ(r.status, 202) << r.body;
  // Expired: a token signed with the server's own secret, but past its expiry.
  const std::string secret = read_all(root_ / "auth" / "secret");
  store::detail::TokenClaims claims;
  claims.subject = team_.id;
  claims.access = {{"team/x", {"pull", "push"}}};
  claims.issued = static_cast<std::int64_t>(std::time(nullptr)) - 100;
  claims.expires = claims.issued + 50;
  r = start_upload("team/x", store::detail::sign_token(secret, claims));
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.body.find("expired"), std::string::npos) << r.body;
  EXPECT_NE(header(r, "WWW-Authenticate").find("error=\"invalid_token\""), std::string::npos);
  // Forged: fine claims, another secret.
  claims.expires = claims.issued + 3600;
  r = start_upload("team/x", store::detail::sign_token(std::string(64, 'f'), claims));
  EXPECT_EQ(r.status, 401) << r.body;
  // Tampered claims under the old MAC.
  std::string tampered = fitting;
  tampered[8] = tampered[8] == 'A' ? 'B' : 'A';
  EXPECT_EQ(start_upload("team/x", tampered).status, 401);
  // Revoking the key kills the tokens it obtained, at once.
  const CliResult revoke = cli("", "store token revoke --root " + root_.string() + " " + team_.id);
  ASSERT_EQ(revoke.rc, 0) << revoke.output;
  r = start_upload("team/x", fitting);
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.body.find("revoked"), std::string::npos) << r.body;
  EXPECT_TRUE(token(team_, "repository:team/x:push").empty());
  // Bad input to the token service names its field.
  r = raw_http(port_, request("GET", "/token?scope=repository:UPPER/x:push"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("\"field\":\"scope\""), std::string::npos) << r.body;
  r = raw_http(port_, request("GET", "/token?scope=repository:team/x:steal"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("steal"), std::string::npos) << r.body;
  r = raw_http(port_, request("GET", "/token?service=elsewhere"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("\"field\":\"service\""), std::string::npos) << r.body;
  // Grants are checked when a key is made.
  EXPECT_EQ(cli("", "store token create --root " + root_.string() + " --grant '../x:push'").rc, 1);
  EXPECT_EQ(cli("", "store token create --root " + root_.string() + " --grant 'team/*:own'").rc, 1);
}

TEST_F(StoreAuth, WithoutAnonymousPullEveryReadNeedsAToken) {
  start({"--no-anonymous-pull"});
  ASSERT_EQ(login("dev", team_, team_.secret).rc, 0);
  const CliResult push = cli(env("dev"), "push " + package_ + " " + server_->registry() + "/team/lenet:1.0");
  ASSERT_EQ(push.rc, 0) << push.output;
  const RawResponse r = raw_http(port_, request("GET", "/v2/team/lenet/manifests/1.0"));
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(header(r, "WWW-Authenticate").find("scope=\"repository:team/lenet:pull\""), std::string::npos);
  EXPECT_EQ(raw_http(port_, request("GET", "/api/v1/models?q=lenet")).status, 401);
  CliResult anonymous = cli(env("anon"), "pull " + server_->registry() + "/team/lenet:1.0");
  EXPECT_EQ(anonymous.rc, 1) << anonymous.output;
  EXPECT_NE(anonymous.output.find("espresso login"), std::string::npos) << anonymous.output;
  EXPECT_EQ(cli(env("dev"), "pull " + server_->registry() + "/team/lenet:1.0").rc, 0);
  EXPECT_EQ(cli(env("dev"), "search --registry " + server_->registry() + " lenet").rc, 0);
}

TEST_F(StoreAuth, SkopeoPullsAnonymouslyAndPushesWithAnAccessKey) {
  if (!fs::exists("/usr/bin/skopeo")) GTEST_SKIP() << "skopeo is not installed (apt install skopeo)";
  start({"--auth"});
  ASSERT_EQ(login("dev", team_, team_.secret).rc, 0);
  const CliResult push = cli(env("dev"), "push " + package_ + " " + server_->registry() + "/team/lenet:1.0 --json");
  ASSERT_EQ(push.rc, 0) << push.output;
  const std::string source = "docker://" + server_->registry() + "/team/lenet:1.0";
  EXPECT_EQ(std::system(("timeout 60 skopeo inspect --raw --tls-verify=false " + source + " >/dev/null 2>&1").c_str()), 0);
  const std::string copy = "timeout 120 skopeo copy --src-tls-verify=false --dest-tls-verify=false ";
  // Without credentials skopeo gets a pull-only token and the push is refused; with the key it works.
  EXPECT_NE(std::system((copy + source + " docker://" + server_->registry() + "/team/copy:1.0 >/dev/null 2>&1").c_str()), 0);
  EXPECT_EQ(std::system((copy + "--dest-creds " + team_.id + ":" + team_.secret + " " + source + " docker://" +
                         server_->registry() + "/team/copy:1.0 >/dev/null 2>&1")
                            .c_str()),
            0);
  const CliResult pulled = cli(env("anon"), "pull " + server_->registry() + "/team/copy:1.0 --json");
  ASSERT_EQ(pulled.rc, 0) << pulled.output;
  EXPECT_EQ(parse_json_line(pulled.output)["digest"], parse_json_line(push.output)["digest"]);
}

}  // namespace
}  // namespace espresso

namespace espresso {
namespace {

// ---- trust metadata: rollback, freeze, mix-and-match, unknown keys, root rotation ----------------------

class StoreTrust : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(dir_.path()) / "root";
    server_ = std::make_unique<StoreServerProcess>(root_);
    ASSERT_GT(server_->port(), 0) << "the server did not start";
    port_ = server_->port();
    package_ = make_lenet_package(dir_);
    for (const char* key : {"root1", "root2", "rel1", "rel2", "rogue"}) ASSERT_EQ(cli("", "keygen " + key_file(key)).rc, 0);
  }
  std::string key_file(const std::string& name) const { return dir_.file(name + ".key"); }
  std::string repo(const std::string& name) const { return server_->registry() + "/" + name; }
  // A second package with other bytes (another release).
  std::string other_package(const std::string& description) {
    TempDir& d = extra_.emplace_back();
    return make_lenet_package(d, description);
  }
  CliResult as(const std::string& who, const std::string& args) const {
    return cli("ESPRESSO_CACHE=" + dir_.file(who + "-cache"), args);
  }
  std::string manifest_bytes(const std::string& name, const std::string& tag) {
    return raw_http(port_, request("GET", "/v2/" + name + "/manifests/" + tag, "",
                                   "Accept: " + std::string(store::kManifestMediaType) + "\r\n"))
        .body;
  }
  int put_manifest(const std::string& name, const std::string& tag, const std::string& bytes) {
    return raw_http(port_, request("PUT", "/v2/" + name + "/manifests/" + tag, bytes,
                                   "Content-Type: " + std::string(store::kManifestMediaType) + "\r\n"))
        .status;
  }
  // Stores a trust document the way the client does, as an attacker with write access to the registry.
  void put_document(const std::string& name, const std::string& tag, const json& document) {
    const std::string bytes = document.dump();
    for (const std::string& blob : {bytes, std::string("{}")}) {
      const RawResponse r = raw_http(port_, request("POST", "/v2/" + name + "/blobs/uploads/?digest=" + store::sha256_digest(blob), blob));
      ASSERT_EQ(r.status, 201) << r.body;
    }
    const json manifest = {{"schemaVersion", 2},
                           {"mediaType", store::kManifestMediaType},
                           {"artifactType", store::kTrustArtifactType},
                           {"config", {{"mediaType", store::kEmptyMediaType}, {"digest", store::sha256_digest("{}")}, {"size", 2}}},
                           {"layers", json::array({{{"mediaType", store::kTrustMediaType},
                                                    {"digest", store::sha256_digest(bytes)},
                                                    {"size", bytes.size()}}})}};
    ASSERT_EQ(put_manifest(name, tag, manifest.dump()), 201);
  }

  TempDir dir_;
  std::deque<TempDir> extra_;
  fs::path root_;
  std::unique_ptr<StoreServerProcess> server_;
  int port_ = 0;
  std::string package_;
};

TEST_F(StoreTrust, RollbackFreezeMixAndMatchAndUnknownKeysAreRefused) {
  ASSERT_EQ(cli("", "trust init " + repo("vision/lenet") + " --root-key " + key_file("root1") + " --release-key " +
                        key_file("rel1") + ".pub").rc, 0);
  CliResult push = cli("", "push " + package_ + " " + repo("vision/lenet:1.0") + " --release-key " + key_file("rel1"));
  ASSERT_EQ(push.rc, 0) << push.output;
  const std::string targets_v1 = manifest_bytes("vision/lenet", "trust-targets");
  CliResult pull = as("a", "pull " + repo("vision/lenet:1.0") + " --trust-root " + key_file("root1") + ".pub --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["trust_version"], 1);
  // Without a trusted root key and nothing cached, the metadata has no anchor.
  EXPECT_NE(as("b", "pull " + repo("vision/lenet:1.0") + " --trust-root " + key_file("rogue") + ".pub").rc, 0);

  push = cli("", "push " + other_package("release two") + " " + repo("vision/lenet:2.0") + " --release-key " + key_file("rel1"));
  ASSERT_EQ(push.rc, 0) << push.output;
  const std::string targets_v2 = manifest_bytes("vision/lenet", "trust-targets");
  pull = as("a", "pull " + repo("vision/lenet:2.0") + " --json");  // the cache now enforces the metadata
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["trust_version"], 2);

  // Rollback: the registry serves targets version 1 again.
  ASSERT_EQ(put_manifest("vision/lenet", "trust-targets", targets_v1), 201);
  pull = as("a", "pull " + repo("vision/lenet:1.0"));
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("rollback refused"), std::string::npos) << pull.output;
  ASSERT_EQ(put_manifest("vision/lenet", "trust-targets", targets_v2), 201);

  // Mix-and-match: tag 1.0 moved to release 2.0's manifest.
  const std::string v1_manifest = manifest_bytes("vision/lenet", "1.0");
  ASSERT_EQ(put_manifest("vision/lenet", "1.0", manifest_bytes("vision/lenet", "2.0")), 201);
  pull = as("a", "pull " + repo("vision/lenet:1.0"));
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("mix-and-match refused"), std::string::npos) << pull.output;
  ASSERT_EQ(put_manifest("vision/lenet", "1.0", v1_manifest), 201);
  // ... and another repository's (validly signed) targets put in this one's place.
  ASSERT_EQ(cli("", "trust init " + repo("vision/other") + " --root-key " + key_file("root1") + " --release-key " +
                        key_file("rel1") + ".pub").rc, 0);
  ASSERT_EQ(cli("", "push " + package_ + " " + repo("vision/other:9.0") + " --release-key " + key_file("rel1")).rc, 0);
  ASSERT_EQ(put_manifest("vision/lenet", "trust-targets", manifest_bytes("vision/other", "trust-targets")), 201);
  pull = as("a", "pull " + repo("vision/lenet:1.0"));
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("of repository 'vision/other', not 'vision/lenet'"), std::string::npos) << pull.output;

  // A key the root does not list: the publisher refuses to use it, and a client refuses targets it signed.
  push = cli("", "push " + package_ + " " + repo("vision/lenet:3.0") + " --release-key " + key_file("rogue"));
  EXPECT_EQ(push.rc, 1) << push.output;
  EXPECT_NE(push.output.find("not a targets key"), std::string::npos) << push.output;
  json forged = json::parse(read_all(dir_.file("a-cache") + "/trust/" + server_->registry() + "/vision/lenet/targets.json"));
  forged["version"] = 3;
  put_document("vision/lenet", "trust-targets", store::detail::sign_metadata(forged, {key_file("rogue")}));
  pull = as("a", "pull " + repo("vision/lenet:1.0"));
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("which the root does not list for targets"), std::string::npos) << pull.output;

  // Freeze: metadata past its expiry is refused even though its signature is good.
  ASSERT_EQ(cli("", "trust init " + repo("vision/fast") + " --root-key " + key_file("root1") + " --release-key " +
                        key_file("rel1") + ".pub").rc, 0);
  ASSERT_EQ(cli("", "push " + package_ + " " + repo("vision/fast:1.0") + " --release-key " + key_file("rel1") +
                        " --release-ttl 1").rc, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  pull = as("c", "pull " + repo("vision/fast:1.0") + " --trust-root " + key_file("root1") + ".pub");
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("freeze refused"), std::string::npos) << pull.output;
}

TEST_F(StoreTrust, RootKeysRotateAndForgedRotationsAreRefused) {
  ASSERT_EQ(cli("", "trust init " + repo("vision/lenet") + " --root-key " + key_file("root1") + " --release-key " +
                        key_file("rel1") + ".pub").rc, 0);
  ASSERT_EQ(cli("", "push " + package_ + " " + repo("vision/lenet:1.0") + " --release-key " + key_file("rel1")).rc, 0);
  ASSERT_EQ(as("a", "pull " + repo("vision/lenet:1.0") + " --trust-root " + key_file("root1") + ".pub").rc, 0);
  // The old root key signs the new root, which names a new root key and a new release key.
  CliResult rotate = cli("", "trust rotate " + repo("vision/lenet") + " --root-key " + key_file("root1") + " --new-root-key " +
                                 key_file("root2") + " --release-key " + key_file("rel2") + ".pub");
  ASSERT_EQ(rotate.rc, 0) << rotate.output;
  EXPECT_NE(rotate.output.find("v2"), std::string::npos) << rotate.output;
  // The retired release key can no longer publish; the new one can.
  EXPECT_EQ(cli("", "push " + package_ + " " + repo("vision/lenet:2.0") + " --release-key " + key_file("rel1")).rc, 1);
  CliResult push = cli("", "push " + other_package("two") + " " + repo("vision/lenet:2.0") + " --release-key " + key_file("rel2"));
  ASSERT_EQ(push.rc, 0) << push.output;
  // A client that trusted root v1 follows the chain to v2 and accepts targets signed by the new key.
  CliResult pull = as("a", "pull " + repo("vision/lenet:2.0") + " --json");
  ASSERT_EQ(pull.rc, 0) << pull.output;
  EXPECT_EQ(parse_json_line(pull.output)["trust_version"], 2);
  // So does a new client pinned to the original root key.
  ASSERT_EQ(as("b", "pull " + repo("vision/lenet:1.0") + " --trust-root " + key_file("root1") + ".pub").rc, 0);
  // A root v3 signed only by a key of the attacker's choosing is refused.
  const json root3 = store::detail::make_root("vision/lenet", 3, static_cast<std::int64_t>(std::time(nullptr)) + 3600,
                                              {store::detail::public_key_of_secret(key_file("rogue"))},
                                              {store::detail::public_key_of_secret(key_file("rogue"))});
  put_document("vision/lenet", "trust-root-3", store::detail::sign_metadata(root3, {key_file("rogue")}));
  pull = as("a", "pull " + repo("vision/lenet:2.0"));
  EXPECT_EQ(pull.rc, 1) << pull.output;
  EXPECT_NE(pull.output.find("root v3 (by the previous root's keys)"), std::string::npos) << pull.output;
}

}  // namespace
}  // namespace espresso
