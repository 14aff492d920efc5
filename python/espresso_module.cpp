// The `espresso` Python module: models from Caffe, ONNX and .esp files or bytes, sessions that run them
// on NumPy arrays (the GIL released while they compute), devices, layer summaries, and Caffe training.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "espresso/data.h"
#include "espresso/devices.h"
#include "espresso/errors.h"
#include "espresso/import.h"
#include "espresso/model.h"
#include "espresso/package.h"
#include "espresso/store.h"
#include "espresso/trainer.h"

namespace py = pybind11;
using namespace espresso;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// An f32 host tensor as a NumPy array sharing its memory: the capsule keeps the tensor alive.
py::array to_numpy(const Tensor& device_tensor) {
  auto* owner = new Tensor(device_tensor.device().is_cpu() ? device_tensor : device_tensor.to(Device::cpu()));
  py::capsule release(owner, [](void* t) { delete static_cast<Tensor*>(t); });
  const std::vector<std::int64_t>& dims = owner->shape().dims();
  std::vector<py::ssize_t> shape(dims.begin(), dims.end());
  return py::array_t<float>(shape, owner->data<float>(), release);
}

std::map<std::string, Tensor> to_tensors(const std::map<std::string, py::object>& inputs) {
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, value] : inputs) {
    // forcecast converts other numeric dtypes and layouts to a C-contiguous float32 copy; objects that
    // are not numeric arrays raise TypeError.
    const FloatArray array = FloatArray::ensure(value);
    if (!array) throw py::type_error("input '" + name + "' is not a numeric array");
    std::vector<std::int64_t> dims(array.shape(), array.shape() + array.ndim());
    Tensor copy = Tensor::empty(Shape(dims));
    std::copy_n(array.data(), array.size(), copy.data<float>());
    tensors[name] = std::move(copy);
  }
  return tensors;
}

std::map<std::string, py::array> run_session(Session& session, const std::map<std::string, py::object>& inputs) {
  const std::map<std::string, Tensor> tensors = to_tensors(inputs);
  std::map<std::string, Tensor> outputs;
  {
    py::gil_scoped_release release;
    outputs = session.run(tensors);
  }
  std::map<std::string, py::array> arrays;
  for (const auto& [name, tensor] : outputs) arrays[name] = to_numpy(tensor);
  return arrays;
}

// A model with the session its own run() uses (in the precision it was loaded with); further sessions
// come from session().
struct PyModel {
  std::shared_ptr<const Model> model;
  std::string format;  // what it was loaded from
  SessionOptions options;
  std::mutex mutex;
  std::unique_ptr<Session> default_session;
};

std::shared_ptr<PyModel> wrap(Graph graph, const std::string& device, ModelFormat format, const std::string& precision,
                              bool strict) {
  auto wrapped = std::make_shared<PyModel>();
  wrapped->format = format_name(format);
  wrapped->options.precision = parse_precision(precision);
  wrapped->options.strict_precision = strict;
  {
    py::gil_scoped_release release;
    wrapped->model = std::make_shared<const Model>(std::move(graph), Device::parse(device));
  }
  return wrapped;
}

ModelFormat format_of(const std::string& name) {
  if (name == "caffe") return ModelFormat::caffe;
  if (name == "onnx") return ModelFormat::onnx;
  if (name == "esp") return ModelFormat::esp;
  if (name == "tflite") return ModelFormat::tflite;
  throw py::value_error("format must be 'caffe', 'onnx', 'esp' or 'tflite', got '" + name + "'");
}

// A path, or else a store reference (REGISTRY/NAME:VERSION) pulled into the cache as the CLI does; the
// environment's ESPRESSO_CACHE, ESPRESSO_OFFLINE, ESPRESSO_INSECURE and ESPRESSO_TRUSTED_KEYS apply.
std::string resolve_model(const std::string& model) {
  std::error_code ec;
  if (std::filesystem::exists(model, ec) || !store::Reference::looks_like(model)) return model;
  const char* registry = std::getenv("ESPRESSO_REGISTRY");
  store::Client client(store::client_options_from_env());
  return client.pull(store::Reference::parse(model, registry != nullptr ? registry : "")).package.string();
}

