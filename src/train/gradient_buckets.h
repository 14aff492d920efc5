// Gradient buckets for data-parallel training: parameters grouped, in the order backward finishes
// them, into buckets of about `bucket_bytes`; a bucket is handed to the communicator the moment the
// backward pass has finished all of its gradients, so averaging runs while backward goes on.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "espresso/net.h"
#include "train/communicator.h"

namespace espresso::train {

class GradientBuckets {
 public:
  // `before_send` runs before each bucket goes out (on a GPU: wait for the queued backward work).
  GradientBuckets(const std::vector<Parameter>& params, std::size_t bucket_bytes, Communicator& comm,
                  std::function<void()> before_send);

  // A new backward pass begins.
  void reset();
  // The backward pass of `layer` is done: its parameters' gradients are complete. Sends every bucket
  // that is complete now, in bucket order (the same on every rank).
  void layer_done(const std::string& layer);
  // Sends what is left and waits: every gradient is then the average over the ranks.
  void finish();

  std::size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<Tensor> grads;
    std::size_t waiting = 0;  // gradients not complete yet in this pass
    std::size_t size = 0;
  };
  void send_ready();

  Communicator& comm_;
  std::function<void()> before_send_;
  std::vector<Bucket> buckets_;
  std::map<std::string, std::vector<std::size_t>> bucket_of_layer_;  // one entry per parameter
  std::size_t next_ = 0;                                             // the first bucket not sent in this pass
};

}  // namespace espresso::train
