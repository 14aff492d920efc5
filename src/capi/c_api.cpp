// The C API over Model and Session: every entry point catches what the C++ API throws and turns it into
// a status and this thread's message.
#include "espresso/c_api.h"

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/model.h"

struct esp_model {
  std::shared_ptr<const espresso::Model> model;
  std::vector<std::string> inputs, outputs;
};

struct esp_session {
  std::shared_ptr<const espresso::Model> model;
  espresso::Session session;
  std::map<std::string, espresso::Tensor> outputs;  // host copies of the last run's outputs
};

namespace {

thread_local std::string last_error;

esp_status fail(esp_status status, const std::string& message) {
  last_error = message;
  return status;
}

// Runs `body`, mapping espresso's typed errors to statuses.
template <class Body>
esp_status guarded(Body&& body) {
  try {
    body();
    last_error.clear();
    return ESP_OK;
  } catch (const espresso::FileError& e) {
    return fail(ESP_ERROR_FILE, e.what());
  } catch (const espresso::ParseError& e) {
    return fail(ESP_ERROR_PARSE, e.what());
  } catch (const espresso::ModelError& e) {
    return fail(ESP_ERROR_MODEL, e.what());
  } catch (const espresso::ShapeError& e) {
    return fail(ESP_ERROR_SHAPE, e.what());
  } catch (const espresso::UnsupportedError& e) {
    return fail(ESP_ERROR_UNSUPPORTED, e.what());
  } catch (const espresso::DataError& e) {
    return fail(ESP_ERROR_DATA, e.what());
  } catch (const espresso::DeviceError& e) {
    return fail(ESP_ERROR_DEVICE, e.what());
  } catch (const espresso::LimitError& e) {
    return fail(ESP_ERROR_LIMIT, e.what());
  } catch (const std::exception& e) {
    return fail(ESP_ERROR_INTERNAL, e.what());
  } catch (...) {
    return fail(ESP_ERROR_INTERNAL, "unknown error");
  }
}

esp_status null_argument(const char* function, const char* argument) {
  return fail(ESP_ERROR_INVALID_ARGUMENT, std::string(function) + ": '" + argument + "' is NULL");
}

espresso::Device device_of(const char* device) {
  return device == nullptr ? espresso::Device::cpu() : espresso::Device::parse(device);
}

esp_model* wrap(espresso::Graph graph, const char* device) {
  auto handle = std::make_unique<esp_model>();
  handle->model = std::make_shared<const espresso::Model>(std::move(graph), device_of(device));
  for (const espresso::InputSpec& input : handle->model->graph().inputs) handle->inputs.push_back(input.name);
  handle->outputs = handle->model->graph().outputs;
  return handle.release();
}

esp_status name_at(const std::vector<std::string>& names, size_t index, const char** name, const char* function) {
  if (name == nullptr) return null_argument(function, "name");
  if (index >= names.size()) {
    return fail(ESP_ERROR_INVALID_ARGUMENT, std::string(function) + ": index " + std::to_string(index) +
                                                " is past the last of " + std::to_string(names.size()));
  }
  *name = names[index].c_str();
  last_error.clear();
  return ESP_OK;
}

}  // namespace

