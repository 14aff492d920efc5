// Model::load: any format through the importers. It lives here, above them, so that the inference-only
// component (espresso::runtime: Net, Model, Session, .esp packages) links no importer and no protobuf.
#include "espresso/import.h"
#include "espresso/model.h"

namespace espresso {

std::shared_ptr<const Model> Model::load(const std::string& path, const std::string& weights_path, Device device) {
  return std::make_shared<const Model>(load_model(path, weights_path), device);
}

}  // namespace espresso
