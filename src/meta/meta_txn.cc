#include "meta/meta_txn.h"

#include <fmt/format.h>

#include <cerrno>
#include <limits>
#include <vector>

#include "traincache/status.h"

namespace traincache::meta {

absl::StatusOr<std::optional<ScopeMeta>> ReadScopeMeta(KvView& view, const ScopeKeys& keys) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, view.Get(keys.Meta()));
  if (!raw) return std::optional<ScopeMeta>();
  ASSIGN_OR_RETURN(ScopeMeta meta, DecodeScopeMeta(*raw));
  return std::optional<ScopeMeta>(meta);
}

absl::StatusOr<std::optional<InodeRecord>> ReadInode(KvView& view, const ScopeKeys& keys,
                                                     InodeId ino) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, view.Get(keys.Inode(ino)));
  if (!raw) return std::optional<InodeRecord>();
  ASSIGN_OR_RETURN(InodeRecord rec, DecodeInode(ino, *raw));
  return std::optional<InodeRecord>(std::move(rec));
}

absl::StatusOr<std::optional<DentryValue>> ReadDentry(KvView& view, const ScopeKeys& keys,
                                                      InodeId parent, std::string_view name) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, view.Get(keys.Dentry(parent, name)));
  if (!raw) return std::optional<DentryValue>();
  ASSIGN_OR_RETURN(DentryValue d, DecodeDentry(*raw));
  return std::optional<DentryValue>(d);
}

absl::StatusOr<StoredChunkMap> ReadChunkMap(KvView& view, const ScopeKeys& keys, InodeId ino) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, view.Get(keys.ChunkMap(ino)));
  if (!raw) return StoredChunkMap{};
  return DecodeChunkMap(*raw);
}

uint64_t ContentBytes(const StoredChunkMap& map) {
  uint64_t bytes = 0;
  for (const StoredChunk& c : map.chunks) {
    if (c.ref.id) bytes += c.ref.length;
  }
  return bytes;
}

MetaTxn::MetaTxn(KvView& view, const ScopeKeys& keys, const ScopeMeta& meta)
    : view_(view), keys_(keys), original_meta_(meta), meta_(meta), now_(Now()) {}

absl::StatusOr<std::optional<std::string>> MetaTxn::Get(const std::string& key) {
  auto it = pending_.find(key);
  if (it != pending_.end()) return it->second;
  return view_.Get(key);
}

void MetaTxn::Put(std::string key, std::string value) {
  pending_[std::move(key)] = std::move(value);
}

void MetaTxn::Delete(std::string key) { pending_[std::move(key)] = std::nullopt; }

absl::StatusOr<InodeRecord*> MetaTxn::FindInode(InodeId ino) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) {
    ASSIGN_OR_RETURN(std::optional<InodeRecord> rec, ReadInode(view_, keys_, ino));
    if (!rec) return nullptr;
    it = inodes_.emplace(ino, CachedInode{std::move(*rec)}).first;
  }
  if (it->second.deleted) return nullptr;
  return &it->second.rec;
}

absl::StatusOr<InodeRecord*> MetaTxn::GetInode(InodeId ino) {
  ASSIGN_OR_RETURN(InodeRecord * rec, FindInode(ino));
  if (rec == nullptr) return PosixError(ENOENT, fmt::format("inode {} does not exist", ino));
  return rec;
}

absl::StatusOr<InodeRecord*> MetaTxn::GetDir(InodeId ino) {
  ASSIGN_OR_RETURN(InodeRecord * rec, GetInode(ino));
  if (!rec->attr.is_dir()) {
    return PosixError(ENOTDIR, fmt::format("inode {} is not a directory", ino));
  }
  return rec;
}

absl::StatusOr<InodeRecord*> MetaTxn::GetChild(const DentryValue& d) {
  ASSIGN_OR_RETURN(InodeRecord * rec, FindInode(d.ino));
  if (rec == nullptr || (rec->attr.mode & S_IFMT) != d.type) {
    return absl::DataLossError(
        fmt::format("entry names inode {} which is missing or of another type", d.ino));
  }
  return rec;
}

