// A CIFAR-10 binary batch file.
#include "data/cifar.h"
#include "fuzz_target.h"

ESPRESSO_FUZZ_TARGET(cifar) {
  espresso::data::LabeledImages set;
  espresso::data::append_cifar10_batch(std::string(espresso::fuzz::as_text(data, size)), "fuzz_batch.bin", set);
}
