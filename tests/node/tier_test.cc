// The NodeTier conformance suite, run over the memory and the disk tier, and
// the disk tier's own tests: restart warm, corruption found after a restart,
// missing and truncated images, sparse images, a full disk (a real tmpfs).

#include "traincache/node_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/chunk/test_util.h"

namespace traincache {
namespace {

using ::traincache::testing::RandomBytes;
using ::traincache::testing::S;
using ::traincache::testing::TempDir;

constexpr uint32_t kChunk = kMinChunkSize;  // 64 KiB keeps the tests quick.

// A content and its chunk map: chunk i holds bytes[i*chunk_size, ...).
struct Content {
  ContentKey key;
  std::string bytes;
  ChunkMap map;

  std::string_view Chunk(uint64_t i) const {
    return std::string_view(bytes).substr(i * map.chunk_size, map.chunks[i].length);
  }
};

Content MakeContent(const Scope& scope, InodeId ino, uint64_t version, uint64_t size,
                    uint64_t seed, uint32_t chunk_size = kChunk) {
  Content c{ContentKey{scope, ino, version}, RandomBytes(size, seed), ChunkMap{}};
  c.map.version = version;
  c.map.size = size;
  c.map.chunk_size = chunk_size;
  for (uint64_t off = 0; off < size; off += chunk_size) {
    uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(chunk_size, size - off));
    c.map.chunks.push_back(ChunkRef{ChunkId::Of(c.bytes.substr(off, len)), len});
  }
  return c;
}

// kDisk writes chunks with O_DIRECT (where the file system takes it),
// kDiskBuffered through the page cache.
enum class TierKind { kMemory, kDisk, kDiskBuffered };

class TierConformance : public ::testing::TestWithParam<TierKind> {
 protected:
  void SetUp() override { Open(1ull << 30); }

  void Open(uint64_t capacity) {
    tier_.reset();
    if (GetParam() != TierKind::kMemory) {
      DiskTierOptions options;
      options.dir = dir_.path() + "/tier";
      options.capacity_bytes = capacity;
      options.direct_writes = GetParam() == TierKind::kDisk;
      absl::StatusOr<std::unique_ptr<NodeTier>> tier = OpenDiskTier(options);
      ASSERT_OK(tier);
      tier_ = std::move(*tier);
    } else {
      tier_ = NewMemoryTier(capacity);
    }
  }

  void StoreAll(const Content& c) {
    for (uint64_t i = 0; i < c.map.chunks.size(); ++i) {
      if (c.map.chunks[i].id) ASSERT_OK(tier_->Store(c.key, c.map, i, c.Chunk(i)));
    }
  }

  // The bytes of chunk i if present, nullopt if absent.
  std::optional<std::string> ReadChunk(const Content& c, uint64_t i) {
    std::string out(c.map.chunks[i].length, 'x');
    absl::StatusOr<bool> hit = tier_->Read(c.key, c.map, i, 0, out.size(), out.data());
    EXPECT_OK(hit);
    if (!hit.ok() || !*hit) return std::nullopt;
    return out;
  }

  TempDir dir_;
  std::unique_ptr<NodeTier> tier_;
  const Scope scope_ = S("project:p");
};

TEST_P(TierConformance, StoreReadRoundTrip) {
  Content c = MakeContent(scope_, 2, 1, 3 * kChunk - 100, 1);
  EXPECT_EQ(ReadChunk(c, 0), std::nullopt);
  ASSERT_OK(tier_->Store(c.key, c.map, 0, c.Chunk(0)));
  ASSERT_OK(tier_->Store(c.key, c.map, 2, c.Chunk(2)));
  EXPECT_EQ(ReadChunk(c, 0), std::string(c.Chunk(0)));
  EXPECT_EQ(ReadChunk(c, 1), std::nullopt);
  EXPECT_EQ(ReadChunk(c, 2), std::string(c.Chunk(2)));  // The short last chunk.
  TierStats stats = tier_->Stats();
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.images, 1u);
  EXPECT_EQ(stats.used_bytes, kChunk + (kChunk - 100));
  EXPECT_TRUE(tier_->Contains(c.key, c.map, 0));
  EXPECT_FALSE(tier_->Contains(c.key, c.map, 1));
}

