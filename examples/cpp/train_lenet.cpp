// Trains Caffe's LeNet on MNIST for a few hundred iterations through espresso's public training API: the
// shared train/test net with its data read straight from the IDX files, Caffe's solver settings, and
// the loss read back as it goes down.
//   train_lenet LENET_TRAIN_TEST.prototxt MNIST_DIR OUT_DIR [ITERATIONS]
// Exits 1 when the loss of the last 20 iterations is not below half that of the first 20.
#include <espresso/errors.h>
#include <espresso/trainer.h>

#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>

namespace {

// The shared net reads LMDBs; point its Data layers at the IDX files instead (the `idx:` source).
std::string with_idx_sources(const std::string& net, const std::string& mnist) {
  std::string text = net;
  for (const char* lmdb : {"examples/mnist/mnist_train_lmdb", "examples/mnist/mnist_test_lmdb"}) {
    const auto at = text.find(lmdb);
    if (at != std::string::npos) text.replace(at, std::string(lmdb).size(), "idx:" + mnist);
  }
  for (std::size_t at; (at = text.find("backend: LMDB")) != std::string::npos;) text.erase(at, 13);
  return text;
}

double mean(const std::vector<float>& v, std::size_t begin, std::size_t end) {
  return std::accumulate(v.begin() + static_cast<std::ptrdiff_t>(begin), v.begin() + static_cast<std::ptrdiff_t>(end), 0.0) /
         static_cast<double>(end - begin);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s LENET_TRAIN_TEST.prototxt MNIST_DIR OUT_DIR [ITERATIONS]\n", argv[0]);
    return 2;
  }
  const std::string out = argv[3];
  const int iterations = argc > 4 ? std::stoi(argv[4]) : 300;
  try {
    std::stringstream net;
    net << std::ifstream(argv[1]).rdbuf();
    std::ofstream(out + "/lenet_train_test.prototxt") << with_idx_sources(net.str(), argv[2]);
    std::ofstream(out + "/lenet_solver.prototxt")
        << "net: \"" << out << "/lenet_train_test.prototxt\"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n"
        << "lr_policy: \"inv\"\ngamma: 0.0001\npower: 0.75\nmax_iter: " << iterations << "\nsnapshot_prefix: \"" << out
        << "/lenet\"\nrandom_seed: 1\n";

    std::ostringstream log;  // Caffe-style lines; this program prints its own summary
    espresso::train::Trainer trainer(out + "/lenet_solver.prototxt", {.log = &log, .write_curve = false});
    trainer.step(iterations);
    const std::vector<float>& losses = trainer.losses();
    const double first = mean(losses, 0, 20), last = mean(losses, losses.size() - 20, losses.size());
    std::printf("trained %lld iterations: loss %.4f -> %.4f\n", static_cast<long long>(trainer.iteration()), first,
                last);
    return last < 0.5 * first ? 0 : 1;
  } catch (const espresso::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
