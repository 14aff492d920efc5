#include "train/training_log.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "espresso/errors.h"

namespace espresso::train {
namespace {

using Rgb = std::array<std::uint8_t, 3>;

constexpr int kWidth = 640;
constexpr int kHeight = 400;
constexpr int kMargin = 40;
constexpr Rgb kBackground = {255, 255, 255};
constexpr Rgb kGrid = {225, 225, 225};
constexpr Rgb kAxis = {0, 0, 0};
constexpr Rgb kLoss = {31, 119, 180};
constexpr Rgb kAccuracy = {214, 39, 40};

class Canvas {
 public:
  Canvas() : pixels_(static_cast<std::size_t>(kWidth * kHeight * 3)) {
    for (int i = 0; i < kWidth * kHeight; ++i)
      std::copy(kBackground.begin(), kBackground.end(), &pixels_[i * 3]);
  }
  void dot(int x, int y, const Rgb& color) {
    if (x < 0 || y < 0 || x >= kWidth || y >= kHeight) return;
    std::copy(color.begin(), color.end(), &pixels_[static_cast<std::size_t>((y * kWidth + x) * 3)]);
  }
  // Two pixels wide so that the curves stand out from the grid.
  void line(double x0, double y0, double x1, double y1, const Rgb& color, bool thick = false) {
    const int steps = static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int s = 0; s <= steps; ++s) {
      const double t = static_cast<double>(s) / steps;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0)));
      const int y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      dot(x, y, color);
      if (thick) {
        dot(x + 1, y, color);
        dot(x, y + 1, color);
      }
    }
  }
  // `text` in a 5x7 pixel font with one pixel between letters; (x, y) is the top left corner.
  void text(int x, int y, const std::string& text, const Rgb& color) {
    for (char c : text) {
      if (const std::array<std::uint8_t, 7>* glyph = glyph_of(c)) {
        for (int row = 0; row < 7; ++row) {
          for (int column = 0; column < 5; ++column) {
            if ((*glyph)[static_cast<std::size_t>(row)] & (0x10 >> column)) dot(x + column, y + row, color);
          }
        }
      }
      x += 6;
    }
  }
  static int text_width(const std::string& text) { return static_cast<int>(text.size()) * 6 - 1; }
  const std::uint8_t* data() const { return pixels_.data(); }

 private:
  // Rows top to bottom, bit 4 the leftmost pixel: the digits and the letters of the axis labels.
  static const std::array<std::uint8_t, 7>* glyph_of(char c) {
    struct Glyph {
      char c;
      std::array<std::uint8_t, 7> rows;
    };
    static constexpr Glyph kFont[] = {
        {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
        {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1E, 0x01, 0x01, 0x0E, 0x01, 0x01, 0x1E}},
        {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
        {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
        {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
        {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
        {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
        {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}}, {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}},
        {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
        {'s', {0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E}}, {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}},
        {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}}, {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}},
        {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}}, {'y', {0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
        {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}}, {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
        {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    };
    for (const Glyph& g : kFont) {
      if (g.c == c) return &g.rows;
    }
    return nullptr;  // a space
  }

  std::vector<std::uint8_t> pixels_;
};

// Axis numbers: up to three significant digits, no exponent for the usual ranges.
std::string axis_number(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g", value);
  return text;
}

void polyline(Canvas& canvas, const std::vector<std::pair<double, double>>& points, double max_x,
              double max_y, const Rgb& color) {
  const double plot_w = kWidth - 2 * kMargin;
  const double plot_h = kHeight - 2 * kMargin;
  auto px = [&](double x) { return kMargin + plot_w * (max_x > 0 ? x / max_x : 0); };
  auto py = [&](double y) {
    return kHeight - kMargin - plot_h * (max_y > 0 ? std::clamp(y / max_y, 0.0, 1.0) : 0);
  };
  for (std::size_t i = 1; i < points.size(); ++i) {
    canvas.line(px(points[i - 1].first), py(points[i - 1].second), px(points[i].first), py(points[i].second),
                color, true);
  }
  if (points.size() == 1)
    canvas.line(px(points[0].first), py(points[0].second), px(points[0].first) + 2, py(points[0].second),
                color, true);
}

}  // namespace

TrainingLog::TrainingLog(std::string csv_path, std::vector<std::string> test_columns)
    : csv_path_(std::move(csv_path)), test_columns_(std::move(test_columns)), csv_(csv_path_) {
  if (!csv_) throw FileError(csv_path_ + ": cannot write the training log");
  csv_ << "iteration,loss,lr";
  for (const std::string& column : test_columns_) csv_ << ',' << column;
  csv_ << '\n';
  csv_.flush();
}

void TrainingLog::add(const CurvePoint& point) {
  points_.push_back(point);
  char number[32];
  auto put = [&](const std::optional<double>& value) {
    csv_ << ',';
    if (value) {
      std::snprintf(number, sizeof number, "%.8g", *value);
      csv_ << number;
    }
  };
  csv_ << point.iteration;
  put(point.loss);
  put(point.lr);
  for (std::size_t i = 0; i < test_columns_.size(); ++i)
    put(i < point.tests.size() ? std::optional<double>(point.tests[i]) : std::nullopt);
  csv_ << '\n';
  csv_.flush();
  if (!csv_) throw FileError(csv_path_ + ": cannot write the training log");
}

void write_curve_png(const std::string& path, const std::vector<CurvePoint>& points, int accuracy_column) {
  std::vector<std::pair<double, double>> loss;
  std::vector<std::pair<double, double>> accuracy;
  double max_x = 0, max_loss = 0;
  for (const CurvePoint& p : points) {
    const double x = static_cast<double>(p.iteration);
    max_x = std::max(max_x, x);
    if (p.loss && std::isfinite(*p.loss)) {
      loss.emplace_back(x, *p.loss);
      max_loss = std::max(max_loss, *p.loss);
    }
    if (accuracy_column >= 0 && static_cast<std::size_t>(accuracy_column) < p.tests.size())
      accuracy.emplace_back(x, p.tests[static_cast<std::size_t>(accuracy_column)]);
  }
  Canvas canvas;
  const int right = kWidth - kMargin;
  const int bottom = kHeight - kMargin;
  for (int i = 1; i <= 10; ++i) {
    const double y = bottom - (bottom - kMargin) * i / 10.0;
    const double x = kMargin + (right - kMargin) * i / 10.0;
    canvas.line(kMargin, y, right, y, kGrid);
    canvas.line(x, kMargin, x, bottom, kGrid);
  }
  canvas.line(kMargin, kMargin, kMargin, bottom, kAxis);
  canvas.line(kMargin, bottom, right, bottom, kAxis);
  canvas.line(right, kMargin, right, bottom, kAxis);
  polyline(canvas, loss, max_x, max_loss, kLoss);
  polyline(canvas, accuracy, max_x, 1.0, kAccuracy);
  // Legend swatches in the top margin: loss (blue) on the left axis, accuracy (red) on the right.
  for (int y = 14; y < 24; ++y) {
    canvas.line(kMargin, y, kMargin + 30, y, kLoss);
    canvas.line(right - 30, y, right, y, kAccuracy);
  }
  canvas.text(kMargin + 36, 15, "loss", kLoss);
  canvas.text(right - 36 - Canvas::text_width("accuracy"), 15, "accuracy", kAccuracy);
  // Scales at the bottom, middle and top of each axis, and the iterations under the plot.
  for (int i = 0; i <= 2; ++i) {
    const int y = bottom - (bottom - kMargin) * i / 2 - 3;
    const std::string left = axis_number(max_loss * i / 2.0);
    canvas.text(kMargin - 4 - Canvas::text_width(left), y, left, kLoss);
    canvas.text(right + 4, y, axis_number(i / 2.0), kAccuracy);
    const std::string iteration = std::to_string(std::llround(max_x * i / 2.0));
    const int x = kMargin + (right - kMargin) * i / 2 - Canvas::text_width(iteration) / 2;
    canvas.text(x, bottom + 5, iteration, kAxis);
  }
  canvas.text((kMargin + right - Canvas::text_width("iteration")) / 2, bottom + 18, "iteration", kAxis);
  const std::string temporary = path + ".tmp";
  if (!stbi_write_png(temporary.c_str(), kWidth, kHeight, 3, canvas.data(), kWidth * 3))
    throw FileError(path + ": cannot write the training curve");
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) throw FileError(path + ": cannot write the training curve (" + ec.message() + ")");
}

}  // namespace espresso::train
