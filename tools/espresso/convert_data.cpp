// `espresso convert-data`: Caffe LMDBs of Datum records from IDX files, CIFAR-10 batches, a folder of
// images with one sub-folder per class, or texts (character indices).
#include <cstdio>
#include <memory>

#include "common.h"
#include "espresso/data.h"

namespace espresso::cli {

Verb add_convert_data_verb(CLI::App& app) {
  auto options = std::make_shared<data::LmdbConversion>();
  CLI::App* command =
      app.add_subcommand("convert-data", "Build a Caffe LMDB from IDX, CIFAR-10 or image folders");
  command->add_option("--format", options->format, "Input format: idx (MNIST layout), cifar10, folder or text")
      ->required()
      ->check(CLI::IsMember({"idx", "cifar10", "folder", "text"}));
  command->add_option("input", options->input, "Input folder (text: a TSV file of label<TAB>text lines, or "
                                               "one sub-folder of UTF-8 files per class)")
      ->required();
  command->add_option("output", options->output, "LMDB folder to create")->required();
  command->add_option("--split", options->split, "train or test (idx, cifar10)")
      ->check(CLI::IsMember({"train", "test"}));
  command->add_option("--resize", options->resize, "Resize images to HEIGHTxWIDTH (folder)");
  command->add_flag("--gray", options->gray, "Store one gray channel (folder)");
  command->add_option("--length", options->length, "Characters per record (text)")->capture_default_str();
  command->add_option("--max-vocabulary", options->max_vocabulary,
                      "Largest character vocabulary, padding and unknown included (text)")
      ->capture_default_str();
  command->add_option("--like", options->like,
                      "Reuse the vocabulary and labels of this LMDB, e.g. the training set's (text)");
  command->add_flag("--shuffle", options->shuffle, "Write the records in a shuffled order");
  command->add_option("--seed", options->seed, "Seed of --shuffle");
  return {command, [options] {
            const data::LmdbSummary s = data::convert_to_lmdb(*options);
            std::printf("wrote %lld records (%dx%dx%d) to %s%s\n", static_cast<long long>(s.records),
                        s.channels, s.height, s.width, options->output.c_str(),
                        s.class_names.empty() ? "" : options->format == "text" ? " with vocab.txt and labels.txt"
                                                                               : " with labels.txt");
            return 0;
          }};
}

}  // namespace espresso::cli
