// The model catalog's web page (web/: plain HTML, CSS and JavaScript), embedded into the library at
// build time by cmake/embed_web.cmake, so any server of the page's APIs (/api/v1/models,
// /api/v1/models/NAME, POST /api/v1/models/NAME/classify) can serve it at "/". docs/web.md.
#pragma once

#include <string_view>
#include <vector>

namespace espresso::web {

struct Asset {
  std::string_view path;          // "/index.html", "/app.js", ...
  std::string_view content_type;  // "text/html; charset=utf-8", ...
  std::string_view bytes;
};

// Every embedded file.
const std::vector<Asset>& assets();
// The file a GET path names ("/" is "/index.html"), or nullptr.
const Asset* find_asset(std::string_view path);

}  // namespace espresso::web
