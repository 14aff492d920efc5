// Classifies MNIST test digits with a Caffe LeNet through espresso's public API: one shared Model,
// a Session per thread of work, the dataset reader and Caffe's preprocessing.
//   classify_mnist LENET.prototxt LENET.caffemodel MNIST_DIR [COUNT]
// Prints the accuracy over the first COUNT images (default 1000); exits 1 below 98 %.
#include <espresso/data.h>
#include <espresso/errors.h>
#include <espresso/model.h>

#include <algorithm>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s LENET.prototxt LENET.caffemodel MNIST_DIR [COUNT]\n", argv[0]);
    return 2;
  }
  try {
    const auto model = espresso::Model::load(argv[1], argv[2]);
    espresso::Session session(model);
    const espresso::data::LabeledImages images =
        espresso::data::load_dataset(espresso::data::DatasetKind::mnist, argv[3], espresso::data::Split::test);
    const std::int64_t count = std::min<std::int64_t>(argc > 4 ? std::stoll(argv[4]) : 1000, images.count);

    constexpr std::int64_t kBatch = 100;
    const espresso::data::Preprocess preprocess{.mean = {}, .scale = 1.0f / 256};  // Caffe's LeNet scale
    std::int64_t correct = 0;
    for (std::int64_t first = 0; first < count; first += kBatch) {
      const std::int64_t n = std::min(kBatch, count - first);
      espresso::Tensor batch = espresso::Tensor::empty(espresso::Shape{n, 1, 28, 28});
      preprocess.apply(images.image(first), n, 1, 28 * 28, batch.data<float>());
      const espresso::Tensor prob = session.run({{"data", batch}}).at("prob");
      const float* p = prob.data<float>();
      for (std::int64_t i = 0; i < n; ++i) {
        const auto best = std::max_element(p + i * 10, p + (i + 1) * 10) - (p + i * 10);
        if (best == images.labels[static_cast<std::size_t>(first + i)]) ++correct;
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
