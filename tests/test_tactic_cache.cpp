// The on-disk cache of timed choices (backends/tactic_cache.h) the cuDNN algorithms and the CPU's
// convolution tactics go through: what one process stores the next reads, and a damaged or
// unwritable file only means timing again.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "backends/tactic_cache.h"
#include "test_support.h"

namespace espresso {
namespace {

TEST(TacticCache, ChoicesSurviveTheProcessAndLaterLinesWin) {
  testing::TempDir dir;
  const std::filesystem::path file = std::filesystem::path(dir.path()) / "sub" / "choices.txt";
  {
    TacticCache cache(file);
    EXPECT_FALSE(cache.find("cudnn/H100/0,1,2,").has_value());
    cache.store("cudnn/H100/0,1,2,", "6");
    cache.store("cudnn/H100/0,1,3,", "1");
    cache.store("cudnn/H100/0,1,2,", "7");
    EXPECT_EQ(cache.find("cudnn/H100/0,1,2,"), "7");
  }
  TacticCache reread(file);
  EXPECT_EQ(reread.find("cudnn/H100/0,1,2,"), "7");
  EXPECT_EQ(reread.find("cudnn/H100/0,1,3,"), "1");
  EXPECT_FALSE(reread.find("cudnn/H100/0,1,4,").has_value());
}

// Two processes timing different layers of the same model at once: each finds what the other stored.
TEST(TacticCache, AKeyAnotherProcessStoredMeanwhileIsFound) {
  testing::TempDir dir;
  const std::filesystem::path file = std::filesystem::path(dir.path()) / "choices.txt";
  TacticCache mine(file), theirs(file);
  mine.store("a", "1");
  EXPECT_FALSE(theirs.find("b").has_value());
  theirs.store("b", "2");
  EXPECT_EQ(mine.find("b"), "2");
  EXPECT_EQ(theirs.find("a"), "1");
}

TEST(TacticCache, DamagedLinesAndWhiteSpaceAreIgnored) {
  testing::TempDir dir;
  const std::filesystem::path file = std::filesystem::path(dir.path()) / "choices.txt";
  {
    std::ofstream out(file, std::ios::binary);
    out << "good 3\n"
        << "three fields here\n"
        << "lonely\n"
        << std::string("\0\xff\n", 3) << "truncated 4";
  }
  TacticCache cache(file);
  EXPECT_EQ(cache.find("good"), "3");
  EXPECT_FALSE(cache.find("three").has_value());
  EXPECT_FALSE(cache.find("lonely").has_value());
  EXPECT_EQ(cache.find("truncated"), "4");  // a last line without its newline still holds both fields
  cache.store("has space", "1");
  cache.store("key", "new\nline");
  cache.store("", "1");
  EXPECT_FALSE(cache.find("has space").has_value());
  EXPECT_FALSE(cache.find("key").has_value());
  EXPECT_FALSE(cache.find("").has_value());
}

TEST(TacticCache, AnUnwritableFolderKeepsChoicesInMemory) {
  testing::TempDir dir;
  const std::filesystem::path blocker = std::filesystem::path(dir.path()) / "not_a_folder";
  std::ofstream(blocker) << "x";
  TacticCache cache(blocker / "choices.txt");
  cache.store("k", "v");
  EXPECT_EQ(cache.find("k"), "v");
  TacticCache memory_only{std::filesystem::path{}};
  memory_only.store("k", "v");
  EXPECT_EQ(memory_only.find("k"), "v");
}

TEST(TacticCache, TheFolderFollowsTheEnvironment) {
  const testing::ScopedEnv own("ESPRESSO_TACTIC_CACHE", "/tmp/own");
  EXPECT_EQ(tactic_cache_file("cudnn.txt"), std::filesystem::path("/tmp/own/cudnn.txt"));
  const testing::ScopedEnv unset("ESPRESSO_TACTIC_CACHE", nullptr);
  const testing::ScopedEnv xdg("XDG_CACHE_HOME", "/tmp/xdg");
  EXPECT_EQ(tactic_cache_file("cudnn.txt"), std::filesystem::path("/tmp/xdg/espresso/cudnn.txt"));
  const testing::ScopedEnv no_xdg("XDG_CACHE_HOME", nullptr);
  const testing::ScopedEnv home("HOME", "/tmp/home");
  EXPECT_EQ(tactic_cache_file("cudnn.txt"), std::filesystem::path("/tmp/home/.cache/espresso/cudnn.txt"));
}

}  // namespace
}  // namespace espresso
