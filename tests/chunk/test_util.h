// Helpers shared by the chunk tests: status assertions, scratch directories,
// deterministic random bytes.
#ifndef TRAINCACHE_TESTS_CHUNK_TEST_UTIL_H_
#define TRAINCACHE_TESTS_CHUNK_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "testing/temp_dir.h"
#include "absl/status/statusor.h"
#include "traincache/scope.h"

namespace traincache::testing {

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

#define EXPECT_OK(expr)                                              \
  do {                                                               \
    const auto& tc_ok_ = (expr);                                     \
    EXPECT_TRUE(::traincache::testing::StatusOf(tc_ok_).ok())        \
        << #expr << ": " << ::traincache::testing::StatusOf(tc_ok_); \
  } while (0)
#define ASSERT_OK(expr)                                              \
  do {                                                               \
    const auto& tc_ok_ = (expr);                                     \
    ASSERT_TRUE(::traincache::testing::StatusOf(tc_ok_).ok())        \
        << #expr << ": " << ::traincache::testing::StatusOf(tc_ok_); \
  } while (0)
#define EXPECT_CODE(expr, code_)                                   \
  EXPECT_EQ(::traincache::testing::StatusOf(expr).code(), (code_)) \
      << #expr << ": " << ::traincache::testing::StatusOf(expr)

// Parses a scope that the test knows is valid.
inline Scope S(std::string_view text) {
  absl::StatusOr<Scope> scope = Scope::Parse(text);
  EXPECT_TRUE(scope.ok()) << scope.status();
  return *scope;
}

// `n` pseudo-random bytes, the same for the same seed.
inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<char>(rng());
  return out;
}

// Number of entries directly in `dir` (0 if it does not exist).
inline size_t CountEntries(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_CHUNK_TEST_UTIL_H_