extern "C" {

const char* esp_last_error(void) { return last_error.c_str(); }

const char* esp_version(void) { return ESPRESSO_VERSION; }

esp_status esp_model_load(const char* path, const char* weights_path, const char* device, esp_model** model) {
  if (path == nullptr) return null_argument("esp_model_load", "path");
  if (model == nullptr) return null_argument("esp_model_load", "model");
  *model = nullptr;
  return guarded([&] { *model = wrap(espresso::load_model(path, weights_path ? weights_path : ""), device); });
}

esp_status esp_model_load_memory(const void* bytes, size_t size, const void* weights, size_t weights_size,
                                 esp_format format, const char* device, esp_model** model) {
  if (bytes == nullptr) return null_argument("esp_model_load_memory", "bytes");
  if (model == nullptr) return null_argument("esp_model_load_memory", "model");
  if (weights == nullptr && weights_size != 0) return null_argument("esp_model_load_memory", "weights");
  *model = nullptr;
  if (format != ESP_FORMAT_CAFFE && format != ESP_FORMAT_ONNX && format != ESP_FORMAT_ESP &&
      format != ESP_FORMAT_TFLITE) {
    return fail(ESP_ERROR_INVALID_ARGUMENT, "esp_model_load_memory: unknown format " + std::to_string(format));
  }
  return guarded([&] {
    const auto model_bytes = std::span(static_cast<const std::byte*>(bytes), size);
    const auto weight_bytes = std::span(static_cast<const std::byte*>(weights), weights ? weights_size : 0);
    *model = wrap(espresso::load_model(model_bytes, static_cast<espresso::ModelFormat>(format), weight_bytes), device);
  });
}

void esp_model_release(esp_model* model) { delete model; }

esp_status esp_model_input_count(const esp_model* model, size_t* count) {
  if (model == nullptr) return null_argument("esp_model_input_count", "model");
  if (count == nullptr) return null_argument("esp_model_input_count", "count");
  *count = model->inputs.size();
  return ESP_OK;
}

esp_status esp_model_input_name(const esp_model* model, size_t index, const char** name) {
  if (model == nullptr) return null_argument("esp_model_input_name", "model");
  return name_at(model->inputs, index, name, "esp_model_input_name");
}

esp_status esp_model_output_count(const esp_model* model, size_t* count) {
  if (model == nullptr) return null_argument("esp_model_output_count", "model");
  if (count == nullptr) return null_argument("esp_model_output_count", "count");
  *count = model->outputs.size();
  return ESP_OK;
}

esp_status esp_model_output_name(const esp_model* model, size_t index, const char** name) {
  if (model == nullptr) return null_argument("esp_model_output_name", "model");
  return name_at(model->outputs, index, name, "esp_model_output_name");
}

esp_status esp_session_create(const esp_model* model, int threads, esp_session** session) {
  if (model == nullptr) return null_argument("esp_session_create", "model");
  if (session == nullptr) return null_argument("esp_session_create", "session");
  *session = nullptr;
  return guarded([&] {
    *session = new esp_session{model->model, espresso::Session(model->model, {.threads = threads}), {}};
  });
}

void esp_session_release(esp_session* session) { delete session; }

esp_status esp_session_set_input(esp_session* session, const char* name, const float* data, const int64_t* dims,
                                 size_t rank) {
  if (session == nullptr) return null_argument("esp_session_set_input", "session");
  if (name == nullptr) return null_argument("esp_session_set_input", "name");
  if (data == nullptr) return null_argument("esp_session_set_input", "data");
  if (dims == nullptr && rank != 0) return null_argument("esp_session_set_input", "dims");
  return guarded([&] {
    const espresso::Shape shape(std::vector<std::int64_t>(dims, dims + rank));
    // A view of the caller's values; the session copies them into its own input buffer.
    const espresso::Tensor view = espresso::Tensor::wrap(const_cast<float*>(data), shape, espresso::DType::f32);
    session->session.reshape(name, shape);
    session->session.input(name).copy_from(view);
  });
}

esp_status esp_session_run(esp_session* session) {
  if (session == nullptr) return null_argument("esp_session_run", "session");
  return guarded([&] {
    session->outputs.clear();
    session->session.forward();
    for (const std::string& name : session->session.output_names())
      session->outputs[name] = session->session.output(name).to(espresso::Device::cpu());
  });
}

esp_status esp_session_output(esp_session* session, const char* name, const float** data, int64_t* dims,
                              size_t* rank) {
  if (session == nullptr) return null_argument("esp_session_output", "session");
  if (name == nullptr) return null_argument("esp_session_output", "name");
  if (data == nullptr) return null_argument("esp_session_output", "data");
  if (rank == nullptr) return null_argument("esp_session_output", "rank");
  auto it = session->outputs.find(name);
  if (it == session->outputs.end()) {
    return fail(ESP_ERROR_MODEL, std::string("esp_session_output: no output '") + name +
                                     "' from the last run (run first; outputs are the graph's outputs)");
  }
  const espresso::Shape& shape = it->second.shape();
  const auto needed = static_cast<size_t>(shape.rank());
  const size_t room = *rank;
  *rank = needed;
  if (needed > room || (dims == nullptr && needed != 0)) {
    return fail(ESP_ERROR_SHAPE, "esp_session_output: output '" + std::string(name) + "' has rank " +
                                     std::to_string(needed) + ", dims has room for " + std::to_string(room));
  }
  for (size_t i = 0; i < needed; ++i) dims[i] = shape[static_cast<int>(i)];
  *data = it->second.data<float>();
  last_error.clear();
  return ESP_OK;
}

esp_status esp_image_load(const char* path, int channels, int height, int width, const float* mean, float scale,
                          float* values) {
  if (path == nullptr) return null_argument("esp_image_load", "path");
  if (values == nullptr) return null_argument("esp_image_load", "values");
  if ((channels != 1 && channels != 3) || height < 1 || width < 1) {
    return fail(ESP_ERROR_INVALID_ARGUMENT, "esp_image_load: " + std::to_string(channels) + " channels of " +
                                                std::to_string(height) + "x" + std::to_string(width) +
                                                " is not an image layout (1 or 3 channels, positive size)");
  }
  return guarded([&] {
    const std::vector<float> pixels = espresso::data::load_image(path, {.channels = channels, .height = height, .width = width});
    espresso::data::Preprocess preprocess{.scale = scale};
    if (mean != nullptr) preprocess.mean.assign(mean, mean + channels);
    preprocess.apply(pixels.data(), 1, channels, std::int64_t{height} * width, values);
  });
}

}  // extern "C"
