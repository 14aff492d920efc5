// `espresso convert MODEL [WEIGHTS] -o OUT.onnx`: loads any model espresso reads and writes it as ONNX.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "espresso/espresso.h"

void add_convert_command(CLI::App& app) {
  auto* command =
      app.add_subcommand("convert", "Convert a model (Caffe prototxt + caffemodel, or ONNX) to ONNX");
  auto model = std::make_shared<std::string>();
  auto weights = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  command->add_option("model", *model, "model file (.prototxt or .onnx)")->required();
  command->add_option("weights", *weights, "weights file (.caffemodel)");
  command->add_option("-o,--output", *output, "the ONNX file to write")->required();
  command->callback([model, weights, output] {
    const bool onnx = model->size() >= 5 && model->compare(model->size() - 5, 5, ".onnx") == 0;
    const espresso::Graph graph = onnx ? espresso::load_onnx(*model) : espresso::load_model(*model, *weights);
    espresso::export_onnx(graph, *output);
    std::printf("wrote %s (%zu layers, ONNX IR 7, opset 13)\n", output->c_str(), graph.layers.size());
  });
}
