// One image in, the top-K classes out: what a server's "try it" or a classify endpoint calls. The image
// bytes (JPEG, PNG, BMP, ...) are decoded with the size checked before anything is allocated, resized
// and normalised as the model's package says (ModelMetadata::preprocessing), run, and ranked.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "espresso/graph.h"
#include "espresso/model.h"

namespace espresso {

struct ClassScore {
  std::int64_t index = 0;
  std::string label;         // "" when the model has no labels
  double probability = 0.0;  // the Softmax output, or softmax of the raw scores
};

struct ImageClassification {
  std::vector<ClassScore> top;  // best first
  std::string output;           // the output that was ranked
  bool softmax_applied = false;  // the output was not a Softmax, so its scores went through one here
  double decode_ms = 0.0;        // decoding, resizing and normalising the image
  double forward_ms = 0.0;       // the forward pass
  double milliseconds = 0.0;     // all of it, from bytes to ranking
};

struct ImageClassifierOptions {
  int top = 5;  // at most the number of classes
  // Overrides what the package says (size, mean, scale, channel order); nullopt: the metadata's.
  std::optional<Preprocessing> preprocessing;
  // Overrides the package's labels; empty: the metadata's.
  std::vector<std::string> labels;
  // Names the image in error messages ("image", a file name, a form field).
  std::string what = "image";
};

// Throws UnsupportedError when the model is not a single-image-input classifier (not exactly one
// N x C x H x W input with C of 1 or 3, not exactly one output, a task other than "classification", or
// labels whose count differs from the output's classes), DataError when the bytes are not a decodable
// image or the preprocessing does not fit the input (mean values per channel), LimitError for an image
// larger than Limits::max_image_pixels, std::invalid_argument for top < 1. The session is reshaped to
// batch 1 (and to the preprocessing's size when it gives one).
ImageClassification classify_image(Session& session, std::span<const std::uint8_t> image,
                                   const ImageClassifierOptions& options = {});

// The checks of classify_image without an image: throws the same UnsupportedError for a model that is
// not a single-image-input classifier.
void check_image_classifier(const Model& model);

}  // namespace espresso
