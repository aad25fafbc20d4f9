#include "meta/kv_metadata_store.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <random>
#include <set>
#include <type_traits>
#include <variant>
#include <utility>

#include "traincache/status.h"

namespace traincache::meta {
namespace {

// Deepest directory tree Rename walks before calling the parent chain broken.
constexpr int kMaxTreeDepth = 1 << 16;
// Cap of ListGarbage (and its limit 0).
constexpr uint32_t kMaxListGarbage = 1 << 16;
// PurgeOrphans frees at most this many orphans per batch.
constexpr int kPurgeBatch = 512;

constexpr uint32_t kPermBits = 07777;

absl::Status ScopeNotFound(const Scope& scope) {
  return PosixError(ENOENT, fmt::format("scope {} does not exist", scope.ToString()));
}

ScopeUsage UsageOf(const ScopeMeta& meta) {
  ScopeUsage usage;
  usage.bytes = meta.used_bytes;
  usage.inodes = meta.used_inodes;
  usage.quota_bytes = meta.quota_bytes;
  return usage;
}

uint64_t RandomGeneration() {
  std::random_device rd;
  uint64_t g = 0;
  while (g == 0) g = (uint64_t{rd()} << 32) | rd();
  return g;
}

// EDQUOT if growing one content from `old_bytes` to `new_bytes` would take
// the scope past its quota. Shrinking is always allowed, even over quota.
absl::Status CheckQuota(const ScopeMeta& meta, uint64_t old_bytes, uint64_t new_bytes) {
  if (new_bytes <= old_bytes) return absl::OkStatus();
  uint64_t grow = new_bytes - old_bytes;
  if (grow > meta.quota_bytes || meta.used_bytes > meta.quota_bytes - grow) {
    return PosixError(EDQUOT, fmt::format("over quota: {} bytes used of {}, {} more asked",
                                          meta.used_bytes, meta.quota_bytes, grow));
  }
  return absl::OkStatus();
}

absl::Status ValidateSymlinkTarget(std::string_view target) {
  if (target.empty()) return PosixError(EINVAL, "empty symlink target");
  if (target.size() > kMaxSymlinkBytes) {
    return PosixError(ENAMETOOLONG, fmt::format("symlink target is {} bytes; at most {}",
                                                target.size(), kMaxSymlinkBytes));
  }
  if (target.find('\0') != std::string_view::npos) {
    return PosixError(EINVAL, "symlink target contains NUL");
  }
  return absl::OkStatus();
}

// As setxattr(2)/getxattr(2): ERANGE for an empty or too long name.
absl::Status ValidateXattrName(std::string_view name) {
  if (name.empty() || name.size() > kMaxXattrNameBytes) {
    return PosixError(ERANGE, fmt::format("xattr name must be 1..{} bytes, got {}",
                                          kMaxXattrNameBytes, name.size()));
  }
  if (name.find('\0') != std::string_view::npos) {
    return PosixError(EINVAL, "xattr name contains NUL");
  }
  return absl::OkStatus();
}

// The content of a file resized to `size` (truncate(2)): shrinking keeps a
// prefix of the new last chunk by lowering its length; extending raises the
// old last chunk's length (its missing bytes read as zeros) and appends holes.
// Replaces `ino`'s chunk map `old` with `fresh` in `txn`: quota check on the
// content bytes, references moved (a chunk in both keeps its count), usage
// accounted. Nothing is written if the quota refuses.
absl::Status ReplaceContent(MetaTxn& txn, InodeId ino, const StoredChunkMap& old,
                            const StoredChunkMap& fresh) {
  uint64_t old_bytes = ContentBytes(old);
  uint64_t new_bytes = ContentBytes(fresh);
  RETURN_IF_ERROR(CheckQuota(txn.meta(), old_bytes, new_bytes));
  txn.AddRefs(old, -1);
  txn.AddRefs(fresh, +1);
  txn.AccountBytes(old_bytes, new_bytes);
  txn.PutChunkMap(ino, fresh);
  return absl::OkStatus();
}

absl::StatusOr<StoredChunkMap> Resize(const StoredChunkMap& old, uint64_t size, InodeId ino) {
  const uint64_t cs = old.chunk_size;
  if (size > kMaxFileChunks * cs) {
    return PosixError(EFBIG, fmt::format("inode {}: {} bytes is more than {} chunks of {}", ino,
                                         size, kMaxFileChunks, cs));
  }
  StoredChunkMap out = old;
  out.size = size;
  if (size < old.size) {
    uint64_t count = (size + cs - 1) / cs;
    out.chunks.resize(count);
    if (count > 0) {
      StoredChunk& last = out.chunks.back();
      uint32_t length = static_cast<uint32_t>(size - (count - 1) * cs);
      if (length < last.ref.length) {
        if (last.ref.id) last.truncated = true;
        last.ref.length = length;
      }
    }
  } else if (size > old.size) {
    if (!out.chunks.empty()) {
      StoredChunk& last = out.chunks.back();
      uint64_t start = (out.chunks.size() - 1) * cs;
      uint32_t length = static_cast<uint32_t>(std::min(cs, size - start));
      if (length > last.ref.length) {
        if (last.truncated) {
          // The chunk holds bytes past `length` that a truncate cut off;
          // raising `length` would bring them back where zeros belong. The
          // caller must rewrite this content (CommitContent with a new last
          // chunk) and retry.
          return PosixError(EOPNOTSUPP,
                            fmt::format("inode {}: cannot extend a file whose last chunk was cut "
                                        "by a truncate; commit new content instead",
                                        ino));
        }
        last.ref.length = length;
      }
    }
    for (uint64_t pos = out.chunks.size() * cs; pos < size; pos += cs) {
      out.chunks.push_back(
          StoredChunk{ChunkRef{std::nullopt, static_cast<uint32_t>(std::min(cs, size - pos))}});
    }
  }
  return out;
}

// --- request records ---

// Most expired request records one mutation drops (with their index keys),
// so piggybacked expiry keeps batches small; ExpireRequests loops.
constexpr int kExpireBatch = 1024;
// A scope whose expired records all went waits this long before its next
// mutation looks again: one short range read per interval, not per request.
constexpr int64_t kExpireIntervalSeconds = 60;

using Outcome = decltype(RequestRecord::outcome);

// The types a request record can hold (what the recordable calls return;
// bool: calls answering only OK).
template <typename T>
constexpr bool kRecordable = std::is_same_v<T, bool> || std::is_same_v<T, InodeAttr> ||
                             std::is_same_v<T, CreateResult> || std::is_same_v<T, UnlinkResult>;

template <typename T>
Outcome OutcomeOf(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return std::monostate{};
  } else {
    return value;
  }
}

// The answer a recorded request gave. A record of another kind means the
// client used one id for two different calls: refused, nothing changed.
template <typename T>
absl::StatusOr<T> Replay(const RequestRecord& rec, const RequestId& id) {
  if constexpr (std::is_same_v<T, bool>) {
    if (std::holds_alternative<std::monostate>(rec.outcome)) return true;
  } else {
    if (const T* v = std::get_if<T>(&rec.outcome)) return *v;
  }
  return PosixError(EINVAL, fmt::format("request {}/{} was recorded for another kind of call",
                                        id.client, id.seq));
}

absl::Status ValidateRequestId(const RequestId& id) {
  if (id.client.size() > kMaxRequestClientBytes) {
    return PosixError(EINVAL, fmt::format("request client id is {} bytes; at most {}",
                                          id.client.size(), kMaxRequestClientBytes));
  }
  return absl::OkStatus();
}

// Adds to `txn` the deletion of at most `limit` request records (and their
// index keys) written in a second before `older_than_sec`. Returns how many;
// fewer than `limit` means none is left. Reads only the expired front of
// the index.
absl::StatusOr<int> ExpireRequestsIn(MetaTxn& txn, int64_t older_than_sec, int limit) {
  const ScopeKeys& keys = txn.keys();
  std::string prefix = keys.RequestExpiryPrefix();
  RequestId none;
  std::string end = keys.RequestExpiry(older_than_sec, none);
  std::unique_ptr<KvIterator> it = txn.view().NewIterator(prefix, end);
  int n = 0;
  for (it->Seek(prefix); it->Valid() && n < limit; it->Next(), ++n) {
    ASSIGN_OR_RETURN(RequestExpiryKey k, ParseRequestExpiryKey(it->key(), prefix));
    txn.Delete(keys.Request(k.id));
    txn.Delete(std::string(it->key()));
  }
  RETURN_IF_ERROR(it->status());
  return n;
}

}  // namespace

