// Data-parallel training: one process per device, gradients averaged across processes ("ranks") after
// each backward pass, so every rank takes the same solver step (docs/distributed.md).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace espresso::train {

enum class CommBackend { tcp, nccl };

struct DistributedOptions {
  // false: train alone, without a communicator.
  bool enabled = false;
  int rank = 0;
  int world_size = 1;
  // Where rank 0 listens for the others (TCP). The same on every rank.
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // tcp: ring all-reduce over sockets between processes, CPU tensors. nccl: NCCL (loaded at run time)
  // for the gradients on the GPU, the TCP connections for everything else.
  CommBackend backend = CommBackend::tcp;
  // How long a rank waits for another before giving up with a DistributedError naming it (start-up,
  // every exchange, the final barrier).
  double timeout_seconds = 300.0;
  // Gradients go out in buckets of about this many bytes, each as soon as the backward pass has
  // finished every parameter in it, so communication overlaps the rest of backward.
  std::size_t bucket_bytes = std::size_t{25} << 20;
};

// "tcp" or "nccl"; throws UnsupportedError otherwise.
CommBackend parse_comm_backend(const std::string& name);
const char* comm_backend_name(CommBackend backend);

// Rank and world size from the environment, first found of: ESPRESSO_RANK/ESPRESSO_WORLD_SIZE,
// Open MPI's OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE, torchrun's RANK/WORLD_SIZE; the rendezvous from
// ESPRESSO_MASTER_ADDR/ESPRESSO_MASTER_PORT (or MASTER_ADDR/MASTER_PORT), the backend from
// ESPRESSO_DIST_BACKEND, the timeout from ESPRESSO_DIST_TIMEOUT (seconds). nullopt when no rank
// variables are set. Throws UnsupportedError naming the variable for values that do not parse or a
// rank outside [0, world size).
std::optional<DistributedOptions> distributed_from_environment();

// The rank's index among the processes of its machine when the launcher says so
// (OMPI_COMM_WORLD_LOCAL_RANK, LOCAL_RANK, ESPRESSO_LOCAL_RANK), else -1: picks a GPU per process.
int local_rank_from_environment();

// Whether NCCL can be loaded here (libnccl.so.2 on the library path, $ESPRESSO_NCCL_LIBRARY, or next
// to CUDA), and its version as "2.28.9"; `why` says what is missing otherwise.
bool nccl_available(std::string* version_or_why = nullptr);

}  // namespace espresso::train
