// Compressed tensor encodings of .esp packages (docs/format.md, "Compressed tensors"): a codebook of at
// most 256 values, each place's codebook index, optionally sparse (relative indices with filler entries,
// codebook[0] filling the places no entry names), and the indices packed at fixed width or Huffman-coded
// with canonical codes. Encoding is lossless: decoding gives back the same float bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace espresso::codec {

inline constexpr std::uint32_t kMaxCodebook = 256;
inline constexpr std::uint32_t kMaxGapBits = 8;
inline constexpr std::uint32_t kMaxCodeLength = 12;  // Huffman code lengths, in bits

struct Encoding {
  std::uint32_t codebook_size = 0;  // K, 1..256
  std::uint32_t gap_bits = 0;       // 0: one entry per place; 1..8: sparse, gaps 0..2^gap_bits-1
  std::uint64_t entries = 0;        // stored entries, fillers included
  bool huffman = false;             // false: fixed-width fields
};

struct Encoded {
  Encoding encoding;
  std::vector<std::byte> bytes;
};

// What one encoding costs, for the tables that `espresso compress` prints.
struct EncodingStats {
  std::uint64_t nonzero = 0;  // places holding a value other than codebook[0]
  std::uint64_t fillers = 0;  // entries that only bridge long gaps
  double bits_per_index = 0;  // mean bits of a stored codebook index
  double bits_per_gap = 0;    // mean bits of a stored relative index
};

// The smallest encoding of `values` (all choices of gap width, packed or Huffman), or nullopt where the
// values have more than 256 distinct bit patterns or no encoding is smaller than the raw floats.
std::optional<Encoded> encode(std::span<const float> values, EncodingStats* stats = nullptr);

// Decodes `stored` into `out` (one float per place). Every length, index and code is checked first or as it
// is read: a ParseError starting with `where` for a bad codebook size or gap width, a length that does not
// match, Huffman code lengths that are not prefix-free, a codebook index out of range, an entry past the
// end, or a stream cut short.
void decode(const Encoding& encoding, std::span<const std::byte> stored, std::span<float> out,
            const std::string& where);

}  // namespace espresso::codec