KvMetadataStore::KvMetadataStore(std::unique_ptr<KvBackend> backend, MetadataSync sync)
    : backend_(std::move(backend)), sync_(sync) {}

std::shared_ptr<KvMetadataStore::ScopeState> KvMetadataStore::State(const Scope& scope) {
  std::string name = scope.ToString();
  absl::MutexLock lock(&states_mu_);
  std::shared_ptr<ScopeState>& st = states_[name];
  if (!st) st = std::make_shared<ScopeState>(scope);
  return st;
}

absl::Status KvMetadataStore::LoadLocked(ScopeState& st) {
  if (st.loaded) return absl::OkStatus();
  ASSIGN_OR_RETURN(st.meta, ReadScopeMeta(backend_->Latest(), st.keys));
  st.loaded = true;
  return absl::OkStatus();
}

template <typename Fn>
auto KvMetadataStore::Mutate(const Scope& scope, Fn&& fn, Durable durable,
                             const RequestId& request)
    -> decltype(fn(std::declval<MetaTxn&>())) {
  using Result = decltype(fn(std::declval<MetaTxn&>()));
  using Value = typename Result::value_type;
  RETURN_IF_ERROR(ValidateRequestId(request));
  std::shared_ptr<ScopeState> st = State(scope);
  std::optional<Result> result;
  uint64_t token = 0;
  {
    absl::MutexLock lock(&st->mu);
    RETURN_IF_ERROR(LoadLocked(*st));
    if (!st->meta) return ScopeNotFound(scope);
    MetaTxn txn(backend_->Latest(), st->keys, *st->meta);
    std::string request_key;
    if constexpr (kRecordable<Value>) {
      if (!request.empty()) {
        // Under the scope mutex: a copy arriving while the first is being
        // applied waits here and then finds its record.
        request_key = st->keys.Request(request);
        ASSIGN_OR_RETURN(std::optional<std::string> raw, txn.Get(request_key));
        if (raw) {
          ASSIGN_OR_RETURN(RequestRecord rec, DecodeRequestRecord(*raw));
          result.emplace(Replay<Value>(rec, request));
          if (!result->ok()) return std::move(*result);
          request_key.clear();
        }
      }
    }
    const bool new_epoch = !st->epoch_started;
    bool expired_all = false;
    if (!result) {
      if (new_epoch) txn.StartEpoch();
      result.emplace(fn(txn));
      if (!result->ok()) return std::move(*result);
      if constexpr (kRecordable<Value>) {
        if (!request_key.empty()) {
          RequestRecord rec{txn.now(), OutcomeOf(**result)};
          txn.Put(std::move(request_key), EncodeRequestRecord(rec));
          txn.Put(st->keys.RequestExpiry(rec.written.sec, request), "");
          // Expiry rides on the writes that make records, so a scope
          // nobody writes keeps its few records until then (or until
          // ExpireRequests), and a busy one never grows past the TTL's worth.
          if (txn.now().sec >= st->next_expiry) {
            ASSIGN_OR_RETURN(int n, ExpireRequestsIn(txn, txn.now().sec - kRequestRecordTtlSeconds,
                                                     kExpireBatch));
            expired_all = n < kExpireBatch;
          }
        }
      }
    }
    ASSIGN_OR_RETURN(KvBatch batch, txn.Finish());
    if (batch.empty()) {
      // Nothing to write, but the answer may rest on a write another thread
      // made and is still syncing: do not hand it out before that is durable.
      token = backend_->LastToken();
    } else {
      ASSIGN_OR_RETURN(token, backend_->Write(batch));
      st->meta = txn.meta();
      if (new_epoch) st->epoch_started = true;
      if (expired_all) st->next_expiry = txn.now().sec + kExpireIntervalSeconds;
    }
    // Numbers an answer hands out must never come back after a crash.
    if (txn.must_sync()) durable = Durable::kAlways;
    if (durable == Durable::kAlways) last_synced_write_.store(token, std::memory_order_relaxed);
  }
  if (durable == Durable::kUnlessRelaxed && Relaxed()) return std::move(*result);
  // Outside the scope mutex, so the next mutation of the scope can write
  // while this one waits for (and shares) the sync.
  RETURN_IF_ERROR(backend_->WaitDurable(token));
  return std::move(*result);
}

