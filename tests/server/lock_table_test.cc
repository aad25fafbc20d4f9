// The server's lock table on its own: POSIX range splitting and conflicts,
// flock sharing, waiters granted in order when compatible, cancel, and a
// session's release.
#include "server/lock_table.h"

#include <gtest/gtest.h>

#include <vector>

namespace traincache::server {
namespace {

const LockOwner kA{1, 10}, kA2{1, 11}, kB{2, 20};

LockRange Posix(LockType type, uint64_t start, uint64_t end) {
  return {.kind = LockKind::kPosix, .type = type, .start = start, .end = end, .pid = 7};
}
LockRange Flock(LockType type) { return {.kind = LockKind::kFlock, .type = type}; }

LockTable::Outcome Try(LockTable& t, const LockOwner& o, const LockRange& r) {
  auto res = t.Lock("f", o, r, /*wait=*/false, nullptr);
  EXPECT_TRUE(res.ok()) << res.status();
  return res->outcome;
}

TEST(LockTableTest, PosixRangesConflictOnlyWhereTheyOverlapAndOneWrites) {
  LockTable t;
  EXPECT_EQ(Try(t, kA, Posix(LockType::kWrite, 0, 99)), LockTable::Outcome::kGranted);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kRead, 99, 99)), LockTable::Outcome::kConflict);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kWrite, 100, 199)), LockTable::Outcome::kGranted);
  // Same session, another owner (process): conflicts too.
  EXPECT_EQ(Try(t, kA2, Posix(LockType::kRead, 50, 50)), LockTable::Outcome::kConflict);
  // Readers share.
  EXPECT_EQ(Try(t, kA, Posix(LockType::kRead, 300, 400)), LockTable::Outcome::kGranted);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kRead, 350, 450)), LockTable::Outcome::kGranted);
  // flock and POSIX never conflict.
  EXPECT_EQ(Try(t, kB, Flock(LockType::kWrite)), LockTable::Outcome::kGranted);
}

TEST(LockTableTest, UnlockingTheMiddleSplitsTheRange) {
  LockTable t;
  ASSERT_EQ(Try(t, kA, Posix(LockType::kWrite, 0, 99)), LockTable::Outcome::kGranted);
  t.Unlock("f", kA, LockKind::kPosix, 40, 59);
  EXPECT_EQ(t.HeldCount(), 2u);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kWrite, 40, 59)), LockTable::Outcome::kGranted);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kWrite, 39, 39)), LockTable::Outcome::kConflict);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kWrite, 60, 60)), LockTable::Outcome::kConflict);
  auto held = t.Test("f", kB, Posix(LockType::kRead, 70, 80));
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->range.start, 60u);
  EXPECT_EQ(held->range.end, 99u);
  EXPECT_EQ(held->range.pid, 7u);
  // An owner's new lock replaces its own over the range (downgrade).
  ASSERT_EQ(Try(t, kA, Posix(LockType::kRead, 60, 99)), LockTable::Outcome::kGranted);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kRead, 70, 80)), LockTable::Outcome::kGranted);
  EXPECT_EQ(Try(t, kB, Posix(LockType::kRead, 0, 10)), LockTable::Outcome::kConflict);
}

