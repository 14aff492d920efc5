#include "memory_report.h"

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "common.h"

namespace espresso::cli {

void print_training_memory(const train::TrainingMemory& memory, std::ostream& out) {
  const MemoryReport& net = memory.train;
  struct Row {
    std::string category;
    std::size_t planned, naive;
  };
  std::size_t test_planned = 0, test_naive = 0, test_workspace = 0;
  for (const MemoryReport& test : memory.tests) {
    test_planned += test.planned_bytes;
    test_naive += test.naive_bytes;
    test_workspace += test.workspace_bytes;
  }
  const std::size_t naive_workspace = std::max(net.workspace_bytes, net.arena_workspace_bytes);
  const std::vector<Row> rows = {
      {"weights", net.weight_bytes, net.weight_bytes},
      {"weight gradients", net.weight_grad_bytes, net.weight_grad_bytes},
      {"solver history", memory.solver_history_bytes, memory.solver_history_bytes},
      {"activations", net.activation_planned_bytes, net.activation_bytes},
      {"activation gradients", net.activation_grad_planned_bytes, net.activation_grad_bytes},
      // Naive: one workspace for every step, as large as the largest the arena holds.
      {"workspace", net.workspace_bytes + test_workspace, naive_workspace + test_workspace},
      {"test nets' activations", test_planned, test_naive},
  };
  const std::string arena = net.arena_workspace_bytes > 0 ? "activations + gradients + workspaces, one arena"
                                                          : "activations + gradients, one arena";
  std::size_t width = arena.size();
  for (const Row& row : rows) width = std::max(width, row.category.size());
  auto line = [&](const std::string& category, std::size_t planned, std::size_t naive) {
    const std::string a = with_commas(static_cast<std::int64_t>(planned));
    const std::string b = with_commas(static_cast<std::int64_t>(naive));
    out << "  " << category << std::string(width + 2 - category.size(), ' ')
        << std::string(14 - std::min<std::size_t>(a.size(), 14), ' ') << a
        << std::string(16 - std::min<std::size_t>(b.size(), 16), ' ') << b << '\n';
  };
  out << "Training memory (bytes; naive: every tensor and gradient in its own buffer, as Caffe keeps them)\n";
  out << "  " << std::string(width + 2, ' ') << "       planned           naive\n";
  for (const Row& row : rows) line(row.category, row.planned, row.naive);
  // Activations and their gradients share one arena (with the GPU's workspaces), reusing memory across them.
  const std::size_t planned_total = net.weight_bytes + net.weight_grad_bytes + memory.solver_history_bytes +
                                    net.planned_bytes + net.workspace_bytes + test_workspace + test_planned;
  const std::size_t naive_total = net.weight_bytes + net.weight_grad_bytes + memory.solver_history_bytes +
                                  net.naive_bytes + naive_workspace + test_workspace + test_naive;
  line(arena, net.planned_bytes, net.naive_bytes);
  line("total", planned_total, naive_total);
  out << "  (planned " << binary_bytes(planned_total) << " vs naive " << binary_bytes(naive_total)
      << "; test nets use the train net's weights)\n";
  print_busiest_moment(net, out);
}

namespace {

// Rows (name, bytes), largest first: the first `shown`, then the rest summed in one line.
void print_largest(const std::vector<std::pair<std::string, std::size_t>>& rows, std::size_t shown,
                   std::ostream& out) {
  std::size_t rest = 0;
  const auto line = [&](std::size_t bytes, const std::string& name) {
    const std::string amount = with_commas(static_cast<std::int64_t>(bytes));
    out << "  " << std::string(16 - std::min<std::size_t>(amount.size(), 16), ' ') << amount << "  " << name
        << '\n';
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i < shown) {
      line(rows[i].second, rows[i].first);
    } else {
      rest += rows[i].second;
    }
  }
  if (rest > 0) line(rest, std::to_string(rows.size() - shown) + " more");
}

}  // namespace

void print_busiest_moment(const MemoryReport& net, std::ostream& out) {
  if (net.busiest_buffers.empty()) return;
  std::size_t total = 0;
  for (const auto& buffer : net.busiest_buffers) total += buffer.second;
  out << "The arena's busiest moment, " << net.busiest_moment << ": "
      << with_commas(static_cast<std::int64_t>(total)) << " bytes in " << net.busiest_buffers.size()
      << " buffers\n";
  print_largest(net.busiest_buffers, 12, out);
}

void print_peak_by_purpose(const DeviceMemoryUse& use, std::ostream& out) {
  out << "In use at the device's peak, " << with_commas(static_cast<std::int64_t>(use.peak_bytes))
      << " bytes, by purpose:\n";
  print_largest(use.peak_by_purpose, 10, out);
}

}  // namespace espresso::cli
