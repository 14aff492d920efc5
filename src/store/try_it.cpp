// The catalog's "try it": stored packages in a ModelPool, one image classified per request.
#include "store/try_it.h"

#include <unistd.h>

#include <algorithm>

#include "espresso/errors.h"
#include "espresso/image_classifier.h"
#include "store/digest.h"
#include "store/web_page.h"

namespace espresso::store::detail {

namespace fs = std::filesystem;

TryIt::TryIt(fs::path packages, std::size_t budget_bytes) : packages_(std::move(packages)) {
  ModelPoolOptions options;
  options.budget_bytes = budget_bytes;
  options.session.threads = 0;
  options.max_idle_contexts = 2;
  pool_ = std::make_unique<ModelPool>(options);
}

nlohmann::json TryIt::classify(const std::string& name, const std::string& version, const std::string& manifest_digest,
                               const fs::path& package_blob, const std::string& package_digest,
                               std::span<const std::uint8_t> image, int top) {
  const std::string key = digest_hex(package_digest);
  {
    std::lock_guard lock(mutex_);
    const std::vector<std::string> known = pool_->models();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::error_code ec;
      fs::create_directories(packages_, ec);
      const fs::path link = packages_ / (key + ".esp");
      if (!fs::exists(link, ec)) {
        const fs::path temp = packages_ / (".tmp-" + key + "-" + std::to_string(::getpid()));
        fs::remove(temp, ec);
        fs::create_hard_link(package_blob, temp, ec);
        if (ec) fs::copy_file(package_blob, temp, ec);
        if (ec) throw TryItError{500, "UNKNOWN", "name", "cannot stage the package: " + ec.message()};
        fs::rename(temp, link, ec);
        if (ec) throw TryItError{500, "UNKNOWN", "name", "cannot stage the package: " + ec.message()};
      }
      pool_->add(key, link.string());
    }
  }
  nlohmann::json answer = {{"model", name}, {"version", version}, {"digest", manifest_digest}, {"device", "cpu"}};
  try {
    ModelRequest request = pool_->acquire(key);
    try {
      check_image_classifier(request.session().model());
    } catch (const UnsupportedError& e) {
      throw TryItError{422, "NOT_A_CLASSIFIER", "name", e.what()};
    }
    const ImageClassification result = classify_image(request.session(), image, {.top = top, .what = "image"});
    answer.update(web::classification_json(result));
  } catch (const LimitError& e) {
    throw TryItError{413, "IMAGE_TOO_LARGE", "image", e.what()};
  } catch (const DataError& e) {
    throw TryItError{400, "IMAGE_INVALID", "image", e.what()};
  } catch (const UnsupportedError& e) {
    throw TryItError{422, "NOT_A_CLASSIFIER", "name", e.what()};
  } catch (const ModelError& e) {
    throw TryItError{422, "MODEL_UNUSABLE", "name", e.what()};
  } catch (const ShapeError& e) {
    throw TryItError{422, "NOT_A_CLASSIFIER", "name", e.what()};
  } catch (const Error& e) {
    throw TryItError{422, "MODEL_UNUSABLE", "name", e.what()};
  }
  return answer;
}

}  // namespace espresso::store::detail
