// Text data sets: character vocabularies and LMDBs of character indices (convert-data --format text).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include "data/datum.h"
#include "data/lmdb.h"
#include "espresso/data.h"
#include "espresso/errors.h"

namespace espresso::data {
namespace {

namespace fs = std::filesystem;

struct TextRecord {
  std::string text;
  std::string label;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path.string() + ": cannot open");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<TextRecord> read_tsv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FileError(path + ": cannot open");
  std::vector<TextRecord> records;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::size_t tab = line.find('\t');
    if (tab == std::string::npos || tab == 0) {
      throw DataError(path + ":" + std::to_string(number) + ": expected `label<TAB>text`");
    }
    records.push_back({line.substr(tab + 1), line.substr(0, tab)});
  }
  return records;
}

std::vector<TextRecord> read_class_folders(const std::string& dir) {
  std::vector<fs::path> classes;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory()) classes.push_back(entry.path());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw DataError(dir + ": no class sub-folders");
  std::vector<TextRecord> records;
  for (const fs::path& cls : classes) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(cls)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) records.push_back({read_file(f), cls.filename().string()});
  }
  return records;
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw FileError(path.string() + ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace

std::vector<char32_t> decode_utf8(const std::string& text) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const int extra = lead < 0x80         ? 0
                      : (lead >> 5) == 6  ? 1
                      : (lead >> 4) == 14 ? 2
                      : (lead >> 3) == 30 ? 3
                                          : -1;
    if (extra < 0 || i + static_cast<std::size_t>(extra) >= text.size()) {
      throw DataError("malformed UTF-8 at byte " + std::to_string(i));
    }
    char32_t cp = extra == 0 ? lead : lead & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(text[i + static_cast<std::size_t>(k)]);
      if ((next >> 6) != 2) throw DataError("malformed UTF-8 at byte " + std::to_string(i));
      cp = (cp << 6) | (next & 0x3F);
    }
    out.push_back(cp);
    i += static_cast<std::size_t>(extra) + 1;
  }
  return out;
}

CharVocabulary CharVocabulary::build(const std::vector<std::string>& texts, std::int64_t max_size) {
  std::map<char32_t, std::int64_t> counts;
  for (const std::string& t : texts) {
    for (char32_t c : decode_utf8(t)) ++counts[c];
  }
  std::vector<std::pair<char32_t, std::int64_t>> ranked(counts.begin(), counts.end());
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  CharVocabulary v;
  for (const auto& [c, n] : ranked) {
    if (v.size() >= max_size) break;
    v.chars_.push_back(c);
  }
  return v;
}

CharVocabulary CharVocabulary::load(const std::string& path) {
  CharVocabulary v;
  int number = 0;
  for (const std::string& line : read_lines(path)) {
    ++number;
    unsigned long cp = 0;
    if (line.rfind("U+", 0) != 0 || (cp = std::stoul(line.substr(2), nullptr, 16)) > 0x10FFFF) {
      throw DataError(path + ":" + std::to_string(number) + ": expected a code point as U+XXXX, got '" +
                      line + "'");
    }
    v.chars_.push_back(static_cast<char32_t>(cp));
  }
  return v;
}

void CharVocabulary::save(const std::string& path) const {
  std::ofstream out(path);
  char code[16];
  for (char32_t c : chars_) {
    std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
    out << code << '\n';
  }
  if (!out) throw FileError(path + ": cannot write");
}

std::vector<float> CharVocabulary::encode(const std::string& text, std::int64_t length) const {
  std::vector<float> out(static_cast<std::size_t>(length), 0.0f);
  const std::vector<char32_t> chars = decode_utf8(text);
  for (std::size_t i = 0; i < chars.size() && i < out.size(); ++i) {
    const auto at = std::find(chars_.begin(), chars_.end(), chars[i]);
    out[i] = at == chars_.end() ? 1.0f : static_cast<float>(2 + (at - chars_.begin()));
  }
  return out;
}

LmdbSummary convert_text_to_lmdb(const LmdbConversion& o) {
  if (o.length < 1) throw DataError("convert-data: --length must be at least 1");
  if (o.max_vocabulary < 3) throw DataError("convert-data: --max-vocabulary must be at least 3");
  std::vector<TextRecord> records;
  if (fs::is_directory(o.input)) {
    records = read_class_folders(o.input);
  } else if (fs::is_regular_file(o.input)) {
    records = read_tsv(o.input);
  } else {
    throw FileError(o.input + ": no such file or folder");
  }
  if (records.empty()) throw DataError(o.input + ": no texts to convert");
  CharVocabulary vocabulary;
  std::vector<std::string> labels;
  if (!o.like.empty()) {
    vocabulary = CharVocabulary::load((fs::path(o.like) / "vocab.txt").string());
    labels = read_lines(fs::path(o.like) / "labels.txt");
  } else {
    std::vector<std::string> texts;
    for (const TextRecord& r : records) {
      try {
        (void)decode_utf8(r.text);
      } catch (const DataError& e) {
        throw DataError(o.input + ": a text of class '" + r.label + "': " + e.what());
      }
      texts.push_back(r.text);
    }
    vocabulary = CharVocabulary::build(texts, o.max_vocabulary);
    for (const TextRecord& r : records) labels.push_back(r.label);
    std::sort(labels.begin(), labels.end());
    labels.erase(std::unique(labels.begin(), labels.end()), labels.end());
  }
  std::vector<std::size_t> order(records.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (o.shuffle) {
    std::mt19937_64 rng(o.seed);
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);
  }
  LmdbWriter writer(o.output);
  char key[24];
  for (std::size_t i = 0; i < order.size(); ++i) {
    const TextRecord& r = records[order[i]];
    const auto label = std::find(labels.begin(), labels.end(), r.label);
    if (label == labels.end()) {
      throw DataError(o.input + ": label '" + r.label + "' is not among the labels of " + o.like);
    }
    std::snprintf(key, sizeof key, "%08zu", i);
    writer.put(key, encode_datum_floats(vocabulary.encode(r.text, o.length), 1, 1, o.length,
                                        static_cast<int>(label - labels.begin())));
  }
  writer.finish();
  vocabulary.save((fs::path(o.output) / "vocab.txt").string());
  std::ofstream out(fs::path(o.output) / "labels.txt");
  for (const std::string& name : labels) out << name << '\n';
  if (!out) throw FileError(o.output + "/labels.txt: cannot write");
  return {static_cast<std::int64_t>(records.size()), 1, 1, static_cast<int>(o.length), labels};
}

}  // namespace espresso::data
