#include "meta/key_codec.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <limits>
#include <random>
#include <string>
#include <vector>

namespace traincache::meta {
namespace {

Scope S(std::string_view text) { return *Scope::Parse(text); }

TEST(KeyCodecTest, ScopePrefixLayout) {
  EXPECT_EQ(ScopePrefix(S("project:alpha")), std::string("project:alpha\0", 14));
  EXPECT_EQ(ScopePrefix(S("team:x")), std::string("team:x\0", 7));
  ScopeKeys keys(S("project:alpha"));
  EXPECT_EQ(keys.prefix(), ScopePrefix(S("project:alpha")));
  EXPECT_EQ(keys.End(), "project:alpha\x01");
  EXPECT_EQ(keys.Meta(), std::string("project:alpha\0M", 15));
  EXPECT_EQ(keys.Inode(0x0102), std::string("project:alpha\0I\0\0\0\0\0\0\x01\x02", 23));
  EXPECT_EQ(keys.Dentry(1, "name"), std::string("project:alpha\0D\0\0\0\0\0\0\0\x01name", 27));
  EXPECT_EQ(keys.Dentry(1, ""), keys.DentryPrefix(1));
  EXPECT_EQ(keys.Xattr(1, ""), keys.XattrPrefix(1));
}

TEST(KeyCodecTest, EveryKeyIsInsideItsScopeRangeOnly) {
  ChunkId id = ChunkId::Of("x");
  for (const char* text : {"project:a", "project:a.b", "project:a-", "team:a", "project:b"}) {
    ScopeKeys keys(S(text));
    for (const std::string& k : {keys.Meta(), keys.Inode(~0ull), keys.Dentry(~0ull, "\xff\xff"),
                                 keys.Symlink(7), keys.Xattr(3, "user.x"), keys.ChunkMap(2),
                                 keys.RefCount(id), keys.Garbage(id), keys.Orphan(9)}) {
      EXPECT_EQ(k.compare(0, keys.prefix().size(), keys.prefix()), 0);
      EXPECT_GE(k, keys.prefix());
      EXPECT_LT(k, keys.End());
      absl::StatusOr<std::string_view> text_of = ScopeTextOfKey(k);
      ASSERT_TRUE(text_of.ok());
      EXPECT_EQ(*text_of, text);
    }
  }
  // Ranges of scopes whose names share a text prefix do not overlap.
  ScopeKeys a(S("project:a")), ab(S("project:a.b"));
  EXPECT_LT(a.End(), ab.prefix());
}

TEST(KeyCodecTest, InodeKeysSortNumerically) {
  ScopeKeys keys(S("project:a"));
  std::vector<InodeId> inos = {0, 1, 2, 255, 256, 65535, 65536, 1ull << 40, ~0ull};
  for (size_t i = 1; i < inos.size(); ++i) {
    EXPECT_LT(keys.Inode(inos[i - 1]), keys.Inode(inos[i]));
    EXPECT_LT(keys.Orphan(inos[i - 1]), keys.Orphan(inos[i]));
    // All entries of a directory sort before the next directory's.
    EXPECT_LT(keys.Dentry(inos[i - 1], std::string(255, '\xff')), keys.DentryPrefix(inos[i]));
  }
  for (InodeId ino : inos) {
    absl::StatusOr<InodeId> parsed = ParseInoKey(keys.Orphan(ino), keys.OrphanPrefix());
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, ino);
    parsed = ParseInoKey(keys.Inode(ino), keys.InodePrefix());
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, ino);
    absl::StatusOr<DentryKey> entry = ParseDentryKey(keys.Dentry(ino, "n\xff/"), keys.DentriesPrefix());
    ASSERT_TRUE(entry.ok()) << entry.status();
    EXPECT_EQ(entry->parent, ino);
    EXPECT_EQ(entry->name, "n\xff/");
  }
  // Every entry key lies in the all-entries range; inode keys do not.
  EXPECT_TRUE(keys.Dentry(~0ull, "z").starts_with(keys.DentriesPrefix()));
  EXPECT_FALSE(keys.Inode(1).starts_with(keys.DentriesPrefix()));
  // Names sort bytewise, unsigned.
  EXPECT_LT(keys.Dentry(5, "a"), keys.Dentry(5, "b"));
  EXPECT_LT(keys.Dentry(5, "z"), keys.Dentry(5, "\x80"));
}

