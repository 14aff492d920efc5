// A Caffe solver file (text-format SolverParameter).
#include "fuzz_target.h"
#include "import/caffe/caffe_format.h"

ESPRESSO_FUZZ_TARGET(caffe_solver) {
  espresso::caffe_format::parse_solver(std::string(espresso::fuzz::as_text(data, size)), "fuzz_solver.prototxt");
}
