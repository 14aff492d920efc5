// Codebook, sparse and Huffman encodings of weight tensors (docs/format.md, "Compressed tensors").
#include "esp/weight_codec.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <queue>
#include <unordered_map>

#include "espresso/errors.h"

namespace espresso::codec {
namespace {

static_assert(std::endian::native == std::endian::little, "the codec reads little-endian words");

constexpr std::uint32_t kTableBits = kMaxCodeLength;
constexpr std::uint32_t kTableSize = 1u << kTableBits;

// Bits needed for the values 0..n-1.
std::uint32_t width_of(std::uint32_t n) { return n <= 1 ? 0 : static_cast<std::uint32_t>(std::bit_width(n - 1)); }

std::uint64_t ceil_div(std::uint64_t a, std::uint64_t b) { return a / b + (a % b != 0); }

// ---- bit streams, least significant bit first ----

class BitWriter {
 public:
  explicit BitWriter(std::vector<std::byte>& out) : out_(out) {}
  void put(std::uint32_t value, std::uint32_t bits) {
    acc_ |= static_cast<std::uint64_t>(value) << count_;
    count_ += bits;
    while (count_ >= 8) {
      out_.push_back(static_cast<std::byte>(acc_ & 0xff));
      acc_ >>= 8;
      count_ -= 8;
    }
  }
  void flush() {
    if (count_ > 0) out_.push_back(static_cast<std::byte>(acc_ & 0xff));
    acc_ = 0;
    count_ = 0;
  }

 private:
  std::vector<std::byte>& out_;
  std::uint64_t acc_ = 0;
  std::uint32_t count_ = 0;
};

// Reads past the end as zero bits and counts them, so a cut stream is found after the loop without a
// bounds check per symbol (and never reads outside the buffer).
class BitReader {
 public:
  BitReader(const std::byte* data, std::uint64_t size)
      : start_(reinterpret_cast<const unsigned char*>(data)), p_(start_), end_(start_ + size) {}
  // Leaves at least 56 bits in the buffer.
  void refill() {
    if (end_ - p_ >= 8) {
      std::uint64_t word;
      std::memcpy(&word, p_, 8);
      buffer_ |= word << count_;
      p_ += (63 - count_) >> 3;
      count_ |= 56;
    } else {
      while (count_ <= 56) {
        std::uint64_t byte = 0;
        if (p_ < end_) {
          byte = *p_++;
        } else {
          ++padding_;
        }
        buffer_ |= byte << count_;
        count_ += 8;
      }
    }
  }
  std::uint32_t count() const { return count_; }
  std::uint64_t peek() const { return buffer_; }
  void skip(std::uint32_t bits) {
    buffer_ >>= bits;
    count_ -= bits;
  }
  std::uint32_t take(std::uint32_t bits) {
    const auto value = static_cast<std::uint32_t>(buffer_ & ((std::uint64_t{1} << bits) - 1));
    skip(bits);
    return value;
  }
  std::uint64_t consumed_bits() const {
    return (static_cast<std::uint64_t>(p_ - start_) + padding_) * 8 - count_;
  }

