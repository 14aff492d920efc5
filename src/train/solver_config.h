// Solver settings from Caffe's SolverParameter (the trainer reads solver files through it).
#pragma once

#include <string>

#include "espresso/solver.h"

namespace espresso::caffe {
class SolverParameter;
}

namespace espresso::train {

// The solver settings of a SolverParameter (the older `solver_type` enum is honoured when `type` is
// not set). Throws ModelError naming the field for values Caffe would reject.
SolverConfig solver_config(const caffe::SolverParameter& param);

// A number in the solver's and trainer's messages and log lines: six significant digits, "NaN".
std::string format_number(double value);

}  // namespace espresso::train