absl::Status KvMetadataStore::InodeNotFound(KvView& view, const ScopeKeys& keys, const Scope& scope,
                                            InodeId ino) {
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(view, keys));
  if (!meta) return ScopeNotFound(scope);
  return PosixError(ENOENT, fmt::format("inode {} does not exist in {}", ino, scope.ToString()));
}

absl::StatusOr<InodeRecord> KvMetadataStore::ReadExisting(KvView& view, const ScopeKeys& keys,
                                                          const Scope& scope, InodeId ino) {
  ASSIGN_OR_RETURN(std::optional<InodeRecord> rec, ReadInode(view, keys, ino));
  if (!rec) return InodeNotFound(view, keys, scope, ino);
  return std::move(*rec);
}

// --- scopes ---

absl::StatusOr<ScopeInfo> KvMetadataStore::OpenScope(const Scope& scope, bool create,
                                                     uint64_t quota_if_created) {
  std::shared_ptr<ScopeState> st = State(scope);
  ScopeInfo info{scope, 0, ScopeUsage{}};
  uint64_t token = 0;
  {
    absl::MutexLock lock(&st->mu);
    RETURN_IF_ERROR(LoadLocked(*st));
    if (st->meta) {
      token = backend_->LastToken();
    } else {
      if (!create) return ScopeNotFound(scope);
      ScopeMeta meta;
      meta.generation = RandomGeneration();
      meta.next_ino = kRootInode + 1;
      meta.used_inodes = 1;
      meta.quota_bytes = quota_if_created;
      InodeRecord root;
      root.attr.ino = kRootInode;
      root.attr.mode = S_IFDIR | 0755;
      root.attr.nlink = 2;
      root.attr.atime = root.attr.mtime = root.attr.ctime = Now();
      root.attr.version = 1;
      root.parent = kRootInode;
      KvBatch batch;
      batch.Put(st->keys.Meta(), EncodeScopeMeta(meta));
      batch.Put(st->keys.Inode(kRootInode), EncodeInode(root));
      ASSIGN_OR_RETURN(token, backend_->Write(batch));
      st->meta = meta;
    }
    info.generation = st->meta->generation;
    info.usage = UsageOf(*st->meta);
  }
  RETURN_IF_ERROR(backend_->WaitDurable(token));
  return info;
}

absl::Status KvMetadataStore::DeleteScope(const Scope& scope) {
  std::shared_ptr<ScopeState> st = State(scope);
  uint64_t token = 0;
  {
    absl::MutexLock lock(&st->mu);
    RETURN_IF_ERROR(LoadLocked(*st));
    if (!st->meta) return ScopeNotFound(scope);
    // One range deletion: the whole scope goes in one atomic write, however
    // many keys it has.
    KvBatch batch;
    batch.DeleteRange(st->keys.prefix(), st->keys.End());
    ASSIGN_OR_RETURN(token, backend_->Write(batch));
    st->meta = std::nullopt;
  }
  RETURN_IF_ERROR(backend_->WaitDurable(token));
  // Then drop the deleted bytes from the files too ("gone permanently"); a
  // scope made again meanwhile under the same name is unaffected.
  backend_->CompactRange(st->keys.prefix(), st->keys.End());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Scope>> KvMetadataStore::ListScopes() {
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  std::unique_ptr<KvIterator> it = snap->NewIterator("", "");
  std::vector<Scope> scopes;
  std::string pos;
  // One seek per scope: from any key of a scope jump past its whole range.
  for (it->Seek(pos); it->Valid(); it->Seek(pos)) {
    ASSIGN_OR_RETURN(std::string_view text, ScopeTextOfKey(it->key()));
    absl::StatusOr<Scope> scope = Scope::Parse(text);
    if (!scope.ok()) {
      return absl::DataLossError(
          fmt::format("key of unknown scope: {}", std::string(scope.status().message())));
    }
    scopes.push_back(*std::move(scope));
    pos = PrefixEnd(ScopePrefix(scopes.back()));
  }
  RETURN_IF_ERROR(it->status());
  return scopes;
}

absl::StatusOr<ScopeUsage> KvMetadataStore::GetUsage(const Scope& scope) {
  ScopeKeys keys(scope);
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(backend_->Latest(), keys));
  if (!meta) return ScopeNotFound(scope);
  return UsageOf(*meta);
}

absl::Status KvMetadataStore::SetQuota(const Scope& scope, uint64_t quota_bytes) {
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  txn.meta().quota_bytes = quota_bytes;
                  return true;
                })
      .status();
}

// --- namespace ---

absl::StatusOr<InodeAttr> KvMetadataStore::Lookup(const Scope& scope, InodeId parent,
                                                  std::string_view name) {
  RETURN_IF_ERROR(ValidateName(name));
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(std::optional<DentryValue> d, ReadDentry(*snap, keys, parent, name));
  if (!d) {
    ASSIGN_OR_RETURN(InodeRecord dir, ReadExisting(*snap, keys, scope, parent));
    if (!dir.attr.is_dir()) {
      return PosixError(ENOTDIR, fmt::format("inode {} is not a directory", parent));
    }
    return PosixError(ENOENT, fmt::format("no entry '{}' in directory {}", name, parent));
  }
  ASSIGN_OR_RETURN(std::optional<InodeRecord> rec, ReadInode(*snap, keys, d->ino));
  if (!rec) {
    return absl::DataLossError(
        fmt::format("entry '{}' of directory {} names missing inode {}", name, parent, d->ino));
  }
  return rec->attr;
}

absl::StatusOr<InodeAttr> KvMetadataStore::GetAttr(const Scope& scope, InodeId ino) {
  ScopeKeys keys(scope);
  ASSIGN_OR_RETURN(InodeRecord rec, ReadExisting(backend_->Latest(), keys, scope, ino));
  return rec.attr;
}

