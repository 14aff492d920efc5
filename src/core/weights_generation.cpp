#include "core/weights_generation.h"

#include <atomic>

namespace espresso {
namespace {
std::atomic<std::uint64_t> generation{0};
}  // namespace

std::uint64_t weights_generation() { return generation.load(std::memory_order_acquire); }
void note_weights_may_change() { generation.fetch_add(1, std::memory_order_acq_rel); }

}  // namespace espresso