TEST(KeyCodecTest, KeyParsersRejectWrongShapes) {
  ScopeKeys keys(S("project:a"));
  EXPECT_EQ(ParseInoKey(keys.Orphan(1) + "x", keys.OrphanPrefix()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseInoKey(keys.Orphan(1).substr(0, 15), keys.OrphanPrefix()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseInoKey(keys.Inode(1), keys.OrphanPrefix()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseDentryKey(keys.DentryPrefix(1), keys.DentriesPrefix()).status().code(),
            absl::StatusCode::kDataLoss);  // No name.
  EXPECT_EQ(ParseDentryKey(keys.Inode(1) + "x", keys.DentriesPrefix()).status().code(),
            absl::StatusCode::kDataLoss);
  ChunkId id = ChunkId::Of("x");
  absl::StatusOr<ChunkId> parsed = ParseChunkIdKey(keys.Garbage(id), keys.GarbagePrefix());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, id);
  EXPECT_EQ(ParseChunkIdKey(keys.Garbage(id) + "x", keys.GarbagePrefix()).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ScopeTextOfKey("no-nul").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(KeySuffix("ab", "abc").status().code(), absl::StatusCode::kDataLoss);
}

TEST(KeyCodecTest, RequestRecordsRoundTripAndExpiryKeysSortByTime) {
  InodeAttr attr;
  attr.ino = 12;
  attr.mode = S_IFREG | 0644;
  attr.nlink = 1;
  attr.mtime = Timespec{1795000000, 5};
  attr.version = 3;
  const Timespec t{1795000000, 123};
  for (const RequestRecord& rec : std::vector<RequestRecord>{
           {t, std::monostate{}},
           {t, attr},
           {t, CreateResult{attr, true, attr}},
           {t, CreateResult{attr, false, std::nullopt}},
           {t, UnlinkResult{12, 0, true}}}) {
    absl::StatusOr<RequestRecord> back = DecodeRequestRecord(EncodeRequestRecord(rec));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, rec);
    std::string bytes = EncodeRequestRecord(rec);
    EXPECT_FALSE(DecodeRequestRecord(bytes.substr(0, bytes.size() - 1)).ok());
    EXPECT_FALSE(DecodeRequestRecord(bytes + "x").ok());
  }
  ScopeKeys keys(*Scope::Parse("project:a"));
  RequestId id{"node:1:ab", 7};
  std::string early = keys.RequestExpiry(100, RequestId{"zzz", 99});
  std::string late = keys.RequestExpiry(101, RequestId{"a", 1});
  EXPECT_LT(early, late);  // Time first: the expired records are the front.
  absl::StatusOr<RequestExpiryKey> k =
      ParseRequestExpiryKey(keys.RequestExpiry(100, id), keys.RequestExpiryPrefix());
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(k->sec, 100);
  EXPECT_EQ(k->id.client, id.client);
  EXPECT_EQ(k->id.seq, id.seq);
  EXPECT_FALSE(ParseRequestExpiryKey(keys.RequestExpiryPrefix() + std::string(16, '\0'),
                                     keys.RequestExpiryPrefix())
                   .ok());
}

TEST(KeyCodecTest, PrefixEnd) {
  EXPECT_EQ(PrefixEnd("abc"), "abd");
  EXPECT_EQ(PrefixEnd(std::string("a\xff\xff", 3)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff\xff", 2)), "");
  EXPECT_EQ(PrefixEnd(""), "");
  EXPECT_EQ(PrefixEnd(std::string("x\0", 2)), "x\x01");
}

// --- values ---

InodeRecord SampleInode(uint32_t type) {
  InodeRecord r;
  r.attr.ino = 42;
  r.attr.mode = type | 04755;
  r.attr.uid = std::numeric_limits<uint32_t>::max();
  r.attr.gid = 7;
  r.attr.nlink = 3;
  r.attr.size = std::numeric_limits<uint64_t>::max();
  r.attr.rdev = 0;
  r.attr.atime = {-5, 999'999'999};
  r.attr.mtime = {std::numeric_limits<int64_t>::min(), 0};
  r.attr.ctime = {std::numeric_limits<int64_t>::max(), 1};
  r.attr.version = 1ull << 63;
  r.parent = type == S_IFDIR ? 9 : 0;
  return r;
}

StoredChunkMap SampleMap() {
  StoredChunkMap m;
  m.chunk_size = kMinChunkSize;
  m.size = 3 * uint64_t{kMinChunkSize} + 10;
  m.chunks = {{{ChunkId::Of("a"), kMinChunkSize}, false},
              {{std::nullopt, kMinChunkSize}, false},
              {{ChunkId::Of("b"), kMinChunkSize}, false},
              {{ChunkId::Of("c"), 10}, true}};
  return m;
}

TEST(KeyCodecTest, ValuesRoundTrip) {
  ScopeMeta meta{~0ull, 1234, 1ull << 40, 5, 6, 5000, 7};
  EXPECT_EQ(*DecodeScopeMeta(EncodeScopeMeta(meta)), meta);
  for (uint32_t type : {S_IFREG, S_IFDIR, S_IFLNK}) {
    InodeRecord r = SampleInode(type);
    absl::StatusOr<InodeRecord> back = DecodeInode(42, EncodeInode(r));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, r);
  }
  DentryValue d{~0ull, S_IFDIR};
  EXPECT_EQ(*DecodeDentry(EncodeDentry(d)), d);
  StoredChunkMap m = SampleMap();
  EXPECT_EQ(*DecodeChunkMap(EncodeChunkMap(m)), m);
  EXPECT_EQ(*DecodeChunkMap(EncodeChunkMap(StoredChunkMap{})), StoredChunkMap{});
  EXPECT_EQ(*DecodeRefCount(EncodeRefCount(1)), 1u);
  EXPECT_EQ(*DecodeRefCount(EncodeRefCount(~0ull)), ~0ull);
  Timespec t{-1, 5};
  EXPECT_EQ(*DecodeTimespec(EncodeTimespec(t)), t);
}

TEST(KeyCodecTest, InodeValueIsCompact) {
  InodeRecord r;
  r.attr.mode = S_IFREG | 0644;
  r.attr.nlink = 1;
  r.attr.atime = r.attr.mtime = r.attr.ctime = {1700000000, 123456789};
  r.attr.version = 3;
  EXPECT_LE(EncodeInode(r).size(), 40u);
}

// Every proper prefix of a good encoding, and the encoding plus a byte, must
// fail as DATA_LOSS.
template <typename Decode>
void ExpectTruncationsFail(const std::string& good, Decode decode) {
  ASSERT_TRUE(decode(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(decode(good.substr(0, n)).status().code(), absl::StatusCode::kDataLoss) << n;
  }
  EXPECT_EQ(decode(good + "x").status().code(), absl::StatusCode::kDataLoss);
}

// A scope meta written before ino_limit and epoch existed ends after
// used_inodes: it reads with both 0.
TEST(KeyCodecTest, ScopeMetaOfTheEarlierFormatReads) {
  const std::string now = EncodeScopeMeta(ScopeMeta{1, 2, 3, 4, 5, 200, 300});
  const std::string earlier = EncodeScopeMeta(ScopeMeta{1, 2, 3, 4, 5});
  const size_t earlier_size = earlier.size() - 2;  // ino_limit 0 and epoch 0: a byte each.
  absl::StatusOr<ScopeMeta> m = DecodeScopeMeta(earlier.substr(0, earlier_size));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, (ScopeMeta{1, 2, 3, 4, 5}));
  // Every other cut of the current format is DATA_LOSS.
  for (size_t n = 0; n < now.size(); ++n) {
    if (n == earlier_size) continue;
    EXPECT_EQ(DecodeScopeMeta(now.substr(0, n)).status().code(), absl::StatusCode::kDataLoss) << n;
  }
  EXPECT_EQ(DecodeScopeMeta(now + "x").status().code(), absl::StatusCode::kDataLoss);
}

TEST(KeyCodecTest, TruncatedOrTrailingInputFails) {
  for (uint32_t type : {S_IFREG, S_IFDIR}) {
    ExpectTruncationsFail(EncodeInode(SampleInode(type)),
                          [](std::string_view v) { return DecodeInode(42, v); });
  }
  ExpectTruncationsFail(EncodeDentry(DentryValue{5, S_IFREG}), DecodeDentry);
  ExpectTruncationsFail(EncodeChunkMap(SampleMap()), DecodeChunkMap);
  ExpectTruncationsFail(EncodeRefCount(300), DecodeRefCount);
  ExpectTruncationsFail(EncodeTimespec(Timespec{100, 5}), DecodeTimespec);
}

TEST(KeyCodecTest, GarbageValuesFail) {
  auto code = [](absl::Status s) { return s.code(); };
  const auto kLoss = absl::StatusCode::kDataLoss;
  // Unknown format byte.
  std::string meta = EncodeScopeMeta(ScopeMeta{});
  meta[0] = 2;
  EXPECT_EQ(code(DecodeScopeMeta(meta).status()), kLoss);
  // next_ino must be past the root.
  EXPECT_EQ(code(DecodeScopeMeta(EncodeScopeMeta(ScopeMeta{1, 1, 0, 0, 0})).status()), kLoss);
  // Varint longer than 10 bytes / over 64 bits.
  EXPECT_EQ(code(DecodeRefCount(std::string(11, '\xff')).status()), kLoss);
  EXPECT_EQ(code(DecodeRefCount(std::string(9, '\xff') + "\x02").status()), kLoss);
  EXPECT_EQ(code(DecodeRefCount(std::string(9, '\xff') + "\x01").status()), absl::StatusCode::kOk);
  EXPECT_EQ(code(DecodeRefCount(EncodeRefCount(0)).status()), kLoss);  // Never stored.
  // nsec out of range.
  EXPECT_EQ(code(DecodeTimespec(std::string("\x02\x80\x94\xeb\xdc\x03", 6)).status()), kLoss);
  // Bad inode modes and parent pointers.
  InodeRecord r = SampleInode(S_IFREG);
  r.attr.mode = 0644;  // No type.
  EXPECT_EQ(code(DecodeInode(1, EncodeInode(r)).status()), kLoss);
  r.attr.mode = S_IFREG | 0644 | 0100000000;
  EXPECT_EQ(code(DecodeInode(1, EncodeInode(r)).status()), kLoss);
  r = SampleInode(S_IFDIR);
  r.parent = 0;
  EXPECT_EQ(code(DecodeInode(1, EncodeInode(r)).status()), kLoss);
  r = SampleInode(S_IFREG);
  r.parent = 3;
  EXPECT_EQ(code(DecodeInode(1, EncodeInode(r)).status()), kLoss);
  // uid over 32 bits.
  std::string big_uid = std::string("\x01\xa4\x83\x02", 4) + std::string("\x80\x80\x80\x80\x10", 5);
  EXPECT_EQ(code(DecodeInode(1, big_uid).status()), kLoss);
  // Dentry with ino 0 or no valid type.
  EXPECT_EQ(code(DecodeDentry(EncodeDentry(DentryValue{0, S_IFREG})).status()), kLoss);
  EXPECT_EQ(code(DecodeDentry(EncodeDentry(DentryValue{1, 0})).status()), kLoss);
  // Chunk maps breaking their shape, or claiming more chunks than bytes.
  StoredChunkMap m = SampleMap();
  m.size += 1;
  EXPECT_EQ(code(DecodeChunkMap(EncodeChunkMap(m)).status()), kLoss);
  m = SampleMap();
  m.chunk_size = 1000;
  EXPECT_EQ(code(DecodeChunkMap(EncodeChunkMap(m)).status()), kLoss);
  m = SampleMap();
  m.chunks[1].truncated = true;  // A truncated hole.
  EXPECT_EQ(code(DecodeChunkMap(EncodeChunkMap(m)).status()), kLoss);
  std::string huge_count = std::string("\x01\x80\x80\x04\x00", 5) + "\xff\xff\xff\xff\x0f";
  EXPECT_EQ(code(DecodeChunkMap(huge_count).status()), kLoss);
  // Size near 2^64: the shape check's arithmetic would overflow.
  std::string huge_size =
      std::string("\x01\x80\x80\x04", 4) + std::string(9, '\xff') + "\x01" + "\x00";
  EXPECT_EQ(code(DecodeChunkMap(huge_size).status()), kLoss);
  std::string bad_flags = EncodeChunkMap(SampleMap());
  ASSERT_EQ(bad_flags[7], 4);  // Format, chunk_size (3), size (3), count.
  ASSERT_EQ(bad_flags[8], 1);  // The first chunk's flags: has an id.
  bad_flags[8] = 4;
  EXPECT_EQ(code(DecodeChunkMap(bad_flags).status()), kLoss);
}

// A poor man's fuzzer until the real one: random and mutated inputs must
// decode or fail cleanly (run under ASan/UBSan to catch the rest).
TEST(KeyCodecTest, RandomInputNeverCrashes) {
  std::mt19937_64 rng(12345);
  std::vector<std::string> seeds = {EncodeScopeMeta(ScopeMeta{1, 2, 3, 4, 5}),
                                    EncodeInode(SampleInode(S_IFDIR)),
                                    EncodeDentry(DentryValue{5, S_IFREG}),
                                    EncodeChunkMap(SampleMap()),
                                    EncodeRefCount(300),
                                    EncodeTimespec(Timespec{100, 5})};
  int ok = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string in;
    if (i % 2) {
      in = seeds[rng() % seeds.size()];
      int flips = 1 + rng() % 4;
      for (int f = 0; f < flips && !in.empty(); ++f)
        in[rng() % in.size()] = static_cast<char>(rng());
      if (rng() % 4 == 0) in.resize(rng() % (in.size() + 1));
    } else {
      in.resize(rng() % 64);
      for (char& c : in) c = static_cast<char>(rng());
    }
    ok += DecodeScopeMeta(in).ok();
    ok += DecodeInode(1, in).ok();
    ok += DecodeDentry(in).ok();
    ok += DecodeChunkMap(in).ok();
    ok += DecodeRefCount(in).ok();
    ok += DecodeTimespec(in).ok();
    ok += ParseInoKey(in, "").ok();
    ok += ParseChunkIdKey(in, "").ok();
    ok += ScopeTextOfKey(in).ok();
  }
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace traincache::meta