absl::StatusOr<InodeAttr> KvMetadataStore::SetAttr(const Scope& scope, InodeId ino,
                                                   const SetAttrRequest& req) {
  if ((req.atime && req.atime->nsec >= 1'000'000'000u) ||
      (req.mtime && req.mtime->nsec >= 1'000'000'000u)) {
    return PosixError(EINVAL, "time nanoseconds out of range");
  }
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<InodeAttr> {
    ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
    if (!req.mode && !req.uid && !req.gid && !req.size && !req.atime && !req.mtime) {
      return rec->attr;  // Nothing asked, nothing changes (not even the version).
    }
    if (req.size) {
      if (rec->attr.is_dir())
        return PosixError(EISDIR, fmt::format("inode {} is a directory", ino));
      if (!rec->attr.is_reg()) {
        return PosixError(EINVAL, fmt::format("inode {} is not a regular file", ino));
      }
      ASSIGN_OR_RETURN(StoredChunkMap old, txn.GetChunkMap(ino));
      if (old.size != rec->attr.size) {
        return absl::DataLossError(fmt::format("inode {} has size {} but content of {} bytes", ino,
                                               rec->attr.size, old.size));
      }
      // truncate(2) changes mtime only if the size changes.
      if (*req.size != old.size) {
        ASSIGN_OR_RETURN(StoredChunkMap resized, Resize(old, *req.size, ino));
        RETURN_IF_ERROR(ReplaceContent(txn, ino, old, resized));
        rec->attr.size = *req.size;
        txn.Touch(rec, /*modified=*/true);
      }
    }
    // Only permission bits change; the file type stays.
    if (req.mode) rec->attr.mode = (rec->attr.mode & S_IFMT) | (*req.mode & kPermBits);
    if (req.uid) rec->attr.uid = *req.uid;
    if (req.gid) rec->attr.gid = *req.gid;
    txn.Touch(rec, /*modified=*/false);
    if (req.atime) rec->attr.atime = *req.atime;
    if (req.mtime) rec->attr.mtime = *req.mtime;
    return rec->attr;
  }, req.size ? Durable::kAlways : Durable::kUnlessRelaxed);
}

absl::StatusOr<ReadDirPage> KvMetadataStore::ReadDir(const Scope& scope, InodeId dir,
                                                     std::string_view after, uint32_t limit,
                                                     bool plus) {
  if (limit == 0 || limit > kMaxReadDirEntries) limit = kMaxReadDirEntries;
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(InodeRecord rec, ReadExisting(*snap, keys, scope, dir));
  if (!rec.attr.is_dir()) {
    return PosixError(ENOTDIR, fmt::format("inode {} is not a directory", dir));
  }
  std::string prefix = keys.DentryPrefix(dir);
  std::unique_ptr<KvIterator> it = snap->NewIterator(prefix, PrefixEnd(prefix));
  std::string start = prefix;
  start.append(after);
  it->Seek(start);
  if (!after.empty() && it->Valid() && it->key() == start) it->Next();
  ReadDirPage page;
  for (; it->Valid(); it->Next()) {
    if (page.entries.size() == limit) {
      page.more = true;
      break;
    }
    ASSIGN_OR_RETURN(DentryValue d, DecodeDentry(it->value()));
    DirEntry entry;
    entry.name = std::string(it->key().substr(prefix.size()));
    entry.ino = d.ino;
    entry.type = d.type;
    if (plus) {
      ASSIGN_OR_RETURN(std::optional<InodeRecord> child, ReadInode(*snap, keys, d.ino));
      if (!child) {
        return absl::DataLossError(fmt::format("entry '{}' of directory {} names missing inode {}",
                                               entry.name, dir, d.ino));
      }
      entry.attr = child->attr;
    }
    page.entries.push_back(std::move(entry));
  }
  RETURN_IF_ERROR(it->status());
  return page;
}

absl::StatusOr<CreateResult> KvMetadataStore::Create(const Scope& scope, InodeId parent,
                                                     std::string_view name, uint32_t mode,
                                                     const Caller& caller, bool exclusive,
                                                     const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(name));
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<CreateResult> {
    ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> existing, txn.GetDentry(parent, name));
    if (existing) {
      if (exclusive) return PosixError(EEXIST, fmt::format("'{}' exists in {}", name, parent));
      ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetChild(*existing));
      if (rec->attr.is_dir()) return PosixError(EISDIR, fmt::format("'{}' is a directory", name));
      return CreateResult{rec->attr, false};
    }
    InodeRecord* rec = txn.NewInode(S_IFREG | (mode & kPermBits), caller, 1);
    txn.PutDentry(parent, name, DentryValue{rec->attr.ino, S_IFREG});
    txn.Touch(dir, /*modified=*/true);
    return CreateResult{rec->attr, true, dir->attr};
  }, Durable::kUnlessRelaxed, request);
}

absl::StatusOr<InodeAttr> KvMetadataStore::Mkdir(const Scope& scope, InodeId parent,
                                                 std::string_view name, uint32_t mode,
                                                 const Caller& caller, const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(name));
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<InodeAttr> {
    ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> existing, txn.GetDentry(parent, name));
    if (existing) return PosixError(EEXIST, fmt::format("'{}' exists in {}", name, parent));
    if (dir->attr.nlink == std::numeric_limits<uint32_t>::max()) {
      return PosixError(EMLINK, fmt::format("directory {} has too many subdirectories", parent));
    }
    InodeRecord* rec = txn.NewInode(S_IFDIR | (mode & kPermBits), caller, 2);
    rec->parent = parent;
    txn.PutDentry(parent, name, DentryValue{rec->attr.ino, S_IFDIR});
    ++dir->attr.nlink;  // The new directory's "..".
    txn.Touch(dir, /*modified=*/true);
    return rec->attr;
  }, Durable::kUnlessRelaxed, request);
}

absl::StatusOr<InodeAttr> KvMetadataStore::Symlink(const Scope& scope, InodeId parent,
                                                   std::string_view name, std::string_view target,
                                                   const Caller& caller,
                                                   const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(ValidateSymlinkTarget(target));
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<InodeAttr> {
    ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> existing, txn.GetDentry(parent, name));
    if (existing) return PosixError(EEXIST, fmt::format("'{}' exists in {}", name, parent));
    InodeRecord* rec = txn.NewInode(S_IFLNK | 0777, caller, 1);
    rec->attr.size = target.size();
    txn.Put(txn.keys().Symlink(rec->attr.ino), std::string(target));
    txn.PutDentry(parent, name, DentryValue{rec->attr.ino, S_IFLNK});
    txn.Touch(dir, /*modified=*/true);
    return rec->attr;
  }, Durable::kUnlessRelaxed, request);
}