namespace {
// Inode numbers reserved by one durable write (ScopeMeta::ino_limit); a
// restart skips what is left of the block.
constexpr InodeId kInodeReserve = 4096;
}  // namespace

void MetaTxn::StartEpoch() {
  ++meta_.epoch;
  meta_.next_ino = std::max(meta_.next_ino, meta_.ino_limit);
  must_sync_ = true;
}

uint64_t MetaTxn::NextVersion(uint64_t version) const {
  return std::max(version + 1, meta_.epoch << kEpochShift);
}

InodeRecord* MetaTxn::NewInode(uint32_t mode, const Caller& caller, uint32_t nlink) {
  if (meta_.next_ino >= meta_.ino_limit) {
    meta_.ino_limit = meta_.next_ino + kInodeReserve;
    must_sync_ = true;
  }
  InodeId ino = meta_.next_ino++;
  CachedInode& c = inodes_[ino];
  c.rec = InodeRecord{};
  c.rec.attr.ino = ino;
  c.rec.attr.mode = mode;
  c.rec.attr.uid = caller.uid;
  c.rec.attr.gid = caller.gid;
  c.rec.attr.nlink = nlink;
  c.rec.attr.atime = c.rec.attr.mtime = c.rec.attr.ctime = now_;
  c.rec.attr.version = NextVersion(0);
  c.dirty = true;
  c.bumped = true;
  ++meta_.used_inodes;
  return &c.rec;
}

void MetaTxn::Touch(InodeRecord* rec, bool modified) {
  CachedInode& c = inodes_.at(rec->attr.ino);
  c.dirty = true;
  if (!c.bumped) {
    c.rec.attr.version = NextVersion(c.rec.attr.version);
    c.bumped = true;
  }
  c.rec.attr.ctime = now_;
  if (modified) c.rec.attr.mtime = now_;
}

absl::StatusOr<UnlinkResult> MetaTxn::DropLink(InodeRecord* rec) {
  if (rec->attr.nlink == 0) {
    return absl::DataLossError(fmt::format("inode {} has a name but nlink 0", rec->attr.ino));
  }
  --rec->attr.nlink;
  Touch(rec, false);
  UnlinkResult result{rec->attr.ino, rec->attr.nlink, false};
  if (rec->attr.nlink == 0) {
    if (rec->attr.is_reg()) {
      // Kept, content and all, until the last open handle goes (ReleaseInode)
      // or the sweep (PurgeOrphans) — see metadata_store.h.
      Put(keys_.Orphan(rec->attr.ino), EncodeTimespec(now_));
      result.orphaned = true;
    } else {
      RETURN_IF_ERROR(FreeInode(rec->attr.ino));
    }
  }
  return result;
}

absl::Status MetaTxn::FreeInode(InodeId ino) {
  ASSIGN_OR_RETURN(InodeRecord * rec, GetInode(ino));
  if (rec->attr.is_reg()) {
    ASSIGN_OR_RETURN(StoredChunkMap map, GetChunkMap(ino));
    AddRefs(map, -1);
    AccountBytes(ContentBytes(map), 0);
    Delete(keys_.ChunkMap(ino));
  }
  if (rec->attr.is_symlink()) Delete(keys_.Symlink(ino));
  {
    std::string prefix = keys_.XattrPrefix(ino);
    std::unique_ptr<KvIterator> it = view_.NewIterator(prefix, PrefixEnd(prefix));
    std::vector<std::string> xattr_keys;
    for (it->Seek(prefix); it->Valid(); it->Next()) xattr_keys.emplace_back(it->key());
    RETURN_IF_ERROR(it->status());
    for (std::string& k : xattr_keys) Delete(std::move(k));
  }
  Delete(keys_.Orphan(ino));
  CachedInode& c = inodes_.at(ino);
  c.deleted = true;
  c.dirty = true;
  // Saturating: a miscount must not wrap around to an enormous usage.
  if (meta_.used_inodes > 0) --meta_.used_inodes;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<DentryValue>> MetaTxn::GetDentry(InodeId parent,
                                                              std::string_view name) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, Get(keys_.Dentry(parent, name)));
  if (!raw) return std::optional<DentryValue>();
  ASSIGN_OR_RETURN(DentryValue d, DecodeDentry(*raw));
  return std::optional<DentryValue>(d);
}

