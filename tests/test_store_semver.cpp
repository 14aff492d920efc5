// Version ranges in store references. The expectations are the examples of the Semantic Versioning 2.0
// specification (semver.org, item 11), of npm's node-semver README (caret, tilde, X-ranges, prerelease
// rule) and of the Cargo book ("Specifying dependencies"), not outputs of this code.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "espresso/store.h"
#include "store/semver.h"

namespace espresso {
namespace {

using store::detail::Version;
using store::detail::VersionRange;

bool satisfies(const std::string& range, const std::string& version) {
  const auto v = store::detail::parse_version(version);
  EXPECT_TRUE(v.has_value()) << version;
  return v && VersionRange(range).matches(*v);
}

TEST(StoreSemver, PrecedenceFollowsTheSpecification) {
  // semver.org 11.4: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta < 1.0.0-beta.2 <
  // 1.0.0-beta.11 < 1.0.0-rc.1 < 1.0.0; 11.2: 1.0.0 < 2.0.0 < 2.1.0 < 2.1.1.
  const std::vector<std::string> ordered = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
                                            "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1",    "1.0.0",
                                            "2.0.0",        "2.1.0",         "2.1.1"};
  for (std::size_t i = 0; i < ordered.size(); ++i) {
    for (std::size_t j = 0; j < ordered.size(); ++j) {
      const auto a = store::detail::parse_version(ordered[i]);
      const auto b = store::detail::parse_version(ordered[j]);
      ASSERT_TRUE(a && b);
      const int expected = i < j ? -1 : (i > j ? 1 : 0);
      EXPECT_EQ(store::detail::compare(*a, *b), expected) << ordered[i] << " vs " << ordered[j];
    }
  }
  // Tags: a leading v and partial versions are read; other tags are not versions.
  EXPECT_EQ(store::detail::compare(*store::detail::parse_version("v1.2"), *store::detail::parse_version("1.2.0")), 0);
  for (const char* not_version : {"latest", "1.2.3.4", "1..2", "1.", "x", "1.2-rc", "sha256-ab.sig", "-1"})
    EXPECT_FALSE(store::detail::parse_version(not_version).has_value()) << not_version;
}

TEST(StoreSemver, CaretAndTildeRangesAsNpmAndCargoDefineThem) {
  // ^1.2.3 := >=1.2.3 <2.0.0; ^0.2.3 := >=0.2.3 <0.3.0; ^0.0.3 := >=0.0.3 <0.0.4
  EXPECT_TRUE(satisfies("^1.2.3", "1.2.3"));
  EXPECT_TRUE(satisfies("^1.2.3", "1.9.0"));
  EXPECT_FALSE(satisfies("^1.2.3", "1.2.2"));
  EXPECT_FALSE(satisfies("^1.2.3", "2.0.0"));
  EXPECT_TRUE(satisfies("^0.2.3", "0.2.9"));
  EXPECT_FALSE(satisfies("^0.2.3", "0.3.0"));
  EXPECT_TRUE(satisfies("^0.0.3", "0.0.3"));
  EXPECT_FALSE(satisfies("^0.0.3", "0.0.4"));
  // ^1.2.x := >=1.2.0 <2.0.0; ^0.0.x and ^0.0 := >=0.0.0 <0.1.0; ^1.x := >=1.0.0 <2.0.0; ^0.x := <1.0.0
  EXPECT_TRUE(satisfies("^1.2.x", "1.2.0"));
  EXPECT_FALSE(satisfies("^1.2.x", "2.0.0"));
  EXPECT_TRUE(satisfies("^0.0.x", "0.0.9"));
  EXPECT_FALSE(satisfies("^0.0", "0.1.0"));
  EXPECT_TRUE(satisfies("^1.x", "1.99.0"));
  EXPECT_TRUE(satisfies("^0.x", "0.99.0"));
  EXPECT_FALSE(satisfies("^0.x", "1.0.0"));
  EXPECT_TRUE(satisfies("^0", "0.5.0"));  // Cargo: ^0 := >=0.0.0, <1.0.0
  // ~1.2.3 := >=1.2.3 <1.3.0; ~1.2 := >=1.2.0 <1.3.0; ~1 := >=1.0.0 <2.0.0; ~0.2 := <0.3.0; ~0 := <1.0.0
  EXPECT_TRUE(satisfies("~1.2.3", "1.2.9"));
  EXPECT_FALSE(satisfies("~1.2.3", "1.3.0"));
  EXPECT_FALSE(satisfies("~1.2.3", "1.2.2"));
  EXPECT_TRUE(satisfies("~1.2", "1.2.0"));
  EXPECT_FALSE(satisfies("~1.2", "1.3.0"));
  EXPECT_TRUE(satisfies("~1", "1.9.9"));
  EXPECT_FALSE(satisfies("~1", "2.0.0"));
  EXPECT_FALSE(satisfies("~0.2", "0.3.0"));
  EXPECT_TRUE(satisfies("~0", "0.9.0"));
}

TEST(StoreSemver, ComparatorsXRangesAndUnions) {
  // Cargo: ">= 1.2, < 1.5" := >=1.2.0, <1.5.0
  EXPECT_TRUE(satisfies(">=1.2,<1.5", "1.4.9"));
  EXPECT_FALSE(satisfies(">=1.2,<1.5", "1.5.0"));
  EXPECT_FALSE(satisfies(">= 1.2, < 1.5", "1.1.9"));
  EXPECT_TRUE(satisfies(">=1.0 <2", "1.10.0"));
  // npm: >1 := >=2.0.0; <1.2 := <1.2.0; <=0.7.x := <0.8.0; 1.x := >=1.0.0 <2.0.0; 1.2.x := <1.3.0
  EXPECT_FALSE(satisfies(">1", "1.5.0"));
  EXPECT_TRUE(satisfies(">1", "2.0.0"));
  EXPECT_FALSE(satisfies("<1.2", "1.2.0"));
  EXPECT_TRUE(satisfies("<=0.7.x", "0.7.9"));
  EXPECT_FALSE(satisfies("<=0.7.x", "0.8.0"));
  EXPECT_TRUE(satisfies("=1.x", "1.3.0"));
  EXPECT_FALSE(satisfies("=1.2.x", "1.3.0"));
  EXPECT_TRUE(satisfies("*", "3.1.4"));
  EXPECT_TRUE(satisfies("=1.2.3", "1.2.3"));
  EXPECT_FALSE(satisfies("=1.2.3", "1.2.4"));
  // npm's "||": either set.
  EXPECT_TRUE(satisfies("^1.2 || ^3", "3.0.1"));
  EXPECT_FALSE(satisfies("^1.2 || ^3", "2.0.0"));
}

TEST(StoreSemver, PrereleasesMatchOnlyWhenTheRangeNamesTheirVersion) {
  // npm: >1.2.3-alpha.3 matches 1.2.3-alpha.7 but not 3.4.5-alpha.9 (3.4.5 itself yes).
  EXPECT_TRUE(satisfies(">1.2.3-alpha.3", "1.2.3-alpha.7"));
  EXPECT_FALSE(satisfies(">1.2.3-alpha.3", "3.4.5-alpha.9"));
  EXPECT_TRUE(satisfies(">1.2.3-alpha.3", "3.4.5"));
  // ^1.2.3-beta.2 allows 1.2.3-beta.4, not 1.2.4-beta.2; ^1.2 never picks a prerelease.
  EXPECT_TRUE(satisfies("^1.2.3-beta.2", "1.2.3-beta.4"));
  EXPECT_FALSE(satisfies("^1.2.3-beta.2", "1.2.4-beta.2"));
  EXPECT_FALSE(satisfies("^1.2", "1.3.0-rc.1"));
  EXPECT_FALSE(satisfies("<2", "2.0.0-beta"));
}

TEST(StoreSemver, TheHighestMatchingTagIsPicked) {
  const std::vector<std::string> tags = {"latest", "1.0", "1.2", "1.10", "1.9.1", "2.0", "2.1.0-rc.1", "v0.9",
                                         "sha256-aa.sig", "trust-targets"};
  EXPECT_EQ(VersionRange("^1.2").best(tags), "1.10");  // by version, not by text ("1.9.1" > "1.10" as text)
  EXPECT_EQ(VersionRange("~1.2").best(tags), "1.2");
  EXPECT_EQ(VersionRange(">=1.0,<2").best(tags), "1.10");
  EXPECT_EQ(VersionRange("^0.9").best(tags), "v0.9");
  EXPECT_EQ(VersionRange("*").best(tags), "2.0");  // not the release candidate
  EXPECT_EQ(VersionRange(">=2.1.0-rc.0").best(tags), "2.1.0-rc.1");
  EXPECT_FALSE(VersionRange("^3").best(tags).has_value());
  // Equal versions: the fuller tag.
  EXPECT_EQ(VersionRange("^1").best({"1.2", "1.2.0"}), "1.2.0");
}

TEST(StoreSemver, ReferencesCarryRangesAndBadRangesAreRefused) {
  const auto ref = store::Reference::parse("127.0.0.1:5000/vision/lenet:^1.2");
  EXPECT_EQ(ref.range, "^1.2");
  EXPECT_TRUE(ref.tag.empty());
  EXPECT_EQ(ref.str(), "127.0.0.1:5000/vision/lenet:^1.2");
  EXPECT_EQ(store::Reference::parse("localhost/a:>=1.0,<2").range, ">=1.0,<2");
  EXPECT_EQ(store::Reference::parse("localhost/a:1.2").tag, "1.2");  // a valid tag stays a tag
  EXPECT_TRUE(store::Reference::parse("localhost/a:1.2").range.empty());
  EXPECT_TRUE(store::Reference::looks_like("localhost/a:~1.2.3"));
  for (const char* bad : {"localhost/a:^", "localhost/a:^1.2.3.4", "localhost/a:>>1", "localhost/a:^a.b",
                          "localhost/a:1.2 - 2", "localhost/a:^1@sha256:0000000000000000000000000000000000000000000000000000000000000000"}) {
    EXPECT_THROW(store::Reference::parse(bad), StoreError) << bad;
  }
  try {
    store::Reference::parse("localhost/a:>>1");
    FAIL();
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find(">>"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace espresso