std::span<const std::byte> bytes_of(const py::bytes& b, std::string& storage) {
  storage = b;
  return std::as_bytes(std::span(storage.data(), storage.size()));
}

}  // namespace

PYBIND11_MODULE(espresso, m) {
  m.doc() = "espresso: run and train Caffe, ONNX and .esp models on the CPU and NVIDIA GPUs";
  m.attr("__version__") = ESPRESSO_VERSION;

  // espresso's typed errors as Python exceptions under one base class.
  static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
  static py::exception<FileError> file_error(m, "FileError", error.ptr());
  static py::exception<ParseError> parse_error(m, "ParseError", error.ptr());
  static py::exception<ModelError> model_error(m, "ModelError", error.ptr());
  static py::exception<ShapeError> shape_error(m, "ShapeError", error.ptr());
  static py::exception<UnsupportedError> unsupported_error(m, "UnsupportedError", error.ptr());
  static py::exception<DataError> data_error(m, "DataError", error.ptr());
  static py::exception<DeviceError> device_error(m, "DeviceError", error.ptr());
  static py::exception<LimitError> limit_error(m, "LimitError", error.ptr());
  static py::exception<StoreError> store_error(m, "StoreError", error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FileError& e) {
      file_error(e.what());
    } catch (const ParseError& e) {
      parse_error(e.what());
    } catch (const ModelError& e) {
      model_error(e.what());
    } catch (const ShapeError& e) {
      shape_error(e.what());
    } catch (const UnsupportedError& e) {
      unsupported_error(e.what());
    } catch (const DataError& e) {
      data_error(e.what());
    } catch (const DeviceError& e) {
      device_error(e.what());
    } catch (const LimitError& e) {
      limit_error(e.what());
    } catch (const StoreError& e) {
      store_error(e.what());
    } catch (const Error& e) {
      error(e.what());
    }
  });

  m.def(
      "devices",
      [] {
        std::vector<py::dict> rows;
        for (const DeviceInfo& d : list_devices()) {
          py::dict row;
          row["device"] = d.device.str();
          row["name"] = d.name;
          row["total_memory"] = d.total_memory;
          rows.push_back(row);
        }
        return rows;
      },
      "Every device this build can run on, the CPU first.");

  py::class_<Session>(m, "Session", "One caller's state for running a model (one thread at a time).")
      .def("run", &run_session, py::arg("inputs"),
           "Runs on a dict of input arrays; returns a dict of output arrays (float32).")
      .def_property_readonly("inputs", &Session::input_names)
      .def_property_readonly("outputs", &Session::output_names);

  py::class_<PyModel, std::shared_ptr<PyModel>>(m, "Model", "An immutable model, shared by its sessions.")
      .def_property_readonly("name", [](const PyModel& p) { return p.model->graph().name; })
      .def_property_readonly("device", [](const PyModel& p) { return p.model->device().str(); })
      .def_property_readonly("inputs",
                             [](const PyModel& p) {
                               std::vector<std::string> names;
                               for (const InputSpec& input : p.model->graph().inputs) names.push_back(input.name);
                               return names;
                             })
      .def_property_readonly("outputs", [](const PyModel& p) { return p.model->graph().outputs; })
      .def_property_readonly("format", [](const PyModel& p) { return p.format; },
                             "What the model was loaded from: 'caffe', 'onnx', 'esp' or 'tflite'.")
      .def_property_readonly("precision", [](const PyModel& p) { return precision_name(p.options.precision); },
                             "The precision of run() and of new sessions: 'fp32', 'tf32', 'fp16' or 'bf16'.")
      .def_property_readonly("layer_count", [](const PyModel& p) { return p.model->graph().layers.size(); })
      .def_property_readonly("labels", [](const PyModel& p) { return p.model->graph().metadata.labels; },
                             "Class labels where the model carries them (.esp packages may), else [].")
      .def_property_readonly("input_shapes",
                             [](const PyModel& p) {
                               py::dict shapes;
                               for (const InputSpec& input : p.model->graph().inputs)
                                 shapes[py::str(input.name)] = py::tuple(py::cast(input.shape.dims()));
                               return shapes;
                             },
                             "The declared input shapes (dimension 0 the batch) by name; inputs are float32.")
      .def_property_readonly(
          "output_shapes",
          [](PyModel& p) {
            std::vector<Shape> shapes;
            {
              py::gil_scoped_release release;
              Session session(p.model, {.threads = 1});
              session.summary();  // plans: every tensor gets its shape
              for (const std::string& name : p.model->graph().outputs) shapes.push_back(session.output(name).shape());
            }
            py::dict by_name;
            for (std::size_t i = 0; i < shapes.size(); ++i)
              by_name[py::str(p.model->graph().outputs[i])] = py::tuple(py::cast(shapes[i].dims()));
            return by_name;
          },
          "The output shapes at the declared input shapes, by name; outputs are float32.")
      .def_property_readonly(
          "metadata",
          [](const PyModel& p) {
            const ModelMetadata& m = p.model->graph().metadata;
            py::dict d;
            d["name"] = p.model->graph().name;
            d["format"] = p.format;
            d["source_format"] = m.source_format;
            d["producer"] = m.producer;
            d["version"] = m.version;
            d["description"] = m.description;
            d["task"] = m.task;
            d["license"] = m.license;
            d["author"] = m.author;
            d["created"] = m.created;
            d["labels"] = m.labels;
            d["metrics"] = m.metrics;
            d["layer_count"] = p.model->graph().layers.size();
            return d;
          },
          "What the model says about itself: name, format, source_format, producer, version, description, "
          "task, license, author, created, labels, metrics, layer_count ('' or empty where it does not say).")
      .def(
          "save",
          [](const PyModel& p, const std::string& path) { save_package(p.model->graph(), path); }, py::arg("path"),
          "Writes the model as an .esp package.")
      .def(
          "session",
          [](const PyModel& p, int threads, const std::optional<std::string>& precision, std::optional<bool> strict) {
            SessionOptions options = p.options;
            options.threads = threads;
            if (precision) options.precision = parse_precision(*precision);
            if (strict) options.strict_precision = *strict;
            return std::make_unique<Session>(p.model, options);
          },
          py::arg("threads") = 0, py::arg("precision") = py::none(), py::arg("strict") = py::none(),
          "A new session with its own activations and CPU threads (0: shared); precision and strict default "
          "to the model's (see load).")
      .def(
          "run",
          [](PyModel& p, const std::map<std::string, py::object>& inputs) {
            std::unique_lock lock(p.mutex, std::defer_lock);
            {
              py::gil_scoped_release release;  // never wait for the lock while holding the GIL
              lock.lock();
            }
            if (!p.default_session) p.default_session = std::make_unique<Session>(p.model, p.options);
            return run_session(*p.default_session, inputs);
          },
          py::arg("inputs"), "Runs on a dict of input arrays with the model's own session.")
      .def(
          "info",
          [](PyModel& p) {
            Session session(p.model);
            std::vector<py::dict> rows;
            for (const LayerSummary& layer : session.summary()) {
              py::dict row;
              row["name"] = layer.name;
              row["type"] = layer.type;
              std::vector<std::vector<std::int64_t>> shapes;
              for (const Shape& s : layer.output_shapes) shapes.push_back(s.dims());
              row["output_shapes"] = shapes;
              row["params"] = layer.params;
              row["flops"] = layer.flops;
              row["device"] = layer.device.str();
              row["kernel"] = layer.kernel;
              rows.push_back(row);
            }
            return rows;
          },
          "One dict per layer: name, type, output shapes, parameters, FLOPs, device and kernel.");

  m.def(
      "load",
      [](const std::string& path, const std::string& weights, const std::string& device, const std::string& precision,
         bool strict) {
        std::string file;
        Graph graph;
        {
          py::gil_scoped_release release;  // a pull downloads
          file = resolve_model(path);
          graph = load_model(file, weights);
        }
        return wrap(std::move(graph), device, model_format_of(file), precision, strict);
      },
      py::arg("path"), py::arg("weights") = "", py::arg("device") = "cpu", py::arg("precision") = "fp32",
      py::arg("strict") = false,
      "Loads a Caffe .prototxt (with .caffemodel weights), .onnx, .esp or .tflite model, or a store reference "
      "REGISTRY/NAME:VERSION (pulled into the cache as `espresso pull` does), onto a device. precision "
      "('fp32', 'tf32', 'fp16', 'bf16') is that of run() and new sessions; strict makes a layer without a "
      "kernel in it an error instead of an fp32 fallback.");
  m.def(
      "load_bytes",
      [](const py::bytes& model, const std::string& format, const py::bytes& weights, const std::string& device,
         const std::string& precision, bool strict) {
        std::string model_storage, weight_storage;
        const auto model_bytes = bytes_of(model, model_storage);
        const auto weight_bytes = bytes_of(weights, weight_storage);
        const ModelFormat model_format = format_of(format);
        return wrap(load_model(model_bytes, model_format, weight_bytes), device, model_format, precision, strict);
      },
      py::arg("model"), py::arg("format"), py::arg("weights") = py::bytes(), py::arg("device") = "cpu",
      py::arg("precision") = "fp32", py::arg("strict") = false,
      "Loads a model from bytes: format 'caffe' (prototxt, with caffemodel weights), 'onnx' or 'esp'.");

  m.def(
      "load_image",
      [](const std::string& path, int channels, int height, int width, float scale, std::vector<float> mean) {
        if (!mean.empty() && mean.size() != static_cast<std::size_t>(channels)) {
          throw py::value_error("mean has " + std::to_string(mean.size()) + " values for " + std::to_string(channels) +
                                " channels");
        }
        std::vector<float> pixels = data::load_image(path, {.channels = channels, .height = height, .width = width});
        const data::Preprocess preprocess{.mean = std::move(mean), .scale = scale};
        Tensor values = Tensor::empty(Shape{channels, height, width});
        preprocess.apply(pixels.data(), 1, channels, std::int64_t{height} * width, values.data<float>());
        return to_numpy(values);
      },
      py::arg("path"), py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("scale") = 1.0f,
      py::arg("mean") = std::vector<float>{},
      "Decodes an image (JPEG, PNG, BMP, ...) to a channels x height x width float32 array as the CLI does: "
      "1 (gray) or 3 (B,G,R) channels, resized, then (pixel - mean[c]) * scale.");

  py::class_<train::Trainer>(m, "Trainer", "Caffe's training loop driven by a solver file.")
      .def(py::init([](const std::string& solver, const std::string& device) {
             train::TrainerOptions options;
             options.device = Device::parse(device);
             options.write_curve = false;
             options.log = nullptr;
             return std::make_unique<train::Trainer>(solver, options);
           }),
           py::arg("solver"), py::arg("device") = "cpu")
      .def(
          "step",
          [](train::Trainer& t, std::int64_t iterations) {
            py::gil_scoped_release release;
            t.step(iterations);
          },
          py::arg("iterations"), "Runs solver iterations.")
      .def_property_readonly("iteration", &train::Trainer::iteration)
      .def_property_readonly("losses", &train::Trainer::losses, "The loss of every iteration so far.")
      .def("snapshot", &train::Trainer::snapshot, "Writes .caffemodel and .solverstate; returns the caffemodel.");
}