TEST_P(TierConformance, PartialReadsAndBadRanges) {
  Content c = MakeContent(scope_, 2, 1, 2 * kChunk, 2);
  StoreAll(c);
  std::string out(1000, 'x');
  ASSERT_OK(tier_->Read(c.key, c.map, 1, 123, out.size(), out.data()));
  EXPECT_EQ(out, c.bytes.substr(kChunk + 123, 1000));
  EXPECT_CODE(tier_->Read(c.key, c.map, 1, kChunk - 10, 11, out.data()),
              absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(tier_->Read(c.key, c.map, 2, 0, 1, out.data()), absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(tier_->Store(c.key, c.map, 2, "x"), absl::StatusCode::kInvalidArgument);
}

TEST_P(TierConformance, ShortChunkReadsZerosAndPrefixKeepsLength) {
  // A chunk of 1000 bytes behind a ref of a whole chunk (a file extended by
  // truncate): the rest reads as zeros.
  const std::string small = RandomBytes(1000, 3);
  ContentKey key{scope_, 3, 1};
  ChunkMap map{1, kChunk, kChunk, {ChunkRef{ChunkId::Of(small), kChunk}}};
  ASSERT_OK(tier_->Store(key, map, 0, small));
  std::string out(kChunk, 'x');
  ASSERT_OK(tier_->Read(key, map, 0, 0, out.size(), out.data()));
  EXPECT_EQ(out, small + std::string(kChunk - 1000, '\0'));
  EXPECT_EQ(tier_->Stats().used_bytes, 1000u);

  // A ref of 100 bytes of a whole chunk (a file shrunk by truncate): only
  // the prefix is kept.
  const std::string big = RandomBytes(kChunk, 4);
  ContentKey key2{scope_, 4, 1};
  ChunkMap map2{1, 100, kChunk, {ChunkRef{ChunkId::Of(big), 100}}};
  ASSERT_OK(tier_->Store(key2, map2, 0, big));
  std::string out2(100, 'x');
  ASSERT_OK(tier_->Read(key2, map2, 0, 0, 100, out2.data()));
  EXPECT_EQ(out2, big.substr(0, 100));
  EXPECT_EQ(tier_->Stats().used_bytes, 1100u);
}

TEST_P(TierConformance, HolesArePresentZerosAndCompleteIgnoresThem) {
  Content c = MakeContent(scope_, 5, 1, 3 * kChunk, 5);
  c.map.chunks[1].id.reset();
  EXPECT_FALSE(tier_->Complete(c.key, c.map));
  std::string out(10, 'x');
  absl::StatusOr<bool> hit = tier_->Read(c.key, c.map, 1, 0, 10, out.data());
  ASSERT_OK(hit);
  EXPECT_TRUE(*hit);
  EXPECT_EQ(out, std::string(10, '\0'));
  ASSERT_OK(tier_->Store(c.key, c.map, 0, c.Chunk(0)));
  EXPECT_FALSE(tier_->Complete(c.key, c.map));
  ASSERT_OK(tier_->Store(c.key, c.map, 2, c.Chunk(2)));
  EXPECT_TRUE(tier_->Complete(c.key, c.map));

  ChunkMap all_holes{1, kChunk, kChunk, {ChunkRef{std::nullopt, kChunk}}};
  EXPECT_TRUE(tier_->Complete(ContentKey{scope_, 6, 1}, all_holes));
}

TEST_P(TierConformance, StoringAPresentChunkAgainChangesNothing) {
  Content c = MakeContent(scope_, 2, 1, kChunk, 6);
  StoreAll(c);
  StoreAll(c);
  EXPECT_EQ(tier_->Stats().used_bytes, kChunk);
  EXPECT_EQ(ReadChunk(c, 0), std::string(c.Chunk(0)));
}

TEST_P(TierConformance, DropOtherVersionsAndDropScope) {
  Content v1 = MakeContent(scope_, 7, 1, kChunk, 7);
  Content v2 = MakeContent(scope_, 7, 2, kChunk, 8);
  Content other_ino = MakeContent(scope_, 70, 1, kChunk, 9);
  Content other_scope = MakeContent(S("team:p"), 7, 1, kChunk, 10);
  for (const Content* c : {&v1, &v2, &other_ino, &other_scope}) StoreAll(*c);
  EXPECT_EQ(tier_->Stats().images, 4u);

  ASSERT_OK(tier_->DropOtherVersions(scope_, 7, 2));
  EXPECT_EQ(ReadChunk(v1, 0), std::nullopt);
  EXPECT_EQ(ReadChunk(v2, 0), std::string(v2.Chunk(0)));
  EXPECT_EQ(ReadChunk(other_ino, 0), std::string(other_ino.Chunk(0)));
  EXPECT_EQ(tier_->Stats().images, 3u);
  EXPECT_EQ(tier_->Stats().used_bytes, 3 * kChunk);

  ASSERT_OK(tier_->DropScope(scope_));
  EXPECT_EQ(ReadChunk(v2, 0), std::nullopt);
  EXPECT_EQ(ReadChunk(other_ino, 0), std::nullopt);
  EXPECT_EQ(ReadChunk(other_scope, 0), std::string(other_scope.Chunk(0)));
  EXPECT_EQ(tier_->Stats().images, 1u);
  EXPECT_EQ(tier_->Stats().used_bytes, kChunk);
  if (GetParam() == TierKind::kDisk) {
    EXPECT_FALSE(std::filesystem::exists(tier_->ImagePath(v1.key)));
    EXPECT_FALSE(std::filesystem::exists(tier_->ImagePath(v2.key)));
    EXPECT_TRUE(std::filesystem::exists(tier_->ImagePath(other_scope.key)));
  }
  // The scope can be cached again.
  StoreAll(v2);
  EXPECT_EQ(ReadChunk(v2, 0), std::string(v2.Chunk(0)));
}

TEST_P(TierConformance, EvictsLeastRecentlyUsedImagesDownToTheLowWatermark) {
  // Ten chunks of capacity: high watermark 9.5 chunks, low 8.5.
  Open(10 * kChunk);
  std::vector<Content> images;
  for (int i = 0; i < 10; ++i) images.push_back(MakeContent(scope_, 10 + i, 1, kChunk, 100 + i));
  for (int i = 0; i < 9; ++i) StoreAll(images[i]);
  EXPECT_EQ(tier_->Stats().evicted_bytes, 0u);
  ASSERT_NE(ReadChunk(images[0], 0), std::nullopt);  // 0 becomes the most recent.

  StoreAll(images[9]);  // 10 chunks > 9.5: evict down to 7.5 + the new one.
  EXPECT_NE(ReadChunk(images[0], 0), std::nullopt);
  EXPECT_EQ(ReadChunk(images[1], 0), std::nullopt);
  EXPECT_EQ(ReadChunk(images[2], 0), std::nullopt);
  for (int i = 3; i < 10; ++i) EXPECT_NE(ReadChunk(images[i], 0), std::nullopt) << i;
  TierStats stats = tier_->Stats();
  EXPECT_EQ(stats.evicted_bytes, 2 * kChunk);
  EXPECT_EQ(stats.used_bytes, 8 * kChunk);
  EXPECT_EQ(stats.images, 8u);
}

TEST_P(TierConformance, NeverEvictsTheImageBeingStoredInto) {
  Open(4 * kChunk);
  Content old = MakeContent(scope_, 20, 1, kChunk, 20);
  Content big = MakeContent(scope_, 21, 1, 8 * kChunk, 21);
  StoreAll(old);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_OK(tier_->Store(big.key, big.map, i, big.Chunk(i)));
  EXPECT_EQ(ReadChunk(old, 0), std::nullopt);  // Evicted for `big`, which was not.
  // Nothing else left to evict: the fifth chunk does not fit.
  EXPECT_CODE(tier_->Store(big.key, big.map, 4, big.Chunk(4)),
              absl::StatusCode::kResourceExhausted);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_EQ(ReadChunk(big, i), std::string(big.Chunk(i))) << i;
  EXPECT_EQ(tier_->Stats().used_bytes, 4 * kChunk);
}

INSTANTIATE_TEST_SUITE_P(Tiers, TierConformance,
                         ::testing::Values(TierKind::kMemory, TierKind::kDisk,
                                           TierKind::kDiskBuffered),
                         [](const auto& info) {
                           switch (info.param) {
                             case TierKind::kMemory: return "Memory";
                             case TierKind::kDisk: return "Disk";
                             case TierKind::kDiskBuffered: return "DiskBuffered";
                           }
                           return "?";
                         });

// ---- disk tier only ----

class DiskTierTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(uint64_t capacity = 1ull << 30) {
    tier_.reset();  // Writes the indexes of the previous instance.
    DiskTierOptions options;
    options.dir = dir_.path() + "/tier";
    options.capacity_bytes = capacity;
    absl::StatusOr<std::unique_ptr<NodeTier>> tier = OpenDiskTier(options);
    ASSERT_OK(tier);
    tier_ = std::move(*tier);
  }

  void StoreAll(const Content& c) {
    for (uint64_t i = 0; i < c.map.chunks.size(); ++i) {
      ASSERT_OK(tier_->Store(c.key, c.map, i, c.Chunk(i)));
    }
  }

  std::optional<std::string> ReadChunk(const Content& c, uint64_t i) {
    std::string out(c.map.chunks[i].length, 'x');
    absl::StatusOr<bool> hit = tier_->Read(c.key, c.map, i, 0, out.size(), out.data());
    EXPECT_OK(hit);
    if (!hit.ok() || !*hit) return std::nullopt;
    return out;
  }

  TempDir dir_;
  std::unique_ptr<NodeTier> tier_;
  const Scope scope_ = S("project:p");
};

TEST_F(DiskTierTest, ImagePathIsKindScopeInodeVersion) {
  EXPECT_EQ(tier_->ImagePath(ContentKey{S("team:t1"), 42, 7}),
            dir_.path() + "/tier/team/t1/42.7.img");
}

// Passthrough: a complete image is lent out open and pinned.
TEST_F(DiskTierTest, LeasedImagesReadAsTheFileAndAreNotEvicted) {
  Open(4 * kChunk);
  Content c = MakeContent(scope_, 2, 1, 2 * kChunk - 9, 1);
  ASSERT_OK(tier_->Store(c.key, c.map, 0, c.Chunk(0)));
  EXPECT_CODE(tier_->LeaseImage(c.key, c.map), absl::StatusCode::kNotFound);  // Incomplete.
  ASSERT_OK(tier_->Store(c.key, c.map, 1, c.Chunk(1)));
  absl::StatusOr<std::unique_ptr<ImageLease>> lease = tier_->LeaseImage(c.key, c.map);
  ASSERT_OK(lease);
  // The image is the file: same size, same bytes.
  std::string bytes(c.bytes.size() + 10, '\0');
  ssize_t n = pread((*lease)->fd(), bytes.data(), bytes.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(c.bytes.size()));
  bytes.resize(static_cast<size_t>(n));
  EXPECT_TRUE(bytes == c.bytes);

  // Two more images of two chunks each do not fit: they evict each other,
  // never the leased one.
  Content d = MakeContent(scope_, 3, 1, 2 * kChunk, 2);
  Content e = MakeContent(scope_, 4, 1, 2 * kChunk, 3);
  StoreAll(d);
  StoreAll(e);
  EXPECT_GT(tier_->Stats().evicted_bytes, 0u);
  EXPECT_TRUE(tier_->Complete(c.key, c.map));
  EXPECT_FALSE(tier_->Complete(d.key, d.map));
  // Given back: the next pressure may evict it.
  lease->reset();
  StoreAll(d);
  EXPECT_FALSE(tier_->Complete(c.key, c.map));
}

TEST_F(DiskTierTest, ALeasedImageDroppedAsSupersededStillReadsThroughTheLease) {
  Content c = MakeContent(scope_, 2, 1, kChunk + 1, 1);
  StoreAll(c);
  absl::StatusOr<std::unique_ptr<ImageLease>> lease = tier_->LeaseImage(c.key, c.map);
  ASSERT_OK(lease);
  ASSERT_OK(tier_->DropOtherVersions(scope_, 2, /*keep_version=*/2));
  EXPECT_FALSE(std::filesystem::exists(tier_->ImagePath(c.key)));
  std::string bytes(c.bytes.size(), '\0');
  ASSERT_EQ(pread((*lease)->fd(), bytes.data(), bytes.size(), 0),
            static_cast<ssize_t>(c.bytes.size()));
  EXPECT_TRUE(bytes == c.bytes);
  lease->reset();
  EXPECT_EQ(tier_->Stats().images, 0u);
}

TEST_F(DiskTierTest, NoLeaseForAFileOfHolesOnly) {
  Content c = MakeContent(scope_, 2, 1, kChunk, 1);
  ChunkMap holes = c.map;
  holes.chunks[0].id.reset();
  EXPECT_TRUE(tier_->Complete(c.key, holes));
  EXPECT_CODE(tier_->LeaseImage(c.key, holes), absl::StatusCode::kNotFound);
}

TEST_F(DiskTierTest, RestartsWarm) {
  Content c = MakeContent(scope_, 2, 1, 3 * kChunk - 5, 1);
  StoreAll(c);
  Open();
  TierStats stats = tier_->Stats();
  EXPECT_EQ(stats.images, 1u);
  EXPECT_EQ(stats.used_bytes, c.bytes.size());
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(ReadChunk(c, i), std::string(c.Chunk(i))) << i;
  EXPECT_TRUE(tier_->Complete(c.key, c.map));
  EXPECT_EQ(tier_->Stats().corrupt_chunks, 0u);
  EXPECT_EQ(tier_->Stats().misses, 0u);
}

TEST_F(DiskTierTest, RestartKeepsRecencyOrder) {
  Open(10 * kChunk);
  std::vector<Content> images;
  for (int i = 0; i < 9; ++i) {
    images.push_back(MakeContent(scope_, 10 + i, 1, kChunk, 100 + i));
    StoreAll(images.back());
  }
  ASSERT_NE(ReadChunk(images[0], 0), std::nullopt);
  Open(10 * kChunk);
  Content last = MakeContent(scope_, 30, 1, kChunk, 30);
  StoreAll(last);
  EXPECT_NE(ReadChunk(images[0], 0), std::nullopt);
  EXPECT_EQ(ReadChunk(images[1], 0), std::nullopt);
  EXPECT_EQ(ReadChunk(images[2], 0), std::nullopt);
}

// Flips one byte of the file at `offset`.
void FlipByte(const std::string& path, uint64_t offset) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char b = 0;
  ASSERT_EQ(pread(fd, &b, 1, offset), 1);
  b ^= 0x40;
  ASSERT_EQ(pwrite(fd, &b, 1, offset), 1);
  close(fd);
}

