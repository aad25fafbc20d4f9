// Helpers of the metadata store tests: status assertions, temp dirs, and a
// full text dump of a scope (tree, attrs, targets, xattrs, chunk maps, usage,
// orphans, garbage) to check that a failed call changed nothing.
#ifndef TRAINCACHE_TESTS_META_META_TEST_UTIL_H_
#define TRAINCACHE_TESTS_META_META_TEST_UTIL_H_

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "testing/temp_dir.h"
#include "traincache/metadata_store.h"
#include "traincache/status.h"

#define TC_TEST_CONCAT_INNER_(a, b) a##b
#define TC_TEST_CONCAT_(a, b) TC_TEST_CONCAT_INNER_(a, b)

#define ASSERT_OK(expr)                                                      \
  do {                                                                       \
    const ::absl::Status tc_s_ = ::traincache::testing_util::AsStatus(expr); \
    ASSERT_TRUE(tc_s_.ok()) << #expr << ": " << tc_s_;                       \
  } while (0)
#define EXPECT_OK(expr)                                                      \
  do {                                                                       \
    const ::absl::Status tc_s_ = ::traincache::testing_util::AsStatus(expr); \
    EXPECT_TRUE(tc_s_.ok()) << #expr << ": " << tc_s_;                       \
  } while (0)

// ASSERT_OK_AND_ASSIGN(auto x, Foo());
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(TC_TEST_CONCAT_(tc_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)        \
  auto tmp = (expr);                                      \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status(); \
  lhs = std::move(tmp).value()

// The call failed with exactly errno `err` (and the canonical code for it).
#define EXPECT_ERRNO(expr, err)                                                                  \
  do {                                                                                           \
    const ::absl::Status tc_s_ = ::traincache::testing_util::AsStatus(expr);                     \
    EXPECT_FALSE(tc_s_.ok()) << #expr;                                                           \
    EXPECT_EQ(::traincache::ErrnoOf(tc_s_), std::optional<int>(err)) << #expr << ": " << tc_s_;  \
    EXPECT_EQ(tc_s_.code(), ::traincache::PosixError(err, "").code()) << #expr << ": " << tc_s_; \
  } while (0)

namespace traincache::testing_util {

inline absl::Status AsStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status AsStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

using ::traincache::testing::TempDir;

inline SetAttrRequest WithSize(uint64_t size) {
  SetAttrRequest r;
  r.size = size;
  return r;
}
inline SetAttrRequest WithMode(uint32_t mode) {
  SetAttrRequest r;
  r.mode = mode;
  return r;
}
inline SetAttrRequest WithUid(uint32_t uid) {
  SetAttrRequest r;
  r.uid = uid;
  return r;
}

inline std::string TimeText(Timespec t) { return fmt::format("{}.{:09}", t.sec, t.nsec); }

inline std::string AttrText(const InodeAttr& a) {
  return fmt::format("ino={} mode={:o} uid={} gid={} nlink={} size={} rdev={} a={} m={} c={} v={}",
                     a.ino, a.mode, a.uid, a.gid, a.nlink, a.size, a.rdev, TimeText(a.atime),
                     TimeText(a.mtime), TimeText(a.ctime), a.version);
}

// Everything of `scope` a client can observe, as text. Failures go into the
// text, so two dumps differ if either hit an error.
inline void DumpInode(MetadataStore& store, const Scope& scope, InodeId ino,
                      const std::string& path, std::string* out) {
  absl::StatusOr<InodeAttr> attr = store.GetAttr(scope, ino);
  if (!attr.ok()) {
    *out += fmt::format("{}: getattr {}\n", path, attr.status().ToString());
    return;
  }
  *out += fmt::format("{}: {}\n", path, AttrText(*attr));
  absl::StatusOr<std::vector<std::string>> xattrs = store.ListXattr(scope, ino);
  if (xattrs.ok()) {
    for (const std::string& x : *xattrs) {
      absl::StatusOr<std::string> v = store.GetXattr(scope, ino, x);
      *out += fmt::format("  xattr {}={}\n", x, v.ok() ? *v : v.status().ToString());
    }
  } else {
    *out += fmt::format("  listxattr {}\n", xattrs.status().ToString());
  }
  if (attr->is_symlink()) {
    absl::StatusOr<std::string> t = store.ReadLink(scope, ino);
    *out += fmt::format("  -> {}\n", t.ok() ? *t : t.status().ToString());
  }
  if (attr->is_reg()) {
    absl::StatusOr<ChunkMap> map = store.GetChunkMap(scope, ino);
    if (!map.ok()) {
      *out += fmt::format("  chunkmap {}\n", map.status().ToString());
    } else {
      *out += fmt::format("  map v={} size={} cs={}:", map->version, map->size, map->chunk_size);
      for (const ChunkRef& c : map->chunks) {
        *out += fmt::format(" {}/{}", c.id ? c.id->ToHex().substr(0, 8) : "hole", c.length);
      }
      *out += "\n";
    }
  }
  if (attr->is_dir()) {
    std::string after;
    while (true) {
      absl::StatusOr<ReadDirPage> page = store.ReadDir(scope, ino, after, 100, true);
      if (!page.ok()) {
        *out += fmt::format("  readdir {}\n", page.status().ToString());
        break;
      }
      for (const DirEntry& e : page->entries) {
        DumpInode(store, scope, e.ino, path + "/" + e.name, out);
        after = e.name;
      }
      if (!page->more) break;
    }
  }
}

inline std::string Dump(MetadataStore& store, const Scope& scope) {
  std::string out;
  absl::StatusOr<ScopeUsage> usage = store.GetUsage(scope);
  if (usage.ok()) {
    out += fmt::format("usage bytes={} inodes={} quota={}\n", usage->bytes, usage->inodes,
                       usage->quota_bytes);
  } else {
    out += fmt::format("usage {}\n", usage.status().ToString());
  }
  DumpInode(store, scope, kRootInode, "", &out);
  absl::StatusOr<std::vector<InodeId>> orphans = store.ListOrphans(scope);
  if (orphans.ok()) {
    for (InodeId o : *orphans) DumpInode(store, scope, o, fmt::format("orphan {}", o), &out);
  }
  absl::StatusOr<std::vector<ChunkId>> garbage = store.ListGarbage(scope, 0);
  if (garbage.ok()) {
    for (const ChunkId& g : *garbage) out += fmt::format("garbage {}\n", g.ToHex());
  }
  return out;
}

}  // namespace traincache::testing_util

#endif  // TRAINCACHE_TESTS_META_META_TEST_UTIL_H_
