// What a deleted scope may not leave behind on a server's disk: RocksDB
// keys under its prefix and chunk files in its folder. Opens the metadata
// read-only, so the server must be stopped (or the DB otherwise unlocked).
#ifndef TRAINCACHE_TESTS_INTEGRATION_LEFTOVERS_H_
#define TRAINCACHE_TESTS_INTEGRATION_LEFTOVERS_H_

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <filesystem>
#include <memory>
#include <string>

#include "meta/key_codec.h"
#include "traincache/scope.h"

namespace traincache::testing {

// Counts the RocksDB keys of a scope and the chunk files of a scope on disk.
struct Leftovers {
  size_t keys = 0;
  size_t chunk_files = 0;
};

inline Leftovers LeftoversOf(const std::string& data_dir, const Scope& scope) {
  Leftovers out;
  rocksdb::DB* raw = nullptr;
  rocksdb::Options options;
  rocksdb::Status s = rocksdb::DB::OpenForReadOnly(options, data_dir + "/meta", &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok()) return out;
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string prefix = meta::ScopePrefix(scope);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++out.keys;
  std::string chunk_dir = fmt::format("{}/chunks/{}/{}", data_dir, scope.kind_name(), scope.id());
  std::error_code ec;
  if (std::filesystem::exists(chunk_dir)) {
    for (auto& e : std::filesystem::recursive_directory_iterator(chunk_dir, ec)) {
      if (e.is_regular_file()) ++out.chunk_files;
    }
  }
  return out;
}

// Regular files under `dir` (0 if it does not exist).
inline size_t FilesUnder(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) return 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file()) ++n;
  }
  return n;
}

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_INTEGRATION_LEFTOVERS_H_