TEST(LockTableTest, WaitersAreGrantedWhenCompatibleAndCancelLeavesNothing) {
  LockTable t;
  ASSERT_EQ(Try(t, kA, Flock(LockType::kWrite)), LockTable::Outcome::kGranted);
  std::vector<std::string> order;
  auto w1 = t.Lock("f", kB, Flock(LockType::kWrite), true,
                   [&](absl::Status s) { order.push_back("b:" + s.ToString()); });
  ASSERT_EQ(w1->outcome, LockTable::Outcome::kWaiting);
  auto w2 = t.Lock("f", kA2, Flock(LockType::kRead), true,
                   [&](absl::Status s) { order.push_back("a2:" + s.ToString()); });
  ASSERT_EQ(w2->outcome, LockTable::Outcome::kWaiting);
  auto w3 = t.Lock("f", LockOwner{3, 30}, Flock(LockType::kRead), true,
                   [&](absl::Status) { order.push_back("cancelled one ran"); });
  EXPECT_TRUE(t.Cancel("f", w3->waiter));
  EXPECT_FALSE(t.Cancel("f", w3->waiter));
  t.Unlock("f", kA, LockKind::kFlock, 0, UINT64_MAX);
  // B (first in line) gets it; A2's shared wait still conflicts with B.
  ASSERT_EQ(order, (std::vector<std::string>{"b:OK"}));
  EXPECT_FALSE(t.Cancel("f", w1->waiter));  // granted already
  t.Unlock("f", kB, LockKind::kFlock, 0, UINT64_MAX);
  EXPECT_EQ(order, (std::vector<std::string>{"b:OK", "a2:OK"}));
  t.Unlock("f", kA2, LockKind::kFlock, 0, UINT64_MAX);
  EXPECT_EQ(t.HeldCount(), 0u);
  EXPECT_EQ(t.WaiterCount(), 0u);
}

TEST(LockTableTest, ADowngradeLetsWaitingReadersIn) {
  LockTable t;
  ASSERT_EQ(Try(t, kA, Posix(LockType::kWrite, 0, 9)), LockTable::Outcome::kGranted);
  bool granted = false;
  auto w = t.Lock("f", kB, Posix(LockType::kRead, 0, 9), true,
                  [&](absl::Status s) { granted = s.ok(); });
  ASSERT_EQ(w->outcome, LockTable::Outcome::kWaiting);
  ASSERT_EQ(Try(t, kA, Posix(LockType::kRead, 0, 9)), LockTable::Outcome::kGranted);
  EXPECT_TRUE(granted);
}

TEST(LockTableTest, ReleasingASessionFreesItsLocksAndEndsItsWaits) {
  LockTable t;
  ASSERT_EQ(Try(t, kA, Posix(LockType::kWrite, 0, 9)), LockTable::Outcome::kGranted);
  ASSERT_EQ(Try(t, kB, Posix(LockType::kWrite, 10, 19)), LockTable::Outcome::kGranted);
  std::vector<std::string> seen;
  // A waits on B's range; B waits on A's: releasing A's session grants B and
  // aborts A's wait.
  auto a_wait = t.Lock("f", kA, Posix(LockType::kWrite, 10, 10), true,
                       [&](absl::Status s) { seen.push_back("a:" + std::string(absl::StatusCodeToString(s.code()))); });
  auto b_wait = t.Lock("f", kB, Posix(LockType::kWrite, 5, 5), true,
                       [&](absl::Status s) { seen.push_back("b:" + std::string(absl::StatusCodeToString(s.code()))); });
  ASSERT_EQ(a_wait->outcome, LockTable::Outcome::kWaiting);
  ASSERT_EQ(b_wait->outcome, LockTable::Outcome::kWaiting);
  t.ReleaseSession(kA.session);
  EXPECT_EQ(seen, (std::vector<std::string>{"a:ABORTED", "b:OK"}));
  // A's old owner id cannot unlock B's lock.
  t.Unlock("f", kA, LockKind::kPosix, 0, UINT64_MAX);
  EXPECT_EQ(Try(t, LockOwner{9, 9}, Posix(LockType::kRead, 5, 5)), LockTable::Outcome::kConflict);
}

TEST(LockTableTest, BadRequestsAndLimits) {
  LockTable t;
  EXPECT_EQ(t.Lock("f", kA, Posix(LockType::kWrite, 10, 9), false, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Lock("f", kA, Posix(LockType::kUnlock, 0, 9), false, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (uint64_t i = 0; i < LockTable::kMaxPerFile; ++i) {
    ASSERT_EQ(Try(t, kA, Posix(LockType::kRead, 2 * i, 2 * i)), LockTable::Outcome::kGranted);
  }
  EXPECT_FALSE(t.Lock("f", kB, Posix(LockType::kRead, 1, 1), false, nullptr).ok());
  EXPECT_EQ(t.HeldCount(), LockTable::kMaxPerFile);
}

}  // namespace
}  // namespace traincache::server
