// HandoverState (fuse/handover_state.h): what travels beside a /dev/fuse
// descriptor to the next process. Round trips through a real memfd, in-place
// rewrites seen through a second descriptor (as the fd store's copy sees
// them), and refusal of what is not a state.
#include "fuse/handover_state.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace traincache::fuse {
namespace {

TEST(HandoverStateTest, RoundTripsAndRewritesInPlace) {
  HandoverState s{.epoch = 1,
                  .init_request = std::string("\x68\0\0\0\x1a\0\0\0", 8) + "init",
                  .mountpoint = "/run/traincache/mnt/project/p1"};
  absl::StatusOr<int> fd = CreateHandoverFd(s);
  ASSERT_TRUE(fd.ok()) << fd.status();
  // The fd store's copy: another descriptor of the same memfd.
  const int copy = dup(*fd);
  ASSERT_GE(copy, 0);
  absl::StatusOr<HandoverState> back = ReadHandoverState(copy);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->epoch, 1u);
  EXPECT_EQ(back->init_request, s.init_request);
  EXPECT_EQ(back->mountpoint, s.mountpoint);

  // A takeover bumps the epoch; a shorter rewrite leaves no tail behind.
  s.epoch = 7;
  s.init_request = "x";
  ASSERT_TRUE(WriteHandoverState(*fd, s).ok());
  back = ReadHandoverState(copy);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->epoch, 7u);
  EXPECT_EQ(back->init_request, "x");
  EXPECT_EQ(FirstHandleOf(7), uint64_t{7} << 40);
  EXPECT_GT(FirstHandleOf(8), FirstHandleOf(7) + (uint64_t{1} << 39));
  close(copy);
  close(*fd);
}

TEST(HandoverStateTest, RefusesWhatIsNotAState) {
  char path[] = "/tmp/handover-state-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  // Empty, foreign bytes, a torn length, epoch 0: all INVALID_ARGUMENT.
  EXPECT_EQ(ReadHandoverState(fd).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(write(fd, "not a state at all, just bytes", 30), 30);
  EXPECT_EQ(ReadHandoverState(fd).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteHandoverState(fd, HandoverState{.epoch = 3, .mountpoint = "/m"}).ok());
  ASSERT_TRUE(ReadHandoverState(fd).ok());
  ASSERT_EQ(ftruncate(fd, 20), 0);  // Torn: the lengths promise more.
  EXPECT_EQ(ReadHandoverState(fd).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteHandoverState(fd, HandoverState{.epoch = 0, .mountpoint = "/m"}).ok());
  EXPECT_EQ(ReadHandoverState(fd).status().code(), absl::StatusCode::kInvalidArgument);
  // Too large to be ours: refused, and nothing written.
  EXPECT_FALSE(WriteHandoverState(fd, HandoverState{.mountpoint = std::string(5000, 'm')}).ok());
  close(fd);
}

}  // namespace
}  // namespace traincache::fuse
