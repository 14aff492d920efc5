// The context model of `espresso serve` (include/espresso/context_model.h, docs/context_model.md):
// request-context parsing against std::chrono's calendar, the crash-safe request log, a classifier that
// must learn a rule planted in synthetic data, save/load, the /api/v1/recommend answer, the cache replay
// against hand-counted hits, and the preloader against plain LRU and a random ranking on a simulated log.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "espresso/context_model.h"
#include "espresso/graph.h"
#include "espresso/package.h"
#include "serve/context_model.h"
#include "test_support.h"

namespace espresso::serve {
namespace {

using espresso::testing::TempDir;
using nlohmann::json;

// The field a RequestError names, or "<no error>".
std::string failing_field(const std::string& body) {
  try {
    parse_request_context(body, 0);
  } catch (const RequestError& e) {
    return e.field();
  }
  return "<no error>";
}

TEST(ContextModel, ParseErrorsNameTheField) {
  EXPECT_EQ(failing_field("{"), "");
  EXPECT_EQ(failing_field("[1, 2]"), "");
  EXPECT_EQ(failing_field(R"({"time": true})"), "time");
  EXPECT_EQ(failing_field(R"({"time": "yesterday"})"), "time");
  EXPECT_EQ(failing_field(R"({"time": "2026-13-01T00:00:00"})"), "time");
  EXPECT_EQ(failing_field(R"({"time": "2026-02-29T08:00:00"})"), "time");  // 2026 is no leap year
  EXPECT_EQ(failing_field(R"({"time": "2026-12-04T24:00:00"})"), "time");
  EXPECT_EQ(failing_field(R"({"time": "2026-12-04T08:00:00+25:00"})"), "time");
  EXPECT_EQ(failing_field(R"({"time": "2026-12-04T08:00:00 extra"})"), "time");
  EXPECT_EQ(failing_field(R"({"time": 18446744073709551615})"), "time");
  EXPECT_EQ(failing_field(R"({"time": -1e300})"), "time");
  EXPECT_EQ(failing_field(R"({"location": 5})"), "location");
  EXPECT_EQ(failing_field(R"({"location": ")" + std::string(300, 'x') + R"("})"), "location");
  EXPECT_EQ(failing_field(R"({"app": ["camera"]})"), "app");
  EXPECT_EQ(failing_field(R"({"recent": "cat"})"), "recent");
  EXPECT_EQ(failing_field(R"({"recent": [1]})"), "recent[0]");
  EXPECT_EQ(failing_field(R"({"recent": ["cat", {"a": 1}]})"), "recent[1]");
  EXPECT_EQ(failing_field(R"({"time": "2024-02-29T08:00:00Z", "location": "x", "recent": [], "other": 1})"),
            "<no error>");
  try {
    parse_request_context(R"({"recent": ["cat", 7]})", 0);
    FAIL() << "no error";
  } catch (const ParseError& e) {  // a RequestError is a ParseError, and the message names the field
    EXPECT_NE(std::string(e.what()).find("recent[1]"), std::string::npos) << e.what();
  }
}

TEST(ContextModel, TimesFollowTheCalendar) {
  // std::chrono's civil calendar is the independent reference for the day count and the weekday.
  using namespace std::chrono;
  std::mt19937 rng(3);
  for (int i = 0; i < 300; ++i) {
    const int year = 1971 + static_cast<int>(rng() % 120);
    const unsigned month = 1 + rng() % 12;
    const unsigned day = 1 + rng() % 28;
    const int hour = static_cast<int>(rng() % 24), minute = static_cast<int>(rng() % 60);
    char text[64];
    std::snprintf(text, sizeof text, R"({"time": "%04d-%02u-%02uT%02d:%02d:30+05:30"})", year, month, day,
                  hour, minute);
    const RequestContext context = parse_request_context(text, 0);
    const sys_days date{std::chrono::year{year} / std::chrono::month{month} / std::chrono::day{day}};
    EXPECT_EQ(context.day(), date.time_since_epoch().count()) << text;
    EXPECT_EQ(context.weekday(), static_cast<int>(weekday{date}.iso_encoding()) - 1) << text;
    EXPECT_NEAR(context.hour_of_day(), hour + minute / 60.0 + 30 / 3600.0, 1e-9) << text;
    // The JSON form reads back to the same context.
    EXPECT_EQ(parse_request_context(to_json(context), 0).local_seconds, context.local_seconds);
  }
  const RequestContext epoch = parse_request_context(R"({"time": 0})", 99);
  EXPECT_EQ(epoch.weekday(), 3);                                          // 1970-01-01 was a Thursday
  EXPECT_EQ(parse_request_context("{}", 86400 * 4 + 3600).weekday(), 0);  // a missing time is now
  EXPECT_NEAR(parse_request_context("{}", 86400 * 4 + 3600).hour_of_day(), 1.0, 1e-12);
  const RequestContext recent =
      parse_request_context(R"({"recent": ["a","b","c","d","e","f","g","h","i","j"]})", 0);
  ASSERT_EQ(recent.recent.size(), RequestContext::kMaxRecent);
  EXPECT_EQ(recent.recent.front(), "c");  // the last ones are kept
}

TEST(ContextModel, FeaturesEncodeHourWeekdayAndBuckets) {
  const FeatureLayout layout;
  RequestContext context = parse_request_context(
      R"({"time": "2026-12-05T18:00:00", "location": "Park", "app": "lens", "recent": ["cat", "cat", "dog"]})",
      0);
  const std::vector<float> f = context_features(context, layout);
  ASSERT_EQ(static_cast<int>(f.size()), layout.size());
  EXPECT_NEAR(f[0], -1.0, 1e-6);  // 18:00 is three quarters round the clock
  EXPECT_NEAR(f[1], 0.0, 1e-6);
  EXPECT_EQ(f[2 + 5], 1.0f);  // a Saturday
  EXPECT_EQ(f[static_cast<std::size_t>(layout.location_offset()) + hash_token("park") % 64],
            1.0f);  // case folded
  float recent_sum = 0;
  for (int i = layout.recent_offset(); i < layout.size(); ++i) recent_sum += f[static_cast<std::size_t>(i)];
  EXPECT_NEAR(recent_sum, 1.0f, 1e-6);
  // FNV-1a's published test vectors.
  EXPECT_EQ(hash_token(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(hash_token("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(hash_token("foobar"), 0x85944171f73967e8ull);
}

Observation observation(const std::string& time, const std::string& location, const std::string& model) {
  return {parse_request_context(
              R"({"time": ")" + time + R"(", "location": ")" + location + R"(", "app": "a"})", 0),
          model};
}

TEST(ContextModel, TornLastLineIsSkippedAndCutBeforeAppending) {
  TempDir dir;
  const std::string path = dir.file("requests.jsonl");
  {
    RequestLog log(path);
    log.append(observation("2026-12-01T08:00:00", "park", "plants"));
    log.append(observation("2026-12-01T12:00:00", "office", "documents"));
    log.append(observation("2026-12-01T19:00:00", "home", "pets"));
  }
  // A crash in the middle of the fourth write.
  {
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << R"({"time":"2026-12-01T20:00:00","location":"ho)";
  }
  LogReadReport report;
  std::vector<Observation> read = read_request_log(path, &report);
  ASSERT_EQ(read.size(), 3u);
  EXPECT_TRUE(report.torn_last_line);
  EXPECT_EQ(read[1].model, "documents");
  EXPECT_EQ(read[1].context.location, "office");
  EXPECT_NEAR(read[2].context.hour_of_day(), 19.0, 1e-12);
  {
    RequestLog log(path);
    EXPECT_EQ(log.torn_bytes_removed(),
              std::string(R"({"time":"2026-12-01T20:00:00","location":"ho)").size());
    log.append(observation("2026-12-02T08:00:00", "park", "birds"));
  }
  read = read_request_log(path, &report);
  ASSERT_EQ(read.size(), 4u);
  EXPECT_FALSE(report.torn_last_line);
  EXPECT_EQ(read[3].model, "birds");

  // A complete last line without its newline is kept, and gets its newline before the next append.
  {
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << R"({"time":"2026-12-02T09:00:00","model":"cars"})";
  }
  EXPECT_EQ(read_request_log(path).size(), 5u);
  {
    RequestLog log(path);
    EXPECT_EQ(log.torn_bytes_removed(), 0u);
    log.append(observation("2026-12-02T10:00:00", "park", "plants"));
  }
  EXPECT_EQ(read_request_log(path).size(), 6u);

  // A bad line that is not the last is an error naming the file, line and field.
  const std::string bad = dir.write("bad.jsonl", R"({"time":"2026-12-01T08:00:00","model":"a"})"
                                                 "\n"
                                                 R"({"time":"2026-12-01T08:00:00","model":7})"
                                                 "\n"
                                                 R"({"time":"2026-12-01T08:00:00","model":"b"})"
                                                 "\n");
  try {
    read_request_log(bad);
    FAIL() << "no error";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.field(), "model");
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_request_log(dir.file("absent.jsonl")), FileError);
}

TEST(ContextModel, ObserveAppendsToTheLogAndTrainReadsIt) {
  TempDir dir;
  ContextModelOptions options;
  options.epochs = 30;
  ContextModel model(dir.file("log.jsonl"), options);
  EXPECT_THROW(model.rank(RequestContext{}), ModelError);
  EXPECT_THROW(model.train(), ModelError);  // nothing observed yet
  for (int day = 1; day <= 20; ++day) {
    char morning[32], evening[32];
    std::snprintf(morning, sizeof morning, "2026-11-%02dT08:00:00", day);
    std::snprintf(evening, sizeof evening, "2026-11-%02dT20:00:00", day);
    model.observe(observation(morning, "park", "plants").context, "plants");
    model.observe(observation(evening, "home", "pets").context, "pets");
  }
  EXPECT_EQ(read_request_log(dir.file("log.jsonl")).size(), 40u);
  const TrainReport report = model.train();
  EXPECT_EQ(report.examples, 40u);
  EXPECT_EQ(report.models, 2u);
  EXPECT_LT(report.final_loss, report.first_loss);
  EXPECT_EQ(model.rank(observation("2026-11-25T08:10:00", "park", "?").context).front().model, "plants");
  EXPECT_EQ(model.rank(observation("2026-11-25T20:10:00", "home", "?").context).front().model, "pets");
  EXPECT_THROW(ContextModel().observe(RequestContext{}, "x"), ModelError);  // no log
}

// The planted rule: an independent context → model mapping the classifier must recover.
std::string planted_model(const RequestContext& c) {
  const bool park = c.location == "park-a" || c.location == "park-b";
  if (c.app == "scanner") return "documents";
  if (park) return c.hour_of_day() < 12.0 ? "plants" : "birds";
  if (c.weekday() >= 5) return "pets";
  if (c.location == "mall") return "products";
  return "food";
}

std::vector<Observation> planted_data(std::size_t count, std::mt19937& rng) {
  const std::vector<std::string> locations = {"park-a", "park-b", "office", "mall", "home"};
  const std::vector<std::string> apps = {"lens", "scanner", "shop"};
  const std::vector<std::string> classes = {"cat", "oak", "pizza", "robin", "shoe"};
  std::vector<Observation> data;
  for (std::size_t i = 0; i < count; ++i) {
    RequestContext c;
    // Hours away from the rule's boundaries by at least 20 minutes, so the rule is deterministic.
    double hour = std::uniform_real_distribution<double>(0.0, 24.0)(rng);
    if (std::abs(hour - 12.0) < 1.0 / 3) hour += 0.7;
    c.local_seconds =
        (20000 + static_cast<std::int64_t>(rng() % 70)) * 86400 + static_cast<std::int64_t>(hour * 3600);
    c.location = locations[rng() % locations.size()];
    c.app = apps[rng() % apps.size()];
    for (unsigned k = rng() % 4; k > 0; --k) c.recent.push_back(classes[rng() % classes.size()]);  // noise
    data.push_back({c, planted_model(c)});
  }
  return data;
}

TEST(ContextModel, LearnsAPlantedRule) {
  const FeatureLayout layout;
  std::set<std::uint64_t> buckets;
  for (const char* location : {"park-a", "park-b", "office", "mall", "home"})
    buckets.insert(hash_token(location) % 64);
  ASSERT_EQ(buckets.size(), 5u)
      << "the locations collide in the hashed buckets; the rule could not be learned";

  std::mt19937 rng(11);
  const std::vector<Observation> train = planted_data(3000, rng);
  const std::vector<Observation> test = planted_data(1000, rng);
  std::map<std::string, std::size_t> counts;
  for (const Observation& o : test) ++counts[o.model];
  std::size_t majority = 0;
  for (const auto& [name, n] : counts) majority = std::max(majority, n);

  ContextModelOptions options;
  options.epochs = 25;
  ContextModel model(options);
  const TrainReport report = model.train(train);
  EXPECT_EQ(report.models, 6u);
  std::size_t correct = 0;
  for (const Observation& o : test) correct += model.rank(o.context).front().model == o.model ? 1 : 0;
  const double accuracy = static_cast<double>(correct) / static_cast<double>(test.size());
  const double chance = static_cast<double>(majority) / static_cast<double>(test.size());
  std::printf("planted rule: held-out top-1 %.3f (majority class %.3f), train loss %.3f -> %.3f in %.1f s\n",
              accuracy, chance, report.first_loss, report.final_loss, report.seconds);
  EXPECT_GE(accuracy, 0.93);
  EXPECT_GT(accuracy, chance + 0.4);
  // Scores are probabilities.
  double sum = 0;
  for (const ModelScore& s : model.rank(test[0].context)) sum += s.score;
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST(ContextModel, SaveLoadGivesIdenticalRankings) {
  std::mt19937 rng(5);
  const std::vector<Observation> train = planted_data(600, rng);
  ContextModelOptions options;
  options.epochs = 5;
  options.location_buckets = 16;  // not the default: load must read the layout from the file
  options.hidden = 24;
  ContextModel model(options);
  EXPECT_THROW(model.save("/nonexistent/x.esp"), ModelError);  // not trained yet
  model.train(train);
  TempDir dir;
  const std::string path = dir.file("context.esp");
  model.save(path);
  const ContextModel loaded = ContextModel::load(path);
  EXPECT_EQ(loaded.models(), model.models());
  EXPECT_EQ(loaded.options().location_buckets, 16);
  for (const Observation& o : planted_data(50, rng)) {
    const std::vector<ModelScore> a = model.rank(o.context), b = loaded.rank(o.context);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].model, b[i].model);
      EXPECT_EQ(a[i].score, b[i].score);
    }
  }
  // Another package is refused with a reason.
  Graph other = load_package(path);
  other.metadata.task = "classification";
  save_package(other, dir.file("other.esp"));
  EXPECT_THROW(ContextModel::load(dir.file("other.esp")), ModelError);
  EXPECT_THROW(ContextModel::load(dir.file("absent.esp")), FileError);
}

TEST(ContextModel, RecommendAnswersWithRankingAndPreloadPlan) {
  // A fixed ranking, so the answer can be checked by hand.
  const Ranker ranker = [](const RequestContext& c) {
    if (c.app == "lens")
      return std::vector<ModelScore>{{"plants", 0.5}, {"birds", 0.3}, {"pets", 0.15}, {"food", 0.04}};
    return std::vector<ModelScore>{{"food", 0.9}, {"pets", 0.1}};
  };
  const Preloader preloader(ranker, {{"plants", 60}, {"birds", 50}, {"pets", 30}, {"food", 10}}, 100);
  // plants (60) fits, birds (50) does not, pets (30) does, food is below min_score.
  EXPECT_EQ(preloader.plan(parse_request_context(R"({"app": "lens"})", 0)),
            (std::vector<std::string>{"plants", "pets"}));
  const json answer =
      json::parse(preloader.recommend(R"({"app": "lens", "top": 2, "time": "2026-12-04T08:00:00"})", 0));
  ASSERT_EQ(answer["models"].size(), 2u);
  EXPECT_EQ(answer["models"][0]["name"], "plants");
  EXPECT_EQ(answer["models"][0]["bytes"], 60);
  EXPECT_DOUBLE_EQ(answer["models"][1]["score"].get<double>(), 0.3);
  EXPECT_EQ(answer["preload"], json({"plants", "pets"}));
  EXPECT_EQ(answer["budget_bytes"], 100);
  EXPECT_EQ(answer["context"]["time"], "2026-12-04T08:00:00");
  const json smaller = json::parse(preloader.recommend(R"({"app": "lens", "budget_bytes": 55})", 0));
  EXPECT_EQ(smaller["preload"], json({"birds"}));
  // Averaging over two clients: food's 0.9 from the second outweighs plants.
  const std::vector<RequestContext> clients = {parse_request_context(R"({"app": "lens"})", 0),
                                               parse_request_context(R"({"app": "menu"})", 0)};
  EXPECT_EQ(preloader.plan(clients).front(), "food");

  const auto field_of = [&](const std::string& body) {
    try {
      preloader.recommend(body, 0);
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string("<no error>");
  };
  EXPECT_EQ(field_of(R"({"top": 0})"), "top");
  EXPECT_EQ(field_of(R"({"top": "3"})"), "top");
  EXPECT_EQ(field_of(R"({"budget_bytes": -1})"), "budget_bytes");
  EXPECT_EQ(field_of(R"({"recent": [3]})"), "recent[0]");
  EXPECT_EQ(field_of("not json"), "");
  EXPECT_THROW(Preloader(ranker, {}, 0), ModelError);
}

TEST(ContextModel, ReplayCountsHitsLikeHandCountedLru) {
  // Budget 100, models of 50: two fit. A B A C B A → miss miss hit miss(evicts B) miss(evicts A) miss.
  const std::map<std::string, std::size_t> sizes = {{"A", 50}, {"B", 50}, {"C", 50}};
  std::vector<Observation> requests;
  for (const char* name : {"A", "B", "A", "C", "B", "A"}) requests.push_back({RequestContext{}, name});
  const ReplayResult lru = replay_cache(requests, sizes, 100);
  EXPECT_EQ(lru.hits, 1u);
  EXPECT_EQ(lru.hit, (std::vector<bool>{false, false, true, false, false, false}));
  // A preloader that always wants B: after each request B is touched, so B is always resident; A and C
  // share the other slot. A(miss, B preloaded) B(hit) A(hit) C(miss, evicts A) B(hit) A(miss).
  const Preloader always_b(
      [](const RequestContext&) {
        return std::vector<ModelScore>{{"B", 1.0}};
      },
      sizes, 100);
  const ReplayResult preloaded = replay_cache(requests, sizes, 100, &always_b);
  EXPECT_EQ(preloaded.hit, (std::vector<bool>{false, true, true, false, true, false}));
  EXPECT_EQ(preloaded.preloads, 1u);
  EXPECT_THROW(replay_cache({{RequestContext{}, "D"}}, sizes, 100), ModelError);
}

TEST(ContextModel, PreloaderBeatsLruAndRandomOnASimulatedLog) {
  const std::string script = std::string(ESPRESSO_SOURCE_DIR) + "/scripts/simulate_requests.py";
  if (std::system("python3 -c 'import json' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 is not installed";
  TempDir dir;
  const std::string command = "python3 " + script + " --users 16 --days 14 --test-days 4 --seed 5 --out " +
                              dir.path() + " > /dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::vector<Observation> train = read_request_log(dir.file("train.jsonl"));
  const std::vector<Observation> test = read_request_log(dir.file("test.jsonl"));
  ASSERT_GT(test.size(), 200u);

  ContextModelOptions options;
  options.epochs = 20;
  auto model = std::make_shared<ContextModel>(options);
  model->train(train);
  // Sizes in the proportions of the bench's real models (docs/context_model.md); the budget holds
  // about half of them.
  const std::map<std::string, std::size_t> sizes = {
      {"landmarks", 47}, {"products", 47}, {"plants", 14}, {"food", 14},     {"birds", 5},
      {"pets", 5},       {"cars", 4},      {"faces", 4},   {"documents", 2}, {"digits", 1}};
  const std::size_t budget = 64;
  std::mt19937 rng(9);
  const Ranker random_ranking = [&](const RequestContext&) {
    std::vector<ModelScore> ranked;
    for (const auto& [name, size] : sizes)
      ranked.push_back({name, std::uniform_real_distribution<double>(0, 1)(rng)});
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    return ranked;
  };
  const Preloader context_preloader(std::shared_ptr<const ContextModel>(model), sizes, budget);
  const Preloader random_preloader(random_ranking, sizes, budget, {.min_score = 0.0});
  const ReplayResult lru = replay_cache(test, sizes, budget);
  const ReplayResult with_context = replay_cache(test, sizes, budget, &context_preloader, 600);
  const ReplayResult with_random = replay_cache(test, sizes, budget, &random_preloader, 600);
  std::printf(
      "simulated log, %zu test requests: resident-hit rate LRU %.3f, LRU+context %.3f, LRU+random %.3f\n",
      test.size(), lru.hit_rate(), with_context.hit_rate(), with_random.hit_rate());
  EXPECT_GT(with_context.hit_rate(), lru.hit_rate() + 0.02);
  // The control: preloading from a ranking that knows nothing must not look like a gain.
  EXPECT_LT(with_random.hit_rate(), lru.hit_rate());
  EXPECT_GT(with_context.hit_rate(), with_random.hit_rate() + 0.1);
}

}  // namespace
}  // namespace espresso::serve