absl::StatusOr<std::string> KvMetadataStore::ReadLink(const Scope& scope, InodeId ino) {
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(InodeRecord rec, ReadExisting(*snap, keys, scope, ino));
  if (!rec.attr.is_symlink()) {
    return PosixError(EINVAL, fmt::format("inode {} is not a symlink", ino));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> target, snap->Get(keys.Symlink(ino)));
  if (!target) return absl::DataLossError(fmt::format("symlink {} has no target", ino));
  return std::move(*target);
}

absl::StatusOr<InodeAttr> KvMetadataStore::Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                                std::string_view new_name,
                                                const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(new_name));
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<InodeAttr> {
    ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
    if (rec->attr.is_dir()) {
      return PosixError(EPERM, fmt::format("inode {} is a directory: no hard links", ino));
    }
    // linkat(2) of an unlinked file (not O_TMPFILE) fails so.
    if (rec->attr.nlink == 0) return PosixError(ENOENT, fmt::format("inode {} is unlinked", ino));
    if (rec->attr.nlink == std::numeric_limits<uint32_t>::max()) {
      return PosixError(EMLINK, fmt::format("inode {} has too many links", ino));
    }
    ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(new_parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> existing, txn.GetDentry(new_parent, new_name));
    if (existing) {
      return PosixError(EEXIST, fmt::format("'{}' exists in {}", new_name, new_parent));
    }
    txn.PutDentry(new_parent, new_name, DentryValue{ino, rec->attr.mode & S_IFMT});
    ++rec->attr.nlink;
    txn.Touch(rec, /*modified=*/false);
    txn.Touch(dir, /*modified=*/true);
    return rec->attr;
  }, Durable::kUnlessRelaxed, request);
}

absl::StatusOr<UnlinkResult> KvMetadataStore::Unlink(const Scope& scope, InodeId parent,
                                                     std::string_view name,
                                                     const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(name));
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<UnlinkResult> {
    ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> d, txn.GetDentry(parent, name));
    if (!d) return PosixError(ENOENT, fmt::format("no entry '{}' in directory {}", name, parent));
    if (S_ISDIR(d->type)) return PosixError(EISDIR, fmt::format("'{}' is a directory", name));
    ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetChild(*d));
    txn.DeleteDentry(parent, name);
    txn.Touch(dir, /*modified=*/true);
    return txn.DropLink(rec);
  }, Durable::kUnlessRelaxed, request);
}

absl::Status KvMetadataStore::Rmdir(const Scope& scope, InodeId parent, std::string_view name,
                                    const RequestId& request) {
  RETURN_IF_ERROR(ValidateName(name));
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  ASSIGN_OR_RETURN(InodeRecord * dir, txn.GetDir(parent));
                  ASSIGN_OR_RETURN(std::optional<DentryValue> d, txn.GetDentry(parent, name));
                  if (!d) {
                    return PosixError(ENOENT,
                                      fmt::format("no entry '{}' in directory {}", name, parent));
                  }
                  if (!S_ISDIR(d->type)) {
                    return PosixError(ENOTDIR, fmt::format("'{}' is not a directory", name));
                  }
                  ASSIGN_OR_RETURN(bool empty, txn.DirIsEmpty(d->ino));
                  if (!empty) return PosixError(ENOTEMPTY, fmt::format("'{}' is not empty", name));
                  RETURN_IF_ERROR(txn.GetChild(*d).status());
                  txn.DeleteDentry(parent, name);
                  RETURN_IF_ERROR(txn.FreeInode(d->ino));
                  --dir->attr.nlink;
                  txn.Touch(dir, /*modified=*/true);
                  return true;
                }, Durable::kUnlessRelaxed, request)
      .status();
}

namespace {

// True if directory `ancestor` is `ino` or one of its ancestors.
absl::StatusOr<bool> IsSelfOrAncestor(MetaTxn& txn, InodeId ancestor, InodeId ino) {
  for (int depth = 0; depth < kMaxTreeDepth; ++depth) {
    if (ino == ancestor) return true;
    if (ino == kRootInode) return false;
    ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
    if (!rec->attr.is_dir()) {
      return absl::DataLossError(fmt::format("parent chain reaches non-directory {}", ino));
    }
    ino = rec->parent;
  }
  return absl::DataLossError("directory parent chain does not reach the root");
}

}  // namespace

