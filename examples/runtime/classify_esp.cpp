// Classifies MNIST test digits with a LeNet packed as .esp (`espresso convert ... --scale 0.00390625`),
// using only espresso's inference component: Model::load_esp, Session, Tensor.
//   classify_esp LENET.esp IMAGES.idx LABELS.idx [COUNT]
// IMAGES.idx and LABELS.idx are MNIST's test files, uncompressed (gzip -d). Prints the accuracy over the
// first COUNT images (default 1000); exits 1 below 98 %.
#include <espresso/errors.h>
#include <espresso/model.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::vector<unsigned char> read_file(const char* path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s LENET.esp IMAGES.idx LABELS.idx [COUNT]\n", argv[0]);
    return 2;
  }
  const std::vector<unsigned char> images = read_file(argv[2]);
  const std::vector<unsigned char> labels = read_file(argv[3]);
  constexpr std::size_t kImageHeader = 16, kLabelHeader = 8, kPixels = 28 * 28;
  if (images.size() < kImageHeader + kPixels || labels.size() < kLabelHeader + 1) {
    std::fprintf(stderr, "error: %s or %s is not an MNIST idx file\n", argv[2], argv[3]);
    return 1;
  }
  const auto available = static_cast<std::int64_t>(
      std::min((images.size() - kImageHeader) / kPixels, labels.size() - kLabelHeader));
  const std::int64_t count = std::min<std::int64_t>(argc > 4 ? std::stoll(argv[4]) : 1000, available);
  try {
    const auto model = espresso::Model::load_esp(argv[1]);
    espresso::Session session(model);
    const float scale = static_cast<float>(model->graph().metadata.preprocessing.scale);
    constexpr std::int64_t kBatch = 100;
    std::int64_t correct = 0;
    for (std::int64_t first = 0; first < count; first += kBatch) {
      const std::int64_t n = std::min(kBatch, count - first);
      espresso::Tensor batch = espresso::Tensor::empty(espresso::Shape{n, 1, 28, 28});
      float* values = batch.data<float>();
      const unsigned char* pixels = images.data() + kImageHeader + static_cast<std::size_t>(first) * kPixels;
      for (std::size_t i = 0; i < static_cast<std::size_t>(n) * kPixels; ++i) values[i] = pixels[i] * scale;
      const espresso::Tensor prob = session.run({{model->graph().inputs[0].name, batch}}).at(model->graph().outputs[0]);
      const float* p = prob.data<float>();
      for (std::int64_t i = 0; i < n; ++i) {
        const auto best = std::max_element(p + i * 10, p + (i + 1) * 10) - (p + i * 10);
        if (best == labels[kLabelHeader + static_cast<std::size_t>(first + i)]) ++correct;
      }
    }
    const double accuracy = static_cast<double>(correct) / static_cast<double>(count);
    std::printf("accuracy: %.4f (%lld/%lld)\n", accuracy, static_cast<long long>(correct),
                static_cast<long long>(count));
    return accuracy >= 0.98 ? 0 : 1;
  } catch (const espresso::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
