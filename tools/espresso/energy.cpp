#include "energy.h"

#include <dlfcn.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "espresso/devices.h"

namespace espresso::cli {
namespace {

// NVML's C interface, the few entry points used here (nvml.h): results are 0 on success.
using NvmlDevice = void*;
using NvmlInit = int (*)();
using NvmlShutdown = int (*)();
using NvmlHandleByBusId = int (*)(const char*, NvmlDevice*);
using NvmlTotalEnergy = int (*)(NvmlDevice, unsigned long long*);

class NvmlMeter final : public EnergyMeter {
 public:
  ~NvmlMeter() override {
    if (shutdown_ != nullptr) shutdown_();
    if (library_ != nullptr) dlclose(library_);
  }

  // Returns nullptr and says why when NVML or the counter is missing (GPUs before Volta lack it).
  static std::unique_ptr<NvmlMeter> open(const std::string& bus_id, std::string& why_not) {
    auto meter = std::unique_ptr<NvmlMeter>(new NvmlMeter);
    meter->library_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (meter->library_ == nullptr) {
      why_not = "NVML (libnvidia-ml.so.1) not found";
      return nullptr;
    }
    auto init = reinterpret_cast<NvmlInit>(dlsym(meter->library_, "nvmlInit_v2"));
    auto by_bus = reinterpret_cast<NvmlHandleByBusId>(dlsym(meter->library_, "nvmlDeviceGetHandleByPciBusId_v2"));
    meter->energy_ = reinterpret_cast<NvmlTotalEnergy>(dlsym(meter->library_, "nvmlDeviceGetTotalEnergyConsumption"));
    auto shutdown = reinterpret_cast<NvmlShutdown>(dlsym(meter->library_, "nvmlShutdown"));
    if (init == nullptr || by_bus == nullptr || meter->energy_ == nullptr || shutdown == nullptr) {
      why_not = "NVML lacks the total-energy counter";
      return nullptr;
    }
    if (init() != 0) {
      why_not = "NVML did not initialise";
      return nullptr;
    }
    meter->shutdown_ = shutdown;
    unsigned long long millijoules = 0;
    if (by_bus(bus_id.c_str(), &meter->device_) != 0 || meter->energy_(meter->device_, &millijoules) != 0) {
      why_not = "NVML has no energy counter for GPU " + bus_id;
      return nullptr;
    }
    return meter;
  }

  double joules() override {
    unsigned long long millijoules = 0;
    return energy_(device_, &millijoules) == 0 ? static_cast<double>(millijoules) / 1000.0 : 0.0;
  }
  std::string source() const override { return "NVML"; }

 private:
  NvmlMeter() = default;
  void* library_ = nullptr;
  NvmlShutdown shutdown_ = nullptr;
  NvmlTotalEnergy energy_ = nullptr;
  NvmlDevice device_ = nullptr;
};

// The package domains under /sys/class/powercap (intel-rapl:N, on AMD too), with wrap-around.
class RaplMeter final : public EnergyMeter {
 public:
  static std::unique_ptr<RaplMeter> open(std::string& why_not) {
    namespace fs = std::filesystem;
    auto meter = std::unique_ptr<RaplMeter>(new RaplMeter);
    std::error_code ec;
    for (int package = 0;; ++package) {
      const fs::path domain = "/sys/class/powercap/intel-rapl:" + std::to_string(package);
      if (!fs::exists(domain, ec)) break;
      Domain d{(domain / "energy_uj").string(), 0, 0, 0};
      std::optional<double> range = read_number((domain / "max_energy_range_uj").string());
      std::optional<double> now = read_number(d.counter);
      if (!now || !range) {
        why_not = "RAPL counters are not readable by this user";
        return nullptr;
      }
      d.range = *range;
      d.last = *now;
      meter->domains_.push_back(d);
    }
    if (meter->domains_.empty()) {
      why_not = "no RAPL counters (/sys/class/powercap/intel-rapl:*)";
      return nullptr;
    }
    return meter;
  }

  double joules() override {
    double total = 0;
    for (Domain& d : domains_) {
      const double now = read_number(d.counter).value_or(d.last);
      d.accumulated += now >= d.last ? now - d.last : now + d.range - d.last;
      d.last = now;
      total += d.accumulated;
    }
    return total / 1e6;
  }
  std::string source() const override { return "RAPL"; }

 private:
  struct Domain {
    std::string counter;
    double range, last, accumulated;
  };
  static std::optional<double> read_number(const std::string& path) {
    std::ifstream in(path);
    double value = 0;
    if (!(in >> value)) return std::nullopt;
    return value;
  }
  RaplMeter() = default;
  std::vector<Domain> domains_;
};

}  // namespace

std::unique_ptr<EnergyMeter> open_energy_meter(Device device, std::string& why_not) {
  if (device.is_cpu()) return RaplMeter::open(why_not);
  for (const DeviceInfo& info : list_devices()) {
    if (info.device == device) return NvmlMeter::open(info.pci_bus_id, why_not);
  }
  why_not = "no GPU " + device.str();
  return nullptr;
}

}  // namespace espresso::cli
