// The .esp model package (docs/format.md): one file with the graph, metadata and weights, memory-mapped
// on load.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "espresso/graph.h"

namespace espresso {

struct PackageLoadOptions {
  // Check every tensor's checksum; switch off only for trusted files.
  bool verify = true;
};

struct PackageSaveOptions {
  // Store weight tensors of at most 256 distinct values (pruned, weight-shared models) as a codebook and
  // indices, sparse where one value dominates, packed or Huffman-coded, whichever is smallest (lossless;
  // docs/format.md, "Compressed tensors"). Such files are format version 2.
  bool compress = false;
};

// Writes the graph, its metadata and weights (f32) to `path` atomically: a temporary file renamed into
// place, so an existing package is never left half-written. Throws FileError or ModelError.
void save_package(const Graph& graph, const std::string& path, const PackageSaveOptions& options = {});

// Maps the package and returns its graph; f32 weights point into the mapping (copy-on-write), 16-bit
// floats are widened, compressed tensors decoded. Throws FileError, ParseError or ModelError naming the file and what is wrong.
Graph load_package(const std::string& path, const PackageLoadOptions& options = {});
// The same from bytes in memory (copied; the caller's buffer may go afterwards). `name` stands for the
// file in error messages.
Graph load_package(std::span<const std::byte> bytes, const std::string& name = "<memory>",
                   const PackageLoadOptions& options = {});

}  // namespace espresso
