#include "traincache/types.h"

#include <gtest/gtest.h>

namespace traincache {
namespace {

TEST(ChunkIdTest, Sha256OfKnownInput) {
  EXPECT_EQ(ChunkId::Of("abc").ToHex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto round = ChunkId::FromHex(ChunkId::Of("abc").ToHex());
  ASSERT_TRUE(round.ok());
  EXPECT_EQ(*round, ChunkId::Of("abc"));
  EXPECT_FALSE(ChunkId::FromHex("zz").ok());
  EXPECT_FALSE(ChunkId::FromBytes("short").ok());
}

TEST(ChunkMapShapeTest, AcceptsWellFormedAndRejectsOthers) {
  const uint32_t cs = kMinChunkSize;
  std::vector<ChunkRef> two = {{ChunkId::Of("a"), cs}, {std::nullopt, 10}};
  EXPECT_TRUE(ValidateChunkMapShape(cs + 10, cs, two).ok());
  EXPECT_TRUE(ValidateChunkMapShape(0, cs, {}).ok());
  EXPECT_FALSE(ValidateChunkMapShape(cs + 11, cs, two).ok());
  EXPECT_FALSE(ValidateChunkMapShape(cs + 10, cs + 1, two).ok());
  EXPECT_FALSE(ValidateChunkMapShape(cs + 10, 1024, two).ok());
  EXPECT_FALSE(ValidateChunkMapShape(cs * 3, cs, two).ok());
  // Sizes near 2^64 must not wrap around to a small chunk count.
  EXPECT_FALSE(ValidateChunkMapShape(UINT64_MAX, cs, {}).ok());
  EXPECT_FALSE(ValidateChunkMapShape(UINT64_MAX - 5, cs, two).ok());
}

}  // namespace
}  // namespace traincache
