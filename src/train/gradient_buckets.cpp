#include "train/gradient_buckets.h"

namespace espresso::train {

GradientBuckets::GradientBuckets(const std::vector<Parameter>& params, std::size_t bucket_bytes,
                                 Communicator& comm, std::function<void()> before_send)
    : comm_(comm), before_send_(std::move(before_send)) {
  // Parameters are listed in forward order of their owning layers, and a gradient is complete when
  // its owner's backward has run: backward finishes them from the last to the first.
  std::size_t bytes = 0;
  for (std::size_t i = params.size(); i-- > 0;) {
    const Parameter& p = params[i];
    if (buckets_.empty() || bytes >= bucket_bytes) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().grads.push_back(p.grad);
    ++buckets_.back().size;
    bytes += p.grad.bytes();
    bucket_of_layer_[p.layer].push_back(buckets_.size() - 1);
  }
  reset();
}

void GradientBuckets::reset() {
  for (Bucket& b : buckets_) b.waiting = b.size;
  next_ = 0;
}

void GradientBuckets::layer_done(const std::string& layer) {
  auto it = bucket_of_layer_.find(layer);
  if (it == bucket_of_layer_.end()) return;
  for (std::size_t bucket : it->second) --buckets_[bucket].waiting;
  send_ready();
}

void GradientBuckets::send_ready() {
  bool waited = false;
  while (next_ < buckets_.size() && buckets_[next_].waiting == 0) {
    if (!waited && before_send_) before_send_();
    waited = true;
    comm_.start_average(buckets_[next_].grads);
    ++next_;
  }
}

void GradientBuckets::finish() {
  if (next_ < buckets_.size()) {
    if (before_send_) before_send_();
    for (; next_ < buckets_.size(); ++next_) comm_.start_average(buckets_[next_].grads);
  }
  comm_.finish();
}

}  // namespace espresso::train
