#include "store/web_page.h"

#include <string>

#include "espresso/web_assets.h"

namespace espresso::web {

bool send_asset(const httplib::Request& req, httplib::Response& res) {
  const Asset* asset = find_asset(req.path);
  if (asset == nullptr) return false;
  res.set_content(std::string(asset->bytes), std::string(asset->content_type));
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
                 "script-src 'self'; connect-src 'self'");
  return true;
}

nlohmann::json classification_json(const ImageClassification& result) {
  nlohmann::json top = nlohmann::json::array();
  for (const ClassScore& c : result.top) top.push_back({{"index", c.index}, {"label", c.label}, {"probability", c.probability}});
  return {{"top", top},
          {"output", result.output},
          {"softmax_applied", result.softmax_applied},
          {"decode_ms", result.decode_ms},
          {"forward_ms", result.forward_ms},
          {"milliseconds", result.milliseconds}};
}

}  // namespace espresso::web
