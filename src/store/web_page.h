// The catalog's web page (include/espresso/web_assets.h) over HTTP, for every server that offers the
// page's APIs: `store serve` and `espresso serve`.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "espresso/image_classifier.h"

namespace espresso::web {

// Answers a GET for one of the page's files, with headers that keep the browser to this origin; false
// when the path names none of them.
bool send_asset(const httplib::Request& req, httplib::Response& res);

// The fields of the page's classify answer (POST /api/v1/models/NAME/classify, docs/web.md) that come
// from the classification: top (index, label, probability), output, softmax_applied and the times.
nlohmann::json classification_json(const ImageClassification& result);

}  // namespace espresso::web