TEST_F(DiskTierTest, CorruptChunkAfterRestartReadsAbsentAndIsStoredAgain) {
  Content c = MakeContent(scope_, 2, 1, 3 * kChunk, 2);
  StoreAll(c);
  const std::string image = tier_->ImagePath(c.key);
  tier_.reset();
  FlipByte(image, kChunk + 777);
  Open();
  EXPECT_EQ(ReadChunk(c, 0), std::string(c.Chunk(0)));
  EXPECT_EQ(ReadChunk(c, 1), std::nullopt);
  EXPECT_EQ(tier_->Stats().corrupt_chunks, 1u);
  EXPECT_EQ(tier_->Stats().used_bytes, 2 * kChunk);
  EXPECT_FALSE(tier_->Complete(c.key, c.map));
  ASSERT_OK(tier_->Store(c.key, c.map, 1, c.Chunk(1)));
  EXPECT_EQ(ReadChunk(c, 1), std::string(c.Chunk(1)));
  EXPECT_TRUE(tier_->Complete(c.key, c.map));
  EXPECT_EQ(tier_->Stats().corrupt_chunks, 1u);
}

TEST_F(DiskTierTest, CompleteChecksUnverifiedChunks) {
  Content c = MakeContent(scope_, 2, 1, 2 * kChunk, 3);
  StoreAll(c);
  const std::string image = tier_->ImagePath(c.key);
  tier_.reset();
  FlipByte(image, 5);
  Open();
  EXPECT_FALSE(tier_->Complete(c.key, c.map));
  EXPECT_EQ(tier_->Stats().corrupt_chunks, 1u);
  EXPECT_FALSE(tier_->Contains(c.key, c.map, 0));
  EXPECT_TRUE(tier_->Contains(c.key, c.map, 1));
}

