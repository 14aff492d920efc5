// The TCP communicator: rank 0 holds a control connection to every other rank (rendezvous, start-up
// checks, broadcasts, barriers, and notices of dead ranks); the gradients go around a ring of
// connections (rank r sends to r+1 and receives from r-1) as a reduce-scatter and an all-gather, so
// each rank sends and receives about twice the buffer whatever the world size. Gradient buckets run on
// a worker thread while the backward pass goes on.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "train/communicator.h"

namespace espresso::train {

class TcpCommunicator final : public Communicator {
 public:
  explicit TcpCommunicator(const DistributedOptions& options);
  ~TcpCommunicator() override;
  TcpCommunicator(const TcpCommunicator&) = delete;
  TcpCommunicator& operator=(const TcpCommunicator&) = delete;

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }
  std::string name() const override { return "tcp"; }
  const DistributedOptions& options() const { return options_; }

  void all_reduce(float* data, std::size_t count, bool average) override;
  void broadcast(void* data, std::size_t bytes, int root) override;
  void barrier() override;
  std::vector<std::string> gather_text(const std::string& text) override;
  std::string broadcast_text(const std::string& text) override;
  void start_average(std::vector<Tensor> tensors) override;
  void finish() override;

  // Without blocking: throws DistributedError when a peer's control connection closed or rank 0 sent
  // a notice that a rank died (for communicators that wait on something else, like NCCL).
  void check_peers();

 private:
  enum class Message : std::uint32_t { data = 0x45535044, abort = 0x45535041 };

  void rendezvous();
  void connect_ring(const std::vector<std::string>& addresses, const std::vector<int>& ports, int listener);
  // Sends `send_len` bytes to `out_peer` over `out_fd` while receiving `recv_len` bytes from `in_peer`
  // over `in_fd` (either side may be empty), watching the other control connections for dead ranks.
  void transfer(int out_fd, int out_peer, const char* send, std::size_t send_len, int in_fd, int in_peer,
                char* recv, std::size_t recv_len);
  void send_message(int peer, const std::string& payload);
  std::string receive_message(int peer);
  void ring_all_reduce(float* data, std::size_t count);
  // Learns which rank died (a control connection closing, or rank 0's notice) within a short grace
  // period, and throws naming it; else throws naming `suspect` with `what`.
  [[noreturn]] void fail(int suspect, const std::string& what);
  // Reads what a control connection has without blocking: nothing, data for a later operation, a
  // notice from rank 0 (throws) or its end (throws naming the peer).
  void inspect_control(int peer, std::set<int>& pending_data);
  [[noreturn]] void peer_died(int peer, const std::string& how);
  // Without blocking, an abort notice naming `culprit`: from rank 0 to every rank but `except`, from
  // the others to rank 0 (which passes it on).
  void notify(int culprit, const std::string& message, int except);
  int control_fd(int peer) const;
  void throw_if_failed();
  void run_worker();
  std::string who() const;

  DistributedOptions options_;
  std::vector<int> control_;  // rank 0: one per rank (its own -1); others: [0] to rank 0
  int left_ = -1;             // from rank - 1
  int right_ = -1;            // to rank + 1

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<Tensor>> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::vector<float> flat_;
  std::thread worker_;
};

}  // namespace espresso::train