absl::StatusOr<UnlinkResult> KvMetadataStore::Rename(const Scope& scope, InodeId parent,
                                                     std::string_view name, InodeId new_parent,
                                                     std::string_view new_name, uint32_t flags,
                                                     const RequestId& request) {
  if ((flags & ~(kRenameNoReplace | kRenameExchange)) != 0 ||
      flags == (kRenameNoReplace | kRenameExchange)) {
    return PosixError(EINVAL, fmt::format("bad rename flags {:#x}", flags));
  }
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(ValidateName(new_name));
  const bool exchange = flags & kRenameExchange;
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<UnlinkResult> {
    ASSIGN_OR_RETURN(InodeRecord * src_dir, txn.GetDir(parent));
    ASSIGN_OR_RETURN(InodeRecord * dst_dir, txn.GetDir(new_parent));  // == src_dir if same.
    ASSIGN_OR_RETURN(std::optional<DentryValue> src, txn.GetDentry(parent, name));
    if (!src) return PosixError(ENOENT, fmt::format("no entry '{}' in directory {}", name, parent));
    ASSIGN_OR_RETURN(std::optional<DentryValue> dst, txn.GetDentry(new_parent, new_name));
    if ((flags & kRenameNoReplace) && dst) {
      return PosixError(EEXIST, fmt::format("'{}' exists in {}", new_name, new_parent));
    }
    if (exchange && !dst) {
      return PosixError(ENOENT, fmt::format("no entry '{}' in directory {}", new_name, new_parent));
    }
    // Both names for one inode (or one name twice): rename(2) does nothing.
    if (dst && dst->ino == src->ino) return UnlinkResult{};

    const bool src_is_dir = S_ISDIR(src->type);
    const bool dst_is_dir = dst && S_ISDIR(dst->type);
    // Within one directory nothing can move into its own subtree.
    if (src_is_dir && parent != new_parent) {
      ASSIGN_OR_RETURN(bool into_self, IsSelfOrAncestor(txn, src->ino, new_parent));
      if (into_self) {
        return PosixError(EINVAL, fmt::format("cannot move directory '{}' into itself", name));
      }
    }
    if (exchange && dst_is_dir && parent != new_parent) {
      ASSIGN_OR_RETURN(bool into_self, IsSelfOrAncestor(txn, dst->ino, parent));
      if (into_self) {
        return PosixError(EINVAL, fmt::format("cannot move directory '{}' into itself", new_name));
      }
    }
    ASSIGN_OR_RETURN(InodeRecord * src_rec, txn.GetChild(*src));
    UnlinkResult replaced;

    if (exchange) {
      ASSIGN_OR_RETURN(InodeRecord * dst_rec, txn.GetChild(*dst));
      txn.PutDentry(parent, name, *dst);
      txn.PutDentry(new_parent, new_name, *src);
      if (parent != new_parent) {
        if (src_is_dir) {
          src_rec->parent = new_parent;
          --src_dir->attr.nlink;
          ++dst_dir->attr.nlink;
        }
        if (dst_is_dir) {
          dst_rec->parent = parent;
          --dst_dir->attr.nlink;
          ++src_dir->attr.nlink;
        }
      }
      txn.Touch(dst_rec, /*modified=*/false);
    } else {
      if (dst) {
        if (src_is_dir && !dst_is_dir) {
          return PosixError(ENOTDIR, fmt::format("'{}' is not a directory", new_name));
        }
        if (!src_is_dir && dst_is_dir) {
          return PosixError(EISDIR, fmt::format("'{}' is a directory", new_name));
        }
        ASSIGN_OR_RETURN(InodeRecord * dst_rec, txn.GetChild(*dst));
        if (dst_is_dir) {
          ASSIGN_OR_RETURN(bool empty, txn.DirIsEmpty(dst->ino));
          if (!empty) return PosixError(ENOTEMPTY, fmt::format("'{}' is not empty", new_name));
          RETURN_IF_ERROR(txn.FreeInode(dst->ino));
          --dst_dir->attr.nlink;  // Its ".." is gone.
          replaced = UnlinkResult{dst->ino, 0, false};
        } else {
          ASSIGN_OR_RETURN(replaced, txn.DropLink(dst_rec));
        }
      }
      txn.DeleteDentry(parent, name);
      txn.PutDentry(new_parent, new_name, *src);
      if (src_is_dir && parent != new_parent) {
        src_rec->parent = new_parent;
        --src_dir->attr.nlink;
        ++dst_dir->attr.nlink;
      }
    }
    txn.Touch(src_rec, /*modified=*/false);
    txn.Touch(src_dir, /*modified=*/true);
    txn.Touch(dst_dir, /*modified=*/true);
    return replaced;
  }, Durable::kUnlessRelaxed, request);
}

// --- xattrs ---

absl::StatusOr<std::string> KvMetadataStore::GetXattr(const Scope& scope, InodeId ino,
                                                      std::string_view name) {
  RETURN_IF_ERROR(ValidateXattrName(name));
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(std::optional<std::string> value, snap->Get(keys.Xattr(ino, name)));
  if (value) return std::move(*value);
  RETURN_IF_ERROR(ReadExisting(*snap, keys, scope, ino).status());
  return PosixError(ENODATA, fmt::format("inode {} has no xattr '{}'", ino, name));
}

absl::Status KvMetadataStore::SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                                       std::string_view value, uint32_t flags,
                                       const RequestId& request) {
  RETURN_IF_ERROR(ValidateXattrName(name));
  if (value.size() > kMaxXattrValueBytes) {
    return PosixError(E2BIG, fmt::format("xattr value is {} bytes; at most {}", value.size(),
                                         kMaxXattrValueBytes));
  }
  if ((flags & ~(kXattrCreate | kXattrReplace)) != 0) {
    return PosixError(EINVAL, fmt::format("bad setxattr flags {:#x}", flags));
  }
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
                  std::string key = txn.keys().Xattr(ino, name);
                  ASSIGN_OR_RETURN(std::optional<std::string> old, txn.Get(key));
                  if ((flags & kXattrCreate) && old) {
                    return PosixError(EEXIST, fmt::format("inode {} has xattr '{}'", ino, name));
                  }
                  if ((flags & kXattrReplace) && !old) {
                    return PosixError(ENODATA,
                                      fmt::format("inode {} has no xattr '{}'", ino, name));
                  }
                  txn.Put(std::move(key), std::string(value));
                  txn.Touch(rec, /*modified=*/false);
                  return true;
                }, Durable::kUnlessRelaxed, request)
      .status();
}

absl::StatusOr<std::vector<std::string>> KvMetadataStore::ListXattr(const Scope& scope,
                                                                    InodeId ino) {
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  RETURN_IF_ERROR(ReadExisting(*snap, keys, scope, ino).status());
  std::string prefix = keys.XattrPrefix(ino);
  std::unique_ptr<KvIterator> it = snap->NewIterator(prefix, PrefixEnd(prefix));
  std::vector<std::string> names;
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    names.emplace_back(it->key().substr(prefix.size()));
  }
  RETURN_IF_ERROR(it->status());
  return names;
}

absl::Status KvMetadataStore::RemoveXattr(const Scope& scope, InodeId ino, std::string_view name,
                                          const RequestId& request) {
  RETURN_IF_ERROR(ValidateXattrName(name));
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
                  std::string key = txn.keys().Xattr(ino, name);
                  ASSIGN_OR_RETURN(std::optional<std::string> old, txn.Get(key));
                  if (!old) {
                    return PosixError(ENODATA,
                                      fmt::format("inode {} has no xattr '{}'", ino, name));
                  }
                  txn.Delete(std::move(key));
                  txn.Touch(rec, /*modified=*/false);
                  return true;
                }, Durable::kUnlessRelaxed, request)
      .status();
}

// --- content ---