void MetaTxn::PutDentry(InodeId parent, std::string_view name, const DentryValue& d) {
  Put(keys_.Dentry(parent, name), EncodeDentry(d));
}

void MetaTxn::DeleteDentry(InodeId parent, std::string_view name) {
  Delete(keys_.Dentry(parent, name));
}

absl::StatusOr<bool> MetaTxn::DirIsEmpty(InodeId dir) {
  std::string prefix = keys_.DentryPrefix(dir);
  std::unique_ptr<KvIterator> it = view_.NewIterator(prefix, PrefixEnd(prefix));
  it->Seek(prefix);
  bool empty = !it->Valid();
  RETURN_IF_ERROR(it->status());
  return empty;
}

absl::StatusOr<StoredChunkMap> MetaTxn::GetChunkMap(InodeId ino) {
  ASSIGN_OR_RETURN(std::optional<std::string> raw, Get(keys_.ChunkMap(ino)));
  if (!raw) return StoredChunkMap{};
  return DecodeChunkMap(*raw);
}

void MetaTxn::PutChunkMap(InodeId ino, const StoredChunkMap& map) {
  if (map.chunks.empty()) {
    Delete(keys_.ChunkMap(ino));
  } else {
    Put(keys_.ChunkMap(ino), EncodeChunkMap(map));
  }
}

void MetaTxn::AddRefs(const StoredChunkMap& map, int64_t delta) {
  for (const StoredChunk& c : map.chunks) {
    if (c.ref.id) ref_deltas_[*c.ref.id] += delta;
  }
}

void MetaTxn::AccountBytes(uint64_t old_bytes, uint64_t new_bytes) {
  // Saturating, as for inodes.
  meta_.used_bytes = meta_.used_bytes >= old_bytes ? meta_.used_bytes - old_bytes : 0;
  meta_.used_bytes += new_bytes;
}

absl::StatusOr<KvBatch> MetaTxn::Finish() {
  KvBatch batch;
  for (auto& [key, value] : pending_) {
    if (value) {
      batch.Put(key, std::move(*value));
    } else {
      batch.Delete(key);
    }
  }
  for (auto& [ino, c] : inodes_) {
    if (!c.dirty) continue;
    if (c.deleted) {
      batch.Delete(keys_.Inode(ino));
    } else {
      batch.Put(keys_.Inode(ino), EncodeInode(c.rec));
    }
  }
  for (const auto& [id, delta] : ref_deltas_) {
    if (delta == 0) continue;
    std::string key = keys_.RefCount(id);
    ASSIGN_OR_RETURN(std::optional<std::string> raw, view_.Get(key));
    uint64_t old_count = 0;
    if (raw) {
      ASSIGN_OR_RETURN(old_count, DecodeRefCount(*raw));
    }
    if (delta < 0 && old_count < static_cast<uint64_t>(-delta)) {
      return absl::DataLossError(
          fmt::format("chunk {} would have a negative reference count", id.ToHex()));
    }
    uint64_t new_count =
        old_count + static_cast<uint64_t>(delta);  // Wraps as intended for delta < 0.
    if (new_count == 0) {
      batch.Delete(std::move(key));
      batch.Put(keys_.Garbage(id), "");
    } else {
      batch.Put(std::move(key), EncodeRefCount(new_count));
      // Referenced again (maybe while on the garbage list): not garbage.
      if (old_count == 0) batch.Delete(keys_.Garbage(id));
    }
  }
  if (meta_ != original_meta_) batch.Put(keys_.Meta(), EncodeScopeMeta(meta_));
  return batch;
}

}  // namespace traincache::meta
