// Communicators: how the ranks of a data-parallel run talk. Every rank calls the same operations in the
// same order; a rank that dies, or does not answer within the timeout, turns every later call on the
// others into a DistributedError naming it.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "espresso/distributed.h"
#include "espresso/tensor.h"

namespace espresso::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string name() const = 0;

  // Host memory, blocking. Sums `count` floats elementwise across ranks (average: then divides by the
  // world size); every rank ends with the same bytes.
  virtual void all_reduce(float* data, std::size_t count, bool average) = 0;
  // Copies `bytes` bytes from `root`'s buffer into everyone's.
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Rank 0 gets every rank's text (index = rank); the others get an empty list.
  virtual std::vector<std::string> gather_text(const std::string& text) = 0;
  // Everyone gets rank 0's text.
  virtual std::string broadcast_text(const std::string& text) = 0;

  // Gradients: averages the tensors in place across ranks without waiting; they are on the device the
  // communicator serves (CPU tensors for tcp, one GPU's for nccl) and must not change until finish().
  virtual void start_average(std::vector<Tensor> tensors) = 0;
  // Waits for everything started; rethrows what failed.
  virtual void finish() = 0;
};

// Connects to the other ranks (rank 0 listens on master_addr:master_port, the others connect to it
// and then to their ring neighbours). Throws DistributedError after timeout_seconds naming the ranks
// that never arrived, or when ranks disagree on the world size.
std::unique_ptr<Communicator> connect_tcp(const DistributedOptions& options);

// NCCL for the gradients on cuda:`device_index`, over the TCP connections made by connect_tcp (which it
// keeps for host-side operations and to notice dead ranks). Sets NCCL_NVLS_ENABLE=0 unless it is set.
// Throws UnsupportedError when NCCL or the CUDA driver cannot be loaded.
std::unique_ptr<Communicator> connect_nccl(const DistributedOptions& options, int device_index);

}  // namespace espresso::train
