// Energy counters for `espresso bench --compare`: a GPU's total-energy counter from NVML (loaded at run
// time, so machines without the driver simply have none) and the CPU packages' RAPL counters from
// Linux powercap where this user may read them.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "espresso/tensor.h"

namespace espresso::cli {

class EnergyMeter {
 public:
  virtual ~EnergyMeter() = default;
  // Joules consumed since some fixed point; differences between two readings are what count.
  virtual double joules() = 0;
  virtual std::string source() const = 0;
};

// The meter for a device, or nullptr with `why_not` set when none is readable.
std::unique_ptr<EnergyMeter> open_energy_meter(Device device, std::string& why_not);

}  // namespace espresso::cli
