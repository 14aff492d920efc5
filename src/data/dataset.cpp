#include "espresso/data.h"

#include "data/cifar.h"
#include "espresso/errors.h"

namespace espresso::data {

Split parse_split(const std::string& text) {
  if (text == "train") return Split::train;
  if (text == "test") return Split::test;
  throw DataError("unknown split '" + text + "' (expected train or test)");
}

const char* split_name(Split split) { return split == Split::train ? "train" : "test"; }

DatasetKind parse_dataset_kind(const std::string& text) {
  if (text == "mnist") return DatasetKind::mnist;
  if (text == "fashion-mnist") return DatasetKind::fashion_mnist;
  if (text == "cifar10") return DatasetKind::cifar10;
  throw DataError("unknown dataset '" + text + "' (known: mnist, fashion-mnist, cifar10)");
}

LabeledImages load_dataset(DatasetKind kind, const std::string& dir, Split split) {
  switch (kind) {
    case DatasetKind::mnist:
    case DatasetKind::fashion_mnist:
      // Fashion-MNIST deliberately reuses MNIST's file names and format.
      return load_mnist(dir, split);
    case DatasetKind::cifar10:
      return load_cifar10(dir, split);
  }
  throw DataError("unknown dataset kind");
}

}  // namespace espresso::data