 private:
  const unsigned char* start_;
  const unsigned char* p_;
  const unsigned char* end_;
  std::uint64_t buffer_ = 0;
  std::uint32_t count_ = 0;
  std::uint64_t padding_ = 0;
};

// ---- Huffman codes ----

// Code lengths of at most kMaxCodeLength bits for these symbol counts: Huffman's, with the counts halved
// until the longest code fits. A lone symbol gets one bit.
std::vector<std::uint8_t> code_lengths(std::vector<std::uint64_t> counts) {
  const std::size_t n = counts.size();
  std::vector<std::uint8_t> lengths(n, 0);
  std::vector<std::size_t> used;
  for (std::size_t s = 0; s < n; ++s) {
    if (counts[s] > 0) used.push_back(s);
  }
  if (used.empty()) return lengths;
  if (used.size() == 1) {
    lengths[used[0]] = 1;
    return lengths;
  }
  for (;;) {
    // Nodes 0..used-1 are the leaves; parents follow.
    std::vector<std::size_t> parent(2 * used.size(), 0);
    using Item = std::pair<std::uint64_t, std::size_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> queue;
    for (std::size_t i = 0; i < used.size(); ++i) queue.push({counts[used[i]], i});
    std::size_t next = used.size();
    while (queue.size() > 1) {
      const Item a = queue.top();
      queue.pop();
      const Item b = queue.top();
      queue.pop();
      parent[a.second] = parent[b.second] = next;
      queue.push({a.first + b.first, next++});
    }
    const std::size_t root = next - 1;
    std::vector<std::uint32_t> depth(next, 0);
    for (std::size_t node = root; node-- > 0;) depth[node] = depth[parent[node]] + 1;
    std::uint32_t longest = 0;
    for (std::size_t i = 0; i < used.size(); ++i) longest = std::max(longest, depth[i]);
    if (longest <= kMaxCodeLength) {
      for (std::size_t i = 0; i < used.size(); ++i) lengths[used[i]] = static_cast<std::uint8_t>(depth[i]);
      return lengths;
    }
    for (std::size_t s : used) counts[s] = (counts[s] >> 1) | 1;
  }
}

// Canonical codes (shorter first, then by symbol), as DEFLATE assigns them. `lengths` must satisfy Kraft.
std::vector<std::uint32_t> canonical_codes(const std::vector<std::uint8_t>& lengths) {
  std::array<std::uint32_t, kMaxCodeLength + 2> count{}, next{};
  for (std::uint8_t l : lengths) ++count[l];
  count[0] = 0;
  std::uint32_t code = 0;
  for (std::uint32_t bits = 1; bits <= kMaxCodeLength; ++bits) {
    code = (code + count[bits - 1]) << 1;
    next[bits] = code;
  }
  std::vector<std::uint32_t> codes(lengths.size(), 0);
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] != 0) codes[s] = next[lengths[s]]++;
  }
  return codes;
}

std::uint32_t reversed(std::uint32_t code, std::uint32_t bits) {
  std::uint32_t out = 0;
  for (std::uint32_t i = 0; i < bits; ++i) out |= ((code >> i) & 1u) << (bits - 1 - i);
  return out;
}

// Written MSB-first as canonical codes are defined, i.e. bit-reversed into the LSB-first stream.
struct Writer {
  std::vector<std::uint8_t> lengths;
  std::vector<std::uint32_t> codes;  // already reversed
};

Writer writer_for(const std::vector<std::uint8_t>& lengths) {
  Writer w{lengths, canonical_codes(lengths)};
  for (std::size_t s = 0; s < lengths.size(); ++s) w.codes[s] = reversed(w.codes[s], lengths[s]);
  return w;
}

// A lookup table on the next kTableBits bits: symbol | length << 8; 0 where no code starts so.
using Table = std::vector<std::uint16_t>;

Table decode_table(const std::vector<std::uint8_t>& lengths, const std::string& where, const char* what) {
  std::uint64_t kraft = 0;
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] > kMaxCodeLength) {
      throw ParseError(where + ": " + what + " Huffman code of symbol " + std::to_string(s) + " is " +
                       std::to_string(lengths[s]) + " bits long (at most " + std::to_string(kMaxCodeLength) + ")");
    }
    if (lengths[s] != 0) kraft += std::uint64_t{1} << (kMaxCodeLength - lengths[s]);
  }
  if (kraft > kTableSize) {
    throw ParseError(where + ": the " + std::string(what) + " Huffman code lengths are not prefix-free (Kraft sum " +
                     std::to_string(kraft) + "/" + std::to_string(kTableSize) + ")");
  }
  Table table(kTableSize, 0);
  const std::vector<std::uint32_t> codes = canonical_codes(lengths);
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    const std::uint32_t l = lengths[s];
    if (l == 0) continue;
    const auto entry = static_cast<std::uint16_t>(s | (l << 8));
    for (std::uint32_t i = reversed(codes[s], l); i < kTableSize; i += 1u << l) table[i] = entry;
  }
  return table;
}

// ---- encoding ----

struct Entries {
  std::vector<std::uint8_t> gaps, codes;
  std::uint64_t fillers = 0;
};

Entries entries_for(const std::vector<std::uint8_t>& codes, std::uint32_t gap_bits) {
  Entries e;
  if (gap_bits == 0) {
    e.codes = codes;
    return e;
  }
  const std::uint64_t max_gap = (std::uint64_t{1} << gap_bits) - 1;
  std::uint64_t run = 0;
  for (std::uint8_t code : codes) {
    if (code == 0) {
      ++run;
      continue;
    }
    while (run > max_gap) {
      e.gaps.push_back(static_cast<std::uint8_t>(max_gap));
      e.codes.push_back(0);
      ++e.fillers;
      run -= max_gap + 1;
    }
    e.gaps.push_back(static_cast<std::uint8_t>(run));
    e.codes.push_back(code);
    run = 0;
  }
  return e;
}