absl::StatusOr<ChunkMap> KvMetadataStore::GetChunkMap(const Scope& scope, InodeId ino) {
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(InodeRecord rec, ReadExisting(*snap, keys, scope, ino));
  if (rec.attr.is_dir()) return PosixError(EISDIR, fmt::format("inode {} is a directory", ino));
  if (!rec.attr.is_reg()) {
    return PosixError(EINVAL, fmt::format("inode {} is not a regular file", ino));
  }
  ASSIGN_OR_RETURN(StoredChunkMap stored, ReadChunkMap(*snap, keys, ino));
  if (stored.size != rec.attr.size) {
    return absl::DataLossError(fmt::format("inode {} has size {} but content of {} bytes", ino,
                                           rec.attr.size, stored.size));
  }
  ChunkMap map;
  map.version = rec.attr.version;
  map.size = stored.size;
  map.chunk_size = stored.chunk_size;
  map.chunks.reserve(stored.chunks.size());
  for (StoredChunk& c : stored.chunks) map.chunks.push_back(std::move(c.ref));
  return map;
}

absl::StatusOr<InodeAttr> KvMetadataStore::CommitContent(const Scope& scope, InodeId ino,
                                                         uint64_t expected_version, uint64_t size,
                                                         uint32_t chunk_size,
                                                         const std::vector<ChunkRef>& chunks,
                                                         Timespec mtime) {
  return CommitContentWithSmallChunks(scope, ino, expected_version, size, chunk_size, chunks,
                                      mtime, {});
}

absl::StatusOr<InodeAttr> KvMetadataStore::CommitContentWithSmallChunks(
    const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
    uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
    const std::vector<SmallChunk>& small) {
  // Bound the size first: the shape check's arithmetic must not overflow.
  if (size > kMaxFileChunks * uint64_t{kMaxChunkSize} || chunks.size() > kMaxFileChunks) {
    return PosixError(
        EFBIG, fmt::format("{} bytes in {} chunks is too large for one file", size, chunks.size()));
  }
  RETURN_IF_ERROR(ValidateChunkMapShape(size, chunk_size, chunks));
  if (mtime.nsec >= 1'000'000'000u) return PosixError(EINVAL, "mtime nanoseconds out of range");
  if (!small.empty()) {
    // Each one is a chunk this commit references (so it is never stored
    // unreferenced: the collector frees it once its count drops to 0).
    std::set<std::pair<ChunkId, uint32_t>> referenced;
    for (const ChunkRef& ref : chunks) {
      if (ref.id) referenced.emplace(*ref.id, ref.length);
    }
    uint64_t total = 0;
    for (const SmallChunk& c : small) {
      total += c.data.size();
      if (c.data.size() > kMaxSmallChunkBytes || total > kMaxSmallChunksBytes) {
        return absl::InvalidArgumentError(fmt::format(
            "small chunks: {} bytes, at most {} each and {} per commit", c.data.size(),
            kMaxSmallChunkBytes, kMaxSmallChunksBytes));
      }
      if (ChunkId::Of(c.data) != c.id) {
        return absl::InvalidArgumentError(
            fmt::format("small chunk {} does not hash to its id", c.id.ToHex()));
      }
      if (referenced.count({c.id, static_cast<uint32_t>(c.data.size())}) == 0) {
        return absl::InvalidArgumentError(fmt::format(
            "small chunk {} ({} bytes) is not a chunk of the commit", c.id.ToHex(),
            c.data.size()));
      }
    }
  }
  return Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<InodeAttr> {
    for (const SmallChunk& c : small) txn.Put(txn.keys().SmallChunk(c.id), std::string(c.data));
    ASSIGN_OR_RETURN(InodeRecord * rec, txn.GetInode(ino));
    if (rec->attr.is_dir()) return PosixError(EISDIR, fmt::format("inode {} is a directory", ino));
    if (!rec->attr.is_reg()) {
      return PosixError(EINVAL, fmt::format("inode {} is not a regular file", ino));
    }
    if (rec->attr.version != expected_version) {
      return PosixError(ESTALE, fmt::format("inode {} is at version {}, not {}", ino,
                                            rec->attr.version, expected_version));
    }
    ASSIGN_OR_RETURN(StoredChunkMap old, txn.GetChunkMap(ino));
    // A chunk the old content had cut by a truncate stays marked when the new
    // content reuses it as is (see StoredChunk::truncated). Chunks the caller
    // made from bytes it had are exactly as long as their length.
    std::set<std::pair<ChunkId, uint32_t>> cut;
    for (const StoredChunk& c : old.chunks) {
      if (c.truncated) cut.emplace(*c.ref.id, c.ref.length);
    }
    StoredChunkMap fresh;
    fresh.size = size;
    fresh.chunk_size = chunk_size;
    fresh.chunks.reserve(chunks.size());
    for (const ChunkRef& ref : chunks) {
      bool truncated = ref.id && cut.count({*ref.id, ref.length}) > 0;
      fresh.chunks.push_back(StoredChunk{ref, truncated});
    }
    RETURN_IF_ERROR(ReplaceContent(txn, ino, old, fresh));
    rec->attr.size = size;
    txn.Touch(rec, /*modified=*/true);
    rec->attr.mtime = mtime;
    return rec->attr;
  });
}

absl::StatusOr<std::optional<std::string>> KvMetadataStore::GetSmallChunk(const Scope& scope,
                                                                          const ChunkId& id) {
  return backend_->Latest().Get(ScopeKeys(scope).SmallChunk(id));
}

absl::Status KvMetadataStore::DeleteSmallChunk(const Scope& scope, const ChunkId& id) {
  absl::StatusOr<bool> done = Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<bool> {
    txn.Delete(txn.keys().SmallChunk(id));
    return true;
  });
  // A scope that is gone took its small chunks with it.
  if (absl::IsNotFound(done.status())) return absl::OkStatus();
  return done.status();
}

// --- orphans ---

absl::StatusOr<uint64_t> KvMetadataStore::ExpireRequests(const Scope& scope,
                                                         Timespec older_than) {
  uint64_t total = 0;
  for (;;) {
    ASSIGN_OR_RETURN(uint64_t n, Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<uint64_t> {
      ASSIGN_OR_RETURN(int n, ExpireRequestsIn(txn, older_than.sec, kExpireBatch));
      return static_cast<uint64_t>(n);
    }, Durable::kUnlessRelaxed));
    total += n;
    if (n < static_cast<uint64_t>(kExpireBatch)) return total;
  }
}

absl::Status KvMetadataStore::ReleaseInode(const Scope& scope, InodeId ino) {
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  ASSIGN_OR_RETURN(InodeRecord * rec, txn.FindInode(ino));
                  if (rec == nullptr || rec->attr.nlink > 0) return false;
                  RETURN_IF_ERROR(txn.FreeInode(ino));
                  return true;
                })
      .status();
}