TEST_F(DiskTierTest, MissingImageAfterRestartIsAbsent) {
  Content c = MakeContent(scope_, 2, 1, 2 * kChunk, 4);
  StoreAll(c);
  const std::string image = tier_->ImagePath(c.key);
  tier_.reset();
  ASSERT_EQ(unlink(image.c_str()), 0);
  Open();
  EXPECT_EQ(ReadChunk(c, 0), std::nullopt);
  EXPECT_EQ(tier_->Stats().used_bytes, 0u);
  StoreAll(c);
  EXPECT_EQ(ReadChunk(c, 1), std::string(c.Chunk(1)));
}

TEST_F(DiskTierTest, TruncatedImageAfterRestartLosesOnlyTheMissingRange) {
  Content c = MakeContent(scope_, 2, 1, 3 * kChunk, 5);
  StoreAll(c);
  const std::string image = tier_->ImagePath(c.key);
  tier_.reset();
  ASSERT_EQ(truncate(image.c_str(), kChunk + 100), 0);
  Open();
  EXPECT_EQ(ReadChunk(c, 0), std::string(c.Chunk(0)));
  EXPECT_EQ(ReadChunk(c, 1), std::nullopt);
  EXPECT_EQ(ReadChunk(c, 2), std::nullopt);
  ASSERT_OK(tier_->Store(c.key, c.map, 2, c.Chunk(2)));
  EXPECT_EQ(ReadChunk(c, 2), std::string(c.Chunk(2)));
}

