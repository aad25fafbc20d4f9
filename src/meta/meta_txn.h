// MetaTxn: one mutation of one scope being built — reads the scope's current
// state, collects the changes, and turns them into the one KvBatch that
// commits them (kv_metadata_store.cc calls Finish and writes it).
//
// It keeps the touched inode records in memory so a mutation that changes
// one inode several times (a rename within one directory, whose source and
// target parent are the same inode) edits one copy and bumps its version
// once. Chunk reference changes are summed per chunk and applied at Finish,
// so replacing a content that shares chunks with the old one never sends a
// shared chunk through 0 to the garbage list.
//
// Reads through Get/GetDentry/GetChunkMap see this transaction's own earlier
// Put/Delete; scans (DirIsEmpty, xattr deletion) see only the state before it.
//
// Not thread-safe: one mutation, one thread, under the scope's mutex (which
// is what keeps the scope's keys still between the reads and the write).
#ifndef TRAINCACHE_META_META_TXN_H_
#define TRAINCACHE_META_META_TXN_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "meta/key_codec.h"
#include "meta/kv_backend.h"
#include "traincache/metadata_store.h"
#include "traincache/types.h"

namespace traincache::meta {

// --- read helpers over any view (snapshots of read-only operations too) ---

absl::StatusOr<std::optional<ScopeMeta>> ReadScopeMeta(KvView& view, const ScopeKeys& keys);
absl::StatusOr<std::optional<InodeRecord>> ReadInode(KvView& view, const ScopeKeys& keys,
                                                     InodeId ino);
absl::StatusOr<std::optional<DentryValue>> ReadDentry(KvView& view, const ScopeKeys& keys,
                                                      InodeId parent, std::string_view name);
// An absent map is the empty content.
absl::StatusOr<StoredChunkMap> ReadChunkMap(KvView& view, const ScopeKeys& keys, InodeId ino);

// ScopeUsage::bytes of one content: the sum of its non-hole chunk lengths.
uint64_t ContentBytes(const StoredChunkMap& map);

class MetaTxn {
 public:
  MetaTxn(KvView& view, const ScopeKeys& keys, const ScopeMeta& meta);

  const ScopeKeys& keys() const { return keys_; }
  KvView& view() { return view_; }
  // The scope meta as this transaction leaves it (usage, next inode, quota).
  ScopeMeta& meta() { return meta_; }
  // The one timestamp of this mutation.
  Timespec now() const { return now_; }
  // The first change of the scope by this process: a new epoch, and inode
  // numbers from the reserved limit on (ScopeMeta). The caller makes this
  // transaction durable before it returns.
  void StartEpoch();
  // This transaction reserved inode numbers or started an epoch: it must be
  // durable before its answer is given, whatever the store's MetadataSync.
  bool must_sync() const { return must_sync_; }
  // The version after `version`: one more, and at least this epoch's first.
  uint64_t NextVersion(uint64_t version) const;

  // --- raw keys (never inode keys: those go through the inode methods) ---
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key);
  void Put(std::string key, std::string value);
  void Delete(std::string key);

  // --- inodes: the returned pointers stay valid for the transaction ---
  // nullptr if the inode does not exist (or was freed by this transaction).
  absl::StatusOr<InodeRecord*> FindInode(InodeId ino);
  // ENOENT if absent.
  absl::StatusOr<InodeRecord*> GetInode(InodeId ino);
  // ENOENT if absent, ENOTDIR if not a directory.
  absl::StatusOr<InodeRecord*> GetDir(InodeId ino);
  // The inode an entry names; DATA_LOSS if it is missing (dangling entry).
  absl::StatusOr<InodeRecord*> GetChild(const DentryValue& d);
  // A fresh inode numbered from the scope's counter: version 1, all times
  // now, owned by `caller`. Counts one more inode in the usage.
  InodeRecord* NewInode(uint32_t mode, const Caller& caller, uint32_t nlink);
  // Records a change of `rec`: ctime (and mtime if `modified`) = now, and the
  // version one up — once per transaction, however often it is touched.
  void Touch(InodeRecord* rec, bool modified);
  // Drops one link of a non-directory; at 0 a regular file goes to the
  // orphan list (content kept), anything else is freed at once.
  absl::StatusOr<UnlinkResult> DropLink(InodeRecord* rec);
  // Removes inode `ino` and everything hanging off it: symlink target,
  // xattrs, chunk map (dropping its chunk references and usage bytes),
  // orphan list entry. Counts one inode less in the usage.
  absl::Status FreeInode(InodeId ino);

  // --- directory entries ---
  absl::StatusOr<std::optional<DentryValue>> GetDentry(InodeId parent, std::string_view name);
  void PutDentry(InodeId parent, std::string_view name, const DentryValue& d);
  void DeleteDentry(InodeId parent, std::string_view name);
  absl::StatusOr<bool> DirIsEmpty(InodeId dir);

  // --- content ---
  absl::StatusOr<StoredChunkMap> GetChunkMap(InodeId ino);
  // Stores `map` as the content of `ino` (deletes the key for an empty one).
  // Reference counts are not touched: see AddRefs.
  void PutChunkMap(InodeId ino, const StoredChunkMap& map);
  // Adds `delta` references to every non-hole chunk of `map`.
  void AddRefs(const StoredChunkMap& map, int64_t delta);
  // usage.bytes moves from `old_bytes` to `new_bytes` (bytes of one content).
  void AccountBytes(uint64_t old_bytes, uint64_t new_bytes);

  // The batch that commits everything: entries, inode records, reference
  // counts with their garbage list changes, and the scope meta if changed.
  // Empty if nothing changed. DATA_LOSS if a reference count would go
  // negative (the store is inconsistent).
  absl::StatusOr<KvBatch> Finish();

 private:
  struct CachedInode {
    InodeRecord rec;
    bool dirty = false;
    bool bumped = false;  // Version already raised by this transaction.
    bool deleted = false;
  };

  KvView& view_;
  const ScopeKeys& keys_;
  const ScopeMeta original_meta_;
  ScopeMeta meta_;
  bool must_sync_ = false;
  const Timespec now_;
  std::map<std::string, std::optional<std::string>> pending_;  // nullopt: delete.
  std::map<InodeId, CachedInode> inodes_;
  std::map<ChunkId, int64_t> ref_deltas_;
};

}  // namespace traincache::meta

#endif  // TRAINCACHE_META_META_TXN_H_