absl::StatusOr<uint64_t> KvMetadataStore::PurgeOrphans(const Scope& scope, Timespec older_than) {
  const ScopeKeys keys(scope);
  const std::string prefix = keys.OrphanPrefix();
  std::string cursor = prefix;  // Resume point: keys before it were looked at.
  uint64_t total = 0;
  // Several batches, each freeing whole inodes, so one sweep of many orphans
  // neither builds one huge batch nor holds the scope mutex for long.
  while (true) {
    bool more = false;
    absl::StatusOr<uint64_t> freed = Mutate(scope, [&](MetaTxn& txn) -> absl::StatusOr<uint64_t> {
      std::vector<InodeId> victims;
      std::unique_ptr<KvIterator> it = txn.view().NewIterator(prefix, PrefixEnd(prefix));
      for (it->Seek(cursor); it->Valid(); it->Next()) {
        if (static_cast<int>(victims.size()) == kPurgeBatch) {
          more = true;
          break;
        }
        ASSIGN_OR_RETURN(InodeId ino, ParseInoKey(it->key(), prefix));
        ASSIGN_OR_RETURN(Timespec since, DecodeTimespec(it->value()));
        cursor = std::string(it->key());
        cursor.push_back('\0');
        if (since < older_than) victims.push_back(ino);
      }
      RETURN_IF_ERROR(it->status());
      uint64_t count = 0;
      for (InodeId ino : victims) {
        ASSIGN_OR_RETURN(InodeRecord * rec, txn.FindInode(ino));
        if (rec == nullptr) {
          txn.Delete(keys.Orphan(ino));  // A stray list entry: just drop it.
          continue;
        }
        if (rec->attr.nlink > 0) {
          return absl::DataLossError(fmt::format("orphan {} has {} links", ino, rec->attr.nlink));
        }
        RETURN_IF_ERROR(txn.FreeInode(ino));
        ++count;
      }
      return count;
    });
    if (!freed.ok()) return freed.status();
    total += *freed;
    if (!more) return total;
  }
}

absl::StatusOr<std::vector<InodeId>> KvMetadataStore::ListOrphans(const Scope& scope) {
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(*snap, keys));
  if (!meta) return ScopeNotFound(scope);
  std::string prefix = keys.OrphanPrefix();
  std::unique_ptr<KvIterator> it = snap->NewIterator(prefix, PrefixEnd(prefix));
  std::vector<InodeId> orphans;
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(InodeId ino, ParseInoKey(it->key(), prefix));
    orphans.push_back(ino);
  }
  RETURN_IF_ERROR(it->status());
  return orphans;
}

// --- whole-scope scan ---

absl::Status KvMetadataStore::ScanScope(
    const Scope& scope, const std::function<absl::Status(const InodeAttr&)>& inode,
    const std::function<absl::Status(InodeId parent, std::string_view name, InodeId child)>&
        entry) {
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(*snap, keys));
  if (!meta) return ScopeNotFound(scope);
  // Two range scans of the one snapshot, each in key order: no point reads.
  std::string prefix = keys.InodePrefix();
  std::unique_ptr<KvIterator> it = snap->NewIterator(prefix, PrefixEnd(prefix));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(InodeId ino, ParseInoKey(it->key(), prefix));
    ASSIGN_OR_RETURN(InodeRecord rec, DecodeInode(ino, it->value()));
    RETURN_IF_ERROR(inode(rec.attr));
  }
  RETURN_IF_ERROR(it->status());
  prefix = keys.DentriesPrefix();
  it = snap->NewIterator(prefix, PrefixEnd(prefix));
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    ASSIGN_OR_RETURN(DentryKey key, ParseDentryKey(it->key(), prefix));
    ASSIGN_OR_RETURN(DentryValue d, DecodeDentry(it->value()));
    RETURN_IF_ERROR(entry(key.parent, key.name, d.ino));
  }
  return it->status();
}

// --- chunk references ---

absl::StatusOr<uint64_t> KvMetadataStore::ChunkRefCount(const Scope& scope, const ChunkId& id) {
  ScopeKeys keys(scope);
  ASSIGN_OR_RETURN(std::optional<std::string> raw, backend_->Latest().Get(keys.RefCount(id)));
  if (raw) return DecodeRefCount(*raw);
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(backend_->Latest(), keys));
  if (!meta) return ScopeNotFound(scope);
  return 0;
}

absl::StatusOr<std::vector<ChunkId>> KvMetadataStore::ListGarbage(const Scope& scope,
                                                                  uint32_t limit) {
  if (limit == 0 || limit > kMaxListGarbage) limit = kMaxListGarbage;
  ScopeKeys keys(scope);
  std::unique_ptr<KvView> snap = backend_->NewSnapshot();
  ASSIGN_OR_RETURN(std::optional<ScopeMeta> meta, ReadScopeMeta(*snap, keys));
  if (!meta) return ScopeNotFound(scope);
  std::string prefix = keys.GarbagePrefix();
  std::unique_ptr<KvIterator> it = snap->NewIterator(prefix, PrefixEnd(prefix));
  std::vector<ChunkId> ids;
  for (it->Seek(prefix); it->Valid() && ids.size() < limit; it->Next()) {
    ASSIGN_OR_RETURN(ChunkId id, ParseChunkIdKey(it->key(), prefix));
    ids.push_back(id);
  }
  RETURN_IF_ERROR(it->status());
  return ids;
}

absl::Status KvMetadataStore::ForgetGarbage(const Scope& scope, const std::vector<ChunkId>& ids) {
  return Mutate(scope,
                [&](MetaTxn& txn) -> absl::StatusOr<bool> {
                  for (const ChunkId& id : ids) txn.Delete(txn.keys().Garbage(id));
                  return true;
                })
      .status();
}

}  // namespace traincache::meta

namespace traincache::meta {

absl::Status KvMetadataStore::WaitReadsDurable() {
  // Relaxed: only writes that are synced before their answer are waited for
  // (content commits); namespace changes may be read before their sync.
  if (Relaxed()) return backend_->WaitDurable(last_synced_write_.load(std::memory_order_relaxed));
  return Sync();
}

absl::Status KvMetadataStore::Sync() {
  // Any write applied so far was applied before this token was taken.
  return backend_->WaitDurable(backend_->LastToken());
}

}  // namespace traincache::meta
