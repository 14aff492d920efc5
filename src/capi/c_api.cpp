// The C API over Model and Session: every entry point catches what the C++ API throws and turns it into
// a status and this thread's message.
#include "espresso/c_api.h"

#include <map>
#include <mutex>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "espresso/custom_layer.h"
#include "espresso/data.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/model.h"

struct esp_model {
  std::shared_ptr<const espresso::Model> model;
  std::vector<std::string> inputs, outputs;
  std::string format;    // what it was loaded from
  std::string producer;  // where the file records it
  // Output shapes at the declared input shapes, inferred on first request (any thread).
  mutable std::mutex shapes_mutex;
  mutable bool shapes_known = false;
  mutable std::vector<espresso::Shape> output_shapes;
};

struct esp_session {
  std::shared_ptr<const espresso::Model> model;
  espresso::Session session;
  esp_precision precision;
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

esp_model* wrap(espresso::Graph graph, const char* device, espresso::ModelFormat format) {
  auto handle = std::make_unique<esp_model>();
  handle->format = espresso::format_name(format);
  handle->producer = graph.metadata.producer;
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

// Copies `shape` into the caller's dims (room for *rank values), reporting the rank in *rank.
esp_status copy_shape(const espresso::Shape& shape, int64_t* dims, size_t* rank, const std::string& what,
                      const char* function) {
  const auto needed = static_cast<size_t>(shape.rank());
  const size_t room = *rank;
  *rank = needed;
  if (needed > room || (dims == nullptr && needed != 0)) {
    return fail(ESP_ERROR_SHAPE, std::string(function) + ": " + what + " has rank " + std::to_string(needed) +
                                     ", dims has room for " + std::to_string(room));
  }
  for (size_t i = 0; i < needed; ++i) dims[i] = shape[static_cast<int>(i)];
  last_error.clear();
  return ESP_OK;
}

esp_status index_check(size_t index, size_t count, const char* function) {
  if (index < count) return ESP_OK;
  return fail(ESP_ERROR_INVALID_ARGUMENT, std::string(function) + ": index " + std::to_string(index) +
                                              " is past the last of " + std::to_string(count));
}

bool known_precision(esp_precision precision) {
  return precision == ESP_PRECISION_FP32 || precision == ESP_PRECISION_TF32 || precision == ESP_PRECISION_FP16 ||
         precision == ESP_PRECISION_BF16;
}

// A layer type registered from C: its callbacks behind the C++ CustomLayer interface.
class CLayer final : public espresso::CustomLayer {
 public:
  CLayer(std::string type, esp_layer_shape_fn shape, esp_layer_forward_fn forward, void* user_data)
      : type_(std::move(type)), shape_(shape), forward_(forward), user_data_(user_data) {}

  std::vector<espresso::Shape> output_shapes(const std::vector<espresso::Shape>& inputs) const override {
    std::vector<const int64_t*> dims;
    std::vector<size_t> ranks;
    for (const espresso::Shape& shape : inputs) {
      dims.push_back(shape.dims().data());
      ranks.push_back(static_cast<size_t>(shape.rank()));
    }
    int64_t out[ESP_MAX_RANK] = {};
    size_t rank = 0;
    const esp_status status = shape_(user_data_, inputs.size(), dims.data(), ranks.data(), out, &rank);
    if (status != ESP_OK) {
      throw espresso::ShapeError(type_ + ": the shape callback returned status " + std::to_string(status));
    }
    if (rank > ESP_MAX_RANK) {
      throw espresso::ShapeError(type_ + ": the shape callback gave rank " + std::to_string(rank) +
                                 ", more than ESP_MAX_RANK");
    }
    for (size_t i = 0; i < rank; ++i) {
      if (out[i] < 0) throw espresso::ShapeError(type_ + ": the shape callback gave a negative dimension");
    }
    return {espresso::Shape(std::vector<std::int64_t>(out, out + rank))};
  }

  void forward(const std::vector<espresso::Tensor>& inputs, const std::vector<espresso::Tensor>& /*weights*/,
               std::vector<espresso::Tensor>& outputs) const override {
    std::vector<const float*> values;
    std::vector<const int64_t*> dims;
    std::vector<size_t> ranks;
    for (const espresso::Tensor& input : inputs) {
      values.push_back(input.data<float>());
      dims.push_back(input.shape().dims().data());
      ranks.push_back(static_cast<size_t>(input.shape().rank()));
    }
    const esp_status status =
        forward_(user_data_, inputs.size(), values.data(), dims.data(), ranks.data(), outputs[0].data<float>());
    if (status != ESP_OK) {
      throw espresso::ModelError(type_ + ": the forward callback returned status " + std::to_string(status));
    }
  }

 private:
  std::string type_;
  esp_layer_shape_fn shape_;
  esp_layer_forward_fn forward_;
  void* user_data_;
};

}  // namespace

extern "C" {

const char* esp_last_error(void) { return last_error.c_str(); }

const char* esp_version(void) { return ESPRESSO_VERSION; }

esp_status esp_model_load(const char* path, const char* weights_path, const char* device, esp_model** model) {
  if (path == nullptr) return null_argument("esp_model_load", "path");
  if (model == nullptr) return null_argument("esp_model_load", "model");
  *model = nullptr;
  return guarded([&] { *model = wrap(espresso::load_model(path, weights_path ? weights_path : ""), device, espresso::model_format_of(path)); });
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
    const auto model_format = static_cast<espresso::ModelFormat>(format);
    *model = wrap(espresso::load_model(model_bytes, model_format, weight_bytes), device, model_format);
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

esp_status esp_model_input_shape(const esp_model* model, size_t index, int64_t* dims, size_t* rank) {
  if (model == nullptr) return null_argument("esp_model_input_shape", "model");
  if (rank == nullptr) return null_argument("esp_model_input_shape", "rank");
  if (index_check(index, model->inputs.size(), "esp_model_input_shape") != ESP_OK) return ESP_ERROR_INVALID_ARGUMENT;
  return copy_shape(model->model->graph().inputs[index].shape, dims, rank, "input '" + model->inputs[index] + "'",
                    "esp_model_input_shape");
}

esp_status esp_model_output_shape(const esp_model* model, size_t index, int64_t* dims, size_t* rank) {
  if (model == nullptr) return null_argument("esp_model_output_shape", "model");
  if (rank == nullptr) return null_argument("esp_model_output_shape", "rank");
  if (index_check(index, model->outputs.size(), "esp_model_output_shape") != ESP_OK) return ESP_ERROR_INVALID_ARGUMENT;
  const esp_status planned = guarded([&] {
    std::lock_guard lock(model->shapes_mutex);
    if (model->shapes_known) return;
    espresso::Session session(model->model, {.threads = 1});
    session.summary();  // plans: every tensor gets its shape
    for (const std::string& name : model->outputs) model->output_shapes.push_back(session.output(name).shape());
    model->shapes_known = true;
  });
  if (planned != ESP_OK) return planned;
  return copy_shape(model->output_shapes[index], dims, rank, "output '" + model->outputs[index] + "'",
                    "esp_model_output_shape");
}

esp_status esp_model_input_dtype(const esp_model* model, size_t index, esp_dtype* dtype) {
  if (model == nullptr) return null_argument("esp_model_input_dtype", "model");
  if (dtype == nullptr) return null_argument("esp_model_input_dtype", "dtype");
  if (index_check(index, model->inputs.size(), "esp_model_input_dtype") != ESP_OK) return ESP_ERROR_INVALID_ARGUMENT;
  *dtype = ESP_DTYPE_F32;  // graph inputs are f32 whatever the precision (espresso/net.h)
  last_error.clear();
  return ESP_OK;
}

esp_status esp_model_output_dtype(const esp_model* model, size_t index, esp_dtype* dtype) {
  if (model == nullptr) return null_argument("esp_model_output_dtype", "model");
  if (dtype == nullptr) return null_argument("esp_model_output_dtype", "dtype");
  if (index_check(index, model->outputs.size(), "esp_model_output_dtype") != ESP_OK) return ESP_ERROR_INVALID_ARGUMENT;
  *dtype = ESP_DTYPE_F32;  // graph outputs are f32 whatever the precision (espresso/net.h)
  last_error.clear();
  return ESP_OK;
}

esp_status esp_model_layer_count(const esp_model* model, size_t* count) {
  if (model == nullptr) return null_argument("esp_model_layer_count", "model");
  if (count == nullptr) return null_argument("esp_model_layer_count", "count");
  *count = model->model->graph().layers.size();
  last_error.clear();
  return ESP_OK;
}

esp_status esp_model_metadata(const esp_model* model, const char* key, const char** value) {
  if (model == nullptr) return null_argument("esp_model_metadata", "model");
  if (key == nullptr) return null_argument("esp_model_metadata", "key");
  if (value == nullptr) return null_argument("esp_model_metadata", "value");
  const espresso::ModelMetadata& m = model->model->graph().metadata;
  const std::map<std::string, const std::string*> texts = {
      {"name", &model->model->graph().name}, {"format", &model->format},     {"source_format", &m.source_format},
      {"producer", &model->producer},        {"version", &m.version},       {"description", &m.description},
      {"task", &m.task},                     {"license", &m.license},       {"author", &m.author},
      {"created", &m.created}};
  const auto it = texts.find(key);
  if (it == texts.end()) {
    return fail(ESP_ERROR_INVALID_ARGUMENT,
                std::string("esp_model_metadata: unknown key '") + key +
                    "' (name, format, source_format, producer, version, description, task, license, author, created)");
  }
  *value = it->second->c_str();
  last_error.clear();
  return ESP_OK;
}

esp_status esp_model_label_count(const esp_model* model, size_t* count) {
  if (model == nullptr) return null_argument("esp_model_label_count", "model");
  if (count == nullptr) return null_argument("esp_model_label_count", "count");
  *count = model->model->graph().metadata.labels.size();
  last_error.clear();
  return ESP_OK;
}

esp_status esp_model_label(const esp_model* model, size_t index, const char** label) {
  if (model == nullptr) return null_argument("esp_model_label", "model");
  return name_at(model->model->graph().metadata.labels, index, label, "esp_model_label");
}

esp_status esp_session_create(const esp_model* model, int threads, esp_session** session) {
  if (model == nullptr) return null_argument("esp_session_create", "model");
  return esp_session_create_with_precision(model, threads, ESP_PRECISION_FP32, 0, session);
}

esp_status esp_session_create_with_precision(const esp_model* model, int threads, esp_precision precision,
                                             int strict, esp_session** session) {
  if (model == nullptr) return null_argument("esp_session_create", "model");
  if (session == nullptr) return null_argument("esp_session_create", "session");
  *session = nullptr;
  if (!known_precision(precision)) {
    return fail(ESP_ERROR_INVALID_ARGUMENT, "esp_session_create_with_precision: unknown precision " +
                                                std::to_string(static_cast<long long>(precision)) +
                                                " (ESP_PRECISION_FP32, _TF32, _FP16 or _BF16)");
  }
  return guarded([&] {
    const espresso::SessionOptions options{.threads = threads,
                                           .precision = static_cast<espresso::Precision>(precision),
                                           .strict_precision = strict != 0};
    *session = new esp_session{model->model, espresso::Session(model->model, options), precision, {}};
  });
}

esp_status esp_session_precision(const esp_session* session, esp_precision* precision) {
  if (session == nullptr) return null_argument("esp_session_precision", "session");
  if (precision == nullptr) return null_argument("esp_session_precision", "precision");
  *precision = session->precision;
  last_error.clear();
  return ESP_OK;
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
  const esp_status copied = copy_shape(it->second.shape(), dims, rank, "output '" + std::string(name) + "'",
                                       "esp_session_output");
  if (copied == ESP_OK) *data = it->second.data<float>();
  return copied;
}

esp_status esp_register_layer(const char* type, esp_layer_shape_fn shape, esp_layer_forward_fn forward,
                              void* user_data) {
  if (type == nullptr) return null_argument("esp_register_layer", "type");
  if (shape == nullptr) return null_argument("esp_register_layer", "shape");
  if (forward == nullptr) return null_argument("esp_register_layer", "forward");
  return guarded([&] {
    espresso::register_layer(type, [name = std::string(type), shape, forward, user_data](const espresso::LayerSpec&) {
      return std::make_unique<CLayer>(name, shape, forward, user_data);
    });
  });
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