std::vector<std::uint64_t> histogram(const std::vector<std::uint8_t>& symbols, std::size_t alphabet) {
  std::vector<std::uint64_t> counts(alphabet, 0);
  for (std::uint8_t s : symbols) ++counts[s];
  return counts;
}

std::uint64_t coded_bits(const std::vector<std::uint64_t>& counts, const std::vector<std::uint8_t>& lengths) {
  std::uint64_t bits = 0;
  for (std::size_t s = 0; s < counts.size(); ++s) bits += counts[s] * lengths[s];
  return bits;
}

void put_lengths(std::vector<std::byte>& out, const std::vector<std::uint8_t>& lengths) {
  for (std::size_t s = 0; s < lengths.size(); s += 2) {
    const std::uint32_t high = s + 1 < lengths.size() ? lengths[s + 1] : 0;
    out.push_back(static_cast<std::byte>(lengths[s] | (high << 4)));
  }
}

std::vector<std::uint8_t> get_lengths(const std::byte* at, std::size_t count) {
  std::vector<std::uint8_t> lengths(count);
  for (std::size_t s = 0; s < count; ++s) {
    const auto byte = std::to_integer<std::uint8_t>(at[s / 2]);
    lengths[s] = s % 2 == 0 ? (byte & 15) : (byte >> 4);
  }
  return lengths;
}


struct DecodeState {
  std::uint64_t entries, places;
  std::uint32_t codebook_size, gap_bits, code_width;
  const Table* gaps;
  const Table* codes;
  const float* codebook;
  float* dense;
  const std::string* where;
};

[[noreturn]] void bad_entry(const DecodeState& s, std::uint64_t entry, const std::string& what) {
  throw ParseError(*s.where + ": entry " + std::to_string(entry) + " of " + std::to_string(s.entries) + ": " + what);
}

// The entries of one stream. A refill leaves at least 56 bits, enough for several entries: two sparse
// Huffman entries (12 + 12 bits each), four dense ones, three packed sparse ones (8 + 8), seven packed
// dense ones (8).
template <bool Huffman, bool Sparse>
void decode_entries(BitReader& reader, const DecodeState& s) {
  constexpr std::uint64_t kPerRefill = Huffman ? (Sparse ? 2 : 4) : (Sparse ? 3 : 7);
  const std::uint64_t gap_mask = (std::uint64_t{1} << s.gap_bits) - 1;
  const std::uint64_t code_mask = (std::uint64_t{1} << s.code_width) - 1;
  const std::uint16_t* gaps = Sparse && Huffman ? s.gaps->data() : nullptr;
  const std::uint16_t* codes = Huffman ? s.codes->data() : nullptr;
  std::uint64_t next = 0;  // the place an entry with gap 0 would take
  for (std::uint64_t i = 0; i < s.entries;) {
    reader.refill();
    const std::uint64_t stop = std::min(s.entries, i + kPerRefill);
    for (; i < stop; ++i) {
      std::uint64_t gap = 0;
      std::uint32_t code;
      if constexpr (Huffman) {
        if constexpr (Sparse) {
          const std::uint16_t g = gaps[reader.peek() & (kTableSize - 1)];
          if (g == 0) bad_entry(s, i, "no relative-index code starts with these bits");
          reader.skip(g >> 8);
          gap = g & 0xff;
        }
        const std::uint16_t c = codes[reader.peek() & (kTableSize - 1)];
        if (c == 0) bad_entry(s, i, "no codebook-index code starts with these bits");
        reader.skip(c >> 8);
        code = c & 0xff;
      } else {
        if constexpr (Sparse) {
          gap = reader.peek() & gap_mask;
          reader.skip(s.gap_bits);
        }
        code = static_cast<std::uint32_t>(reader.peek() & code_mask);
        reader.skip(s.code_width);
        if (code >= s.codebook_size) {
          bad_entry(s, i, "codebook index " + std::to_string(code) + " is out of range (" +
                              std::to_string(s.codebook_size) + " entries)");
        }
      }
      if constexpr (Sparse) {
        const std::uint64_t place = next + gap;
        if (place >= s.places) {
          bad_entry(s, i, "index " + std::to_string(place) + " lies past the end of " + std::to_string(s.places) +
                              " places");
        }
        s.dense[place] = s.codebook[code];
        next = place + 1;
      } else {
        s.dense[i] = s.codebook[code];  // one entry per place: entries == places
      }
    }
  }
}

}  // namespace

