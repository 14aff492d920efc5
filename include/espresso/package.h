// The .esp model package (docs/format.md): one file with the graph, metadata and weights, memory-mapped
// on load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

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

// One tensor of a package's table as the file stores it (docs/format.md), for tools that show how a model
// is stored (`espresso info`).
struct PackageTensorInfo {
  std::string name;
  std::string dtype;  // f32, f16 or bf16; a compressed tensor decodes to f32
  std::vector<std::int64_t> shape;
  std::uint64_t stored_bytes = 0;   // its bytes in the file
  std::uint64_t decoded_bytes = 0;  // its bytes as f32 in memory
  bool compressed = false;          // the rest describe the encoding of a compressed tensor
  std::uint32_t codebook_size = 0;  // shared values
  std::uint32_t index_bits = 0;     // bits of a packed codebook index: ceil(log2 codebook_size)
  std::uint32_t gap_bits = 0;       // 0: one entry per place (dense); 1..8: sparse relative indices
  std::uint64_t entries = 0;        // stored entries, sparse fillers included
  bool huffman = false;             // Huffman-coded, else packed at fixed width
};

// The package's header and tensor table (checked as load_package checks them; the tensor data is not read).
struct PackageInfo {
  std::uint32_t format_version = 0;
  bool deflated_manifest = false;
  std::uint64_t manifest_bytes = 0;  // as stored
  std::uint64_t file_bytes = 0;
  std::vector<PackageTensorInfo> tensors;
};
PackageInfo read_package_info(const std::string& path);

}  // namespace espresso
