// Reading the rank and rendezvous from the environment that launchers set.
#include "espresso/distributed.h"

#include <cerrno>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <utility>

#include "espresso/errors.h"

namespace espresso::train {
namespace {

const char* first_set(std::initializer_list<const char*> names, std::string& which) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value && *value) {
      which = name;
      return value;
    }
  }
  return nullptr;
}

long parse_integer(const char* text, const std::string& variable, long low, long high) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
    throw UnsupportedError("environment variable " + variable + "='" + text +
                           "': expected a whole number from " + std::to_string(low) + " to " +
                           std::to_string(high));
  }
  return value;
}

}  // namespace

CommBackend parse_comm_backend(const std::string& name) {
  if (name == "tcp" || name == "gloo") return CommBackend::tcp;
  if (name == "nccl") return CommBackend::nccl;
  throw UnsupportedError("unknown communication backend '" + name + "' (known: tcp, nccl)");
}

const char* comm_backend_name(CommBackend backend) { return backend == CommBackend::nccl ? "nccl" : "tcp"; }

std::optional<DistributedOptions> distributed_from_environment() {
  std::string rank_name, size_name;
  // Each launcher's pair together, so that a stray RANK does not combine with OMPI's size.
  const char* rank = nullptr;
  const char* size = nullptr;
  for (const auto& [r, s] :
       {std::pair{"ESPRESSO_RANK", "ESPRESSO_WORLD_SIZE"},
        std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"}, std::pair{"RANK", "WORLD_SIZE"}}) {
    rank = first_set({r}, rank_name);
    size = first_set({s}, size_name);
    if (rank || size) break;
  }
  if (!rank && !size) return std::nullopt;
  if (!rank || !size) {
    throw UnsupportedError("environment: " + (rank ? rank_name : size_name) +
                           " is set but not its partner (" + (rank ? "the world size" : "the rank") + ")");
  }
  DistributedOptions options;
  options.enabled = true;
  options.world_size = static_cast<int>(parse_integer(size, size_name, 1, 65536));
  options.rank = static_cast<int>(parse_integer(rank, rank_name, 0, options.world_size - 1));
  std::string name;
  if (const char* addr = first_set({"ESPRESSO_MASTER_ADDR", "MASTER_ADDR"}, name)) options.master_addr = addr;
  if (const char* port = first_set({"ESPRESSO_MASTER_PORT", "MASTER_PORT"}, name))
    options.master_port = static_cast<int>(parse_integer(port, name, 1, 65535));
  if (const char* backend = first_set({"ESPRESSO_DIST_BACKEND"}, name))
    options.backend = parse_comm_backend(backend);
  if (const char* timeout = first_set({"ESPRESSO_DIST_TIMEOUT"}, name))
    options.timeout_seconds = static_cast<double>(parse_integer(timeout, name, 1, 86400));
  if (const char* bucket = first_set({"ESPRESSO_BUCKET_KB"}, name))
    options.bucket_bytes = static_cast<std::size_t>(parse_integer(bucket, name, 1, 1 << 22)) << 10;
  return options;
}

int local_rank_from_environment() {
  std::string name;
  const char* value = first_set({"ESPRESSO_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK"}, name);
  return value ? static_cast<int>(parse_integer(value, name, 0, 65535)) : -1;
}

}  // namespace espresso::train