std::optional<Encoded> encode(std::span<const float> values, EncodingStats* stats) {
  if (values.empty()) return std::nullopt;
  // Distinct bit patterns, most frequent first: codebook[0] is the value of every place no entry names.
  std::unordered_map<std::uint32_t, std::uint64_t> frequency;
  for (float v : values) {
    if (!std::isfinite(v)) return std::nullopt;
    ++frequency[std::bit_cast<std::uint32_t>(v)];
    if (frequency.size() > kMaxCodebook) return std::nullopt;
  }
  std::vector<std::pair<std::uint64_t, std::uint32_t>> order;
  for (const auto& [bits, count] : frequency) order.push_back({count, bits});
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  const auto k = static_cast<std::uint32_t>(order.size());
  std::unordered_map<std::uint32_t, std::uint8_t> index;
  std::vector<float> codebook;
  for (std::uint32_t i = 0; i < k; ++i) {
    index[order[i].second] = static_cast<std::uint8_t>(i);
    codebook.push_back(std::bit_cast<float>(order[i].second));
  }
  std::vector<std::uint8_t> codes(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) codes[i] = index[std::bit_cast<std::uint32_t>(values[i])];

  // Every gap width, packed and Huffman-coded; the smallest wins (packed on ties: it decodes faster).
  std::uint64_t best_size = static_cast<std::uint64_t>(values.size()) * sizeof(float);
  std::optional<std::pair<std::uint32_t, bool>> best;
  const std::uint32_t code_width = width_of(k);
  for (std::uint32_t gap_bits = 0; gap_bits <= kMaxGapBits; ++gap_bits) {
    const Entries e = entries_for(codes, gap_bits);
    const std::uint64_t n = e.codes.size();
    const std::uint64_t packed = 4ull * k + ceil_div(n * (gap_bits + code_width), 8);
    const std::vector<std::uint64_t> code_counts = histogram(e.codes, k);
    std::uint64_t bits = coded_bits(code_counts, code_lengths(code_counts));
    std::uint64_t tables = ceil_div(k, 2);
    if (gap_bits > 0) {
      const std::vector<std::uint64_t> gap_counts = histogram(e.gaps, std::size_t{1} << gap_bits);
      bits += coded_bits(gap_counts, code_lengths(gap_counts));
      tables += ceil_div(std::uint64_t{1} << gap_bits, 2);
    }
    const std::uint64_t huffman = 4ull * k + tables + ceil_div(bits, 8);
    if (packed <= best_size) {
      best_size = packed;
      best = {gap_bits, false};
    }
    if (huffman < best_size) {
      best_size = huffman;
      best = {gap_bits, true};
    }
  }
  if (!best) return std::nullopt;

  Encoded out;
  const auto [gap_bits, huffman] = *best;
  const Entries e = entries_for(codes, gap_bits);
  out.encoding = {k, gap_bits, e.codes.size(), huffman};
  out.bytes.resize(4ull * k);
  std::memcpy(out.bytes.data(), codebook.data(), 4ull * k);
  const std::uint64_t gap_alphabet = gap_bits > 0 ? std::uint64_t{1} << gap_bits : 0;
  std::uint64_t code_bits = 0, gap_bits_total = 0;
  if (!huffman) {
    BitWriter w(out.bytes);
    for (std::size_t i = 0; i < e.codes.size(); ++i) {
      if (gap_bits > 0) w.put(e.gaps[i], gap_bits);
      w.put(e.codes[i], code_width);
    }
    w.flush();
    code_bits = e.codes.size() * code_width;
    gap_bits_total = e.gaps.size() * gap_bits;
  } else {
    const Writer code_writer = writer_for(code_lengths(histogram(e.codes, k)));
    Writer gap_writer;
    put_lengths(out.bytes, code_writer.lengths);
    if (gap_bits > 0) {
      gap_writer = writer_for(code_lengths(histogram(e.gaps, gap_alphabet)));
      put_lengths(out.bytes, gap_writer.lengths);
    }
    BitWriter w(out.bytes);
    for (std::size_t i = 0; i < e.codes.size(); ++i) {
      if (gap_bits > 0) {
        w.put(gap_writer.codes[e.gaps[i]], gap_writer.lengths[e.gaps[i]]);
        gap_bits_total += gap_writer.lengths[e.gaps[i]];
      }
      w.put(code_writer.codes[e.codes[i]], code_writer.lengths[e.codes[i]]);
      code_bits += code_writer.lengths[e.codes[i]];
    }
    w.flush();
  }
  if (stats != nullptr) {
    stats->nonzero = 0;
    for (std::uint8_t c : codes) stats->nonzero += c != 0;
    stats->fillers = e.fillers;
    const double n = e.codes.empty() ? 1.0 : static_cast<double>(e.codes.size());
    stats->bits_per_index = static_cast<double>(code_bits) / n;
    stats->bits_per_gap = static_cast<double>(gap_bits_total) / n;
  }
  return out;
}