TEST_F(DiskTierTest, DamagedIndexDropsItsImage) {
  Content c = MakeContent(scope_, 2, 1, kChunk, 6);
  StoreAll(c);
  const std::string image = tier_->ImagePath(c.key);
  const std::string index = image.substr(0, image.size() - 4) + ".idx";
  tier_.reset();
  FlipByte(index, 20);
  Open();
  EXPECT_EQ(ReadChunk(c, 0), std::nullopt);
  EXPECT_EQ(tier_->Stats().images, 0u);
  EXPECT_FALSE(std::filesystem::exists(image));
}

TEST_F(DiskTierTest, ImagesAreSparse) {
  Content c = MakeContent(scope_, 2, 1, 64 * kChunk, 7);  // 4 MiB
  ASSERT_OK(tier_->Store(c.key, c.map, 5, c.Chunk(5)));
  struct stat st;
  ASSERT_EQ(stat(tier_->ImagePath(c.key).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), c.bytes.size());
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 4 * kChunk);
  EXPECT_EQ(ReadChunk(c, 5), std::string(c.Chunk(5)));
}

// Direct writes leave the image's page cache empty: the bytes are not held
// in RAM a second time (the reader's own page cache has them).
TEST_F(DiskTierTest, StoredChunksDoNotFillThePageCache) {
  struct statfs fs;
  ASSERT_EQ(statfs(dir_.path().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "on tmpfs the page cache is the storage";
  Content c = MakeContent(scope_, 2, 1, 16 * kChunk - 1000, 8);  // Short last chunk.
  StoreAll(c);
  const std::string path = tier_->ImagePath(c.key);
  int fd = open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = mmap(nullptr, c.bytes.size(), PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((c.bytes.size() + page - 1) / page);
  ASSERT_EQ(mincore(map, c.bytes.size(), resident.data()), 0);
  size_t in_cache = 0;
  for (unsigned char r : resident) in_cache += r & 1;
  munmap(map, c.bytes.size());
  close(fd);
  // At most the unaligned tail of the last chunk went through the cache.
  EXPECT_LE(in_cache, 1u) << "of " << resident.size() << " pages";
  for (uint64_t i = 0; i < c.map.chunks.size(); ++i) {
    EXPECT_EQ(ReadChunk(c, i), std::string(c.Chunk(i))) << i;
  }
}

TEST_F(DiskTierTest, CapacityZeroIsMostOfTheFilesystem) {
  Open(0);
  EXPECT_GT(tier_->Stats().capacity_bytes, 0u);
}

// A full disk, for real: the tier folder on a 2 MiB tmpfs, with a byte
// capacity far above it so that only ENOSPC makes room.
class DiskTierFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_point_ = dir_.path() + "/small";
    ASSERT_EQ(mkdir(mount_point_.c_str(), 0755), 0) << strerror(errno);
    if (mount("tmpfs", mount_point_.c_str(), "tmpfs", 0, "size=2m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs at " << mount_point_
                   << " (needs root or CAP_SYS_ADMIN): " << strerror(errno);
    }
    mounted_ = true;
    DiskTierOptions options;
    options.dir = mount_point_ + "/tier";
    options.capacity_bytes = 1ull << 30;
    absl::StatusOr<std::unique_ptr<NodeTier>> tier = OpenDiskTier(options);
    ASSERT_OK(tier);
    tier_ = std::move(*tier);
  }

  // Runs even when the test failed or SetUp stopped half way.
  void TearDown() override {
    tier_.reset();
    if (mounted_ && umount(mount_point_.c_str()) != 0) {
      ADD_FAILURE() << "umount " << mount_point_ << ": " << strerror(errno);
      umount2(mount_point_.c_str(), MNT_DETACH);
    }
  }

  TempDir dir_;
  std::string mount_point_;
  bool mounted_ = false;
  std::unique_ptr<NodeTier> tier_;
  const Scope scope_ = S("project:p");
};

TEST_F(DiskTierFullTest, StoreEvictsOlderImagesOnEnospc) {
  std::vector<Content> images;
  for (int i = 0; i < 12; ++i) {  // 12 x 256 KiB = 3 MiB into 2 MiB.
    images.push_back(MakeContent(scope_, 100 + i, 1, 4 * kChunk, 200 + i));
    for (uint64_t c = 0; c < 4; ++c) {
      absl::Status status = tier_->Store(images[i].key, images[i].map, c, images[i].Chunk(c));
      ASSERT_TRUE(status.ok()) << "image " << i << " chunk " << c << ": " << status;
    }
  }
  TierStats stats = tier_->Stats();
  EXPECT_GT(stats.evicted_bytes, 0u);
  EXPECT_LE(stats.used_bytes, 2u << 20);
  const Content& newest = images.back();
  EXPECT_TRUE(tier_->Complete(newest.key, newest.map));
  std::string out(kChunk, 'x');
  absl::StatusOr<bool> hit = tier_->Read(newest.key, newest.map, 3, 0, kChunk, out.data());
  ASSERT_OK(hit);
  EXPECT_TRUE(*hit);
  EXPECT_EQ(out, std::string(newest.Chunk(3)));
  std::string first(kChunk, 'x');
  hit = tier_->Read(images[0].key, images[0].map, 0, 0, kChunk, first.data());
  ASSERT_OK(hit);
  EXPECT_FALSE(*hit);
}

TEST_F(DiskTierFullTest, ResourceExhaustedWhenOneChunkCannotFit) {
  Content small = MakeContent(scope_, 1, 1, kChunk, 1);
  ASSERT_OK(tier_->Store(small.key, small.map, 0, small.Chunk(0)));
  Content huge = MakeContent(scope_, 2, 1, kDefaultChunkSize, 2, kDefaultChunkSize);
  absl::Status status = tier_->Store(huge.key, huge.map, 0, huge.Chunk(0));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_FALSE(tier_->Contains(huge.key, huge.map, 0));
  EXPECT_EQ(tier_->Stats().used_bytes, 0u);  // `small` was evicted trying.
  struct stat st;
  ASSERT_EQ(stat(tier_->ImagePath(huge.key).c_str(), &st), 0);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 64u << 10);  // The partial write is gone.
  // And the tier still works.
  ASSERT_OK(tier_->Store(small.key, small.map, 0, small.Chunk(0)));
  EXPECT_TRUE(tier_->Complete(small.key, small.map));
}

}  // namespace
}  // namespace traincache
