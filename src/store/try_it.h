// "Try it" for the catalog: a stored package loaded into a small ModelPool and one image classified
// with classify_image (include/espresso/image_classifier.h). Used by the server's
// POST /api/v1/models/NAME/classify.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

#include "espresso/model_pool.h"

namespace espresso::store::detail {

// A refusal for the client: HTTP status, error code and the request field it concerns.
struct TryItError {
  int status = 400;
  std::string code;
  std::string field;
  std::string message;
};

class TryIt {
 public:
  // Packages are hard-linked as `packages`/HEX.esp (the loader picks the format by extension).
  TryIt(std::filesystem::path packages, std::size_t budget_bytes);
  // Classifies `image` with the package blob `package_blob` (digest `package_digest`) of model `name`;
  // the answer's JSON: {model, version, digest, top: [{index, label, probability}], milliseconds,
  // decode_ms, forward_ms, softmax_applied, output, device}. Throws TryItError.
  nlohmann::json classify(const std::string& name, const std::string& version, const std::string& manifest_digest,
                          const std::filesystem::path& package_blob, const std::string& package_digest,
                          std::span<const std::uint8_t> image, int top);

 private:
  std::filesystem::path packages_;
  std::mutex mutex_;  // guards registering packages in the pool
  std::unique_ptr<ModelPool> pool_;
};

}  // namespace espresso::store::detail