void decode(const Encoding& encoding, std::span<const std::byte> stored, std::span<float> out,
            const std::string& where) {
  const std::uint32_t k = encoding.codebook_size;
  const std::uint32_t gap_bits = encoding.gap_bits;
  const std::uint64_t n = encoding.entries;
  const std::uint64_t places = out.size();
  if (k == 0 || k > kMaxCodebook) {
    throw ParseError(where + ": codebook size " + std::to_string(k) + " (expected 1 to " +
                     std::to_string(kMaxCodebook) + ")");
  }
  if (gap_bits > kMaxGapBits) {
    throw ParseError(where + ": relative indices of " + std::to_string(gap_bits) + " bits (at most " +
                     std::to_string(kMaxGapBits) + ")");
  }
  if (gap_bits == 0 ? n != places : n > places) {
    throw ParseError(where + ": " + std::to_string(n) + " entries for " + std::to_string(places) + " places");
  }
  if (stored.size() < 4ull * k) {
    throw ParseError(where + ": " + std::to_string(stored.size()) + " bytes cannot hold a codebook of " +
                     std::to_string(k) + " values");
  }
  std::vector<float> codebook(k);
  std::memcpy(codebook.data(), stored.data(), 4ull * k);
  for (std::uint32_t i = 0; i < k; ++i) {
    if (!std::isfinite(codebook[i])) {
      throw ParseError(where + ": codebook entry " + std::to_string(i) + " is not a finite number");
    }
  }
  std::uint64_t at = 4ull * k;
  const std::uint32_t code_width = width_of(k);
  const std::uint64_t gap_alphabet = gap_bits > 0 ? std::uint64_t{1} << gap_bits : 0;
  Table code_table, gap_table;
  if (encoding.huffman) {
    const std::uint64_t tables = ceil_div(k, 2) + ceil_div(gap_alphabet, 2);
    if (stored.size() - at < tables) {
      throw ParseError(where + ": the stream is cut short inside its Huffman tables");
    }
    code_table = decode_table(get_lengths(stored.data() + at, k), where, "codebook-index");
    at += ceil_div(k, 2);
    if (gap_bits > 0) {
      gap_table = decode_table(get_lengths(stored.data() + at, gap_alphabet), where, "relative-index");
      at += ceil_div(gap_alphabet, 2);
    }
  } else {
    const std::uint64_t expected = at + ceil_div(n * (gap_bits + code_width), 8);
    if (stored.size() != expected) {
      throw ParseError(where + ": " + std::to_string(stored.size()) + " bytes where " + std::to_string(n) +
                       " packed entries take " + std::to_string(expected) +
                       (stored.size() < expected ? " (stream cut short)" : ""));
    }
  }
  const std::uint64_t stream_bytes = stored.size() - at;
  BitReader reader(stored.data() + at, stream_bytes);
  float* dense = out.data();
  if (gap_bits > 0) std::fill(out.begin(), out.end(), codebook[0]);
  const DecodeState state{n, places, k, gap_bits, code_width, &gap_table, &code_table, codebook.data(), dense, &where};
  if (encoding.huffman) {
    gap_bits > 0 ? decode_entries<true, true>(reader, state) : decode_entries<true, false>(reader, state);
  } else {
    gap_bits > 0 ? decode_entries<false, true>(reader, state) : decode_entries<false, false>(reader, state);
  }
  const std::uint64_t used = reader.consumed_bits();
  if (used > stream_bytes * 8) {
    throw ParseError(where + ": the stream is cut short (" + std::to_string(used) + " bits read from " +
                     std::to_string(stream_bytes * 8) + ")");
  }
  if (ceil_div(used, 8) != stream_bytes) {
    throw ParseError(where + ": " + std::to_string(stream_bytes - ceil_div(used, 8)) +
                     " bytes follow the end of the stream");
  }
}

}  // namespace espresso::codec
