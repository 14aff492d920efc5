// What a training run leaves beside its snapshots: a CSV of the curve and a PNG plot of it.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace espresso::train {

struct CurvePoint {
  std::int64_t iteration = 0;
  std::optional<double> loss;  // the smoothed training loss
  std::optional<double> lr;
  std::vector<double> tests;  // one per test column; empty on rows without a test
};

// Appends rows "iteration,loss,lr,<test columns>" to a CSV file (created with its header) and keeps them
// for the plot. A resumed run starts a new file, as its curve continues from the snapshot.
class TrainingLog {
 public:
  TrainingLog(std::string csv_path, std::vector<std::string> test_columns);

  void add(const CurvePoint& point);
  const std::vector<CurvePoint>& points() const { return points_; }
  const std::vector<std::string>& test_columns() const { return test_columns_; }

 private:
  std::string csv_path_;
  std::vector<std::string> test_columns_;
  std::ofstream csv_;
  std::vector<CurvePoint> points_;
};

// Draws the training loss (blue, scaled to its maximum) and `accuracy_column`'s values (red, on 0..1)
// against the iteration, over a grid of tenths, and writes it as a PNG atomically. -1 for no accuracy
// curve. Throws FileError when the file cannot be written.
void write_curve_png(const std::string& path, const std::vector<CurvePoint>& points, int accuracy_column);

}  // namespace espresso::train
