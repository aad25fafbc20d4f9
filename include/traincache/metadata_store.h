// MetadataStore: the namespace and content maps of every scope — inodes,
// directory entries, symlink targets, xattrs, chunk maps, chunk reference
// counts, quotas and usage.
//
// Semantics are POSIX's, checked by the store: a mutation either happens
// whole or not at all (one atomic, durable batch), and an error changes
// nothing. Errors carry the errno a POSIX caller would see (status.h):
//   NOT_FOUND/ENOENT        a missing scope, inode or name
//   ALREADY_EXISTS/EEXIST   the target name exists (create exclusive, mkdir, ...)
//   FAILED_PRECONDITION     ENOTDIR, EISDIR, ENOTEMPTY, ENODATA, EINVAL (rename
//                           of a dir into itself), ESTALE (version mismatch)
//   INVALID_ARGUMENT        malformed names, ids, chunk maps (EINVAL/ENAMETOOLONG)
//   RESOURCE_EXHAUSTED      over quota (EDQUOT), file too large (EFBIG)
//   PERMISSION_DENIED       EPERM (hard link to a directory)
//   UNIMPLEMENTED           EOPNOTSUPP (see SetAttr)
//   INTERNAL / DATA_LOSS    the backing store failed or holds garbage
// (PosixError's mapping; xattr calls also give ERANGE/E2BIG as INVALID_ARGUMENT,
// EMLINK is FAILED_PRECONDITION.)
// Inputs are validated (names with ValidateName, chunk maps with
// ValidateChunkMapShape) by the store itself, so every caller gets the checks.
//
// Versions: every inode has a version that strictly increases on every change
// of its content or attributes (a directory's on every change of its entries).
//
// Unlinked-but-open files: when nlink reaches 0 a regular file's inode and
// content are kept on the scope's orphan list until ReleaseInode (last close
// seen by the node) or PurgeOrphans (sweep) removes them. Until then the
// orphan still counts in ScopeUsage (bytes and inodes), like an open
// unlinked file on a local disk. Symlinks are freed at their last unlink.
//
// A file holds at most kMaxFileChunks (src/meta/key_codec.h: 2^21) chunks;
// bigger sizes are EFBIG.
//
// Thread-safe: all methods may be called concurrently.
#ifndef TRAINCACHE_METADATA_STORE_H_
#define TRAINCACHE_METADATA_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache {

// Flags of Rename, as in renameat2(2).
inline constexpr uint32_t kRenameNoReplace = 1;  // RENAME_NOREPLACE
inline constexpr uint32_t kRenameExchange = 2;   // RENAME_EXCHANGE

// Flags of SetXattr, as in setxattr(2).
inline constexpr uint32_t kXattrCreate = 1;   // XATTR_CREATE
inline constexpr uint32_t kXattrReplace = 2;  // XATTR_REPLACE

struct CreateResult {
  InodeAttr attr;
  bool created = false;  // false: the name existed and exclusive was false.
  // When created: the directory's attributes right after the create (new
  // mtime, ctime, version), so a node can keep them instead of asking again.
  std::optional<InodeAttr> parent;
  bool operator==(const CreateResult&) const = default;
};

struct UnlinkResult {
  InodeId ino = 0;
  uint32_t nlink = 0;     // Links left after the unlink.
  bool orphaned = false;  // nlink hit 0 and the inode waits on the orphan list.
  bool operator==(const UnlinkResult&) const = default;
};

// Names one call of a namespace mutation so that copies of it (a client
// re-sending after its connection died) are applied at most once. `client`
// is unique per client instance (never reused after a restart), `seq` counts
// that client's calls; every copy of one call carries the same pair. An
// empty `client` means no id: the call is applied every time it arrives.
struct RequestId {
  std::string client;
  uint64_t seq = 0;
  bool empty() const { return client.empty(); }
};

// How long a store remembers the outcome of a request with an id. A copy
// arriving later is applied as a new call (ENOENT, EEXIST, ...). Clients
// re-send only within their outage timeout (the node's default: 60 s), so
// ten times that covers generous timeouts while bounding the records to
// what ten minutes of mutations write (~100 bytes each).
inline constexpr int64_t kRequestRecordTtlSeconds = 600;
// Longest RequestId::client a store accepts (INVALID_ARGUMENT beyond).
inline constexpr size_t kMaxRequestClientBytes = 256;

struct ReadDirPage {
  std::vector<DirEntry> entries;  // Sorted by name; "." and ".." not included.
  bool more = false;              // More entries follow the last one.
};

struct ScopeInfo {
  Scope scope;
  uint64_t generation = 0;  // Random, made when the scope was created.
  ScopeUsage usage;
};

// Who asks: the owner of new inodes.
struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

class MetadataStore {
 public:
  virtual ~MetadataStore() = default;

  // --- scopes ---
  // Returns the scope, creating it (root directory 0755 root:root, quota
  // `quota_if_created`, in the same batch) if `create` and it does not exist.
  // NOT_FOUND if absent and !create.
  virtual absl::StatusOr<ScopeInfo> OpenScope(const Scope& scope, bool create,
                                              uint64_t quota_if_created = kDefaultQuotaBytes) = 0;
  // Removes every key of the scope: inodes, entries, maps, refcounts, quota.
  // NOT_FOUND if it does not exist.
  virtual absl::Status DeleteScope(const Scope& scope) = 0;
  virtual absl::StatusOr<std::vector<Scope>> ListScopes() = 0;
  virtual absl::StatusOr<ScopeUsage> GetUsage(const Scope& scope) = 0;
  virtual absl::Status SetQuota(const Scope& scope, uint64_t quota_bytes) = 0;

  // --- namespace ---
  // Request ids. Create, Mkdir, Symlink, Link, Unlink, Rmdir, Rename,
  // SetXattr and RemoveXattr take an optional RequestId (see there). With
  // one, the store writes the call's outcome in the same atomic batch as its
  // change, and a call whose id is recorded returns that outcome again and
  // changes nothing. A refusal is not recorded: it changed nothing, so
  // applying a copy later is the same as the call arriving later. Records
  // are dropped kRequestRecordTtlSeconds after they were written, a few at a
  // time with later mutations of the scope (and by ExpireRequests).
  // (The default argument is the same on every override: callers without
  // an id need not know of them.)
  virtual absl::StatusOr<InodeAttr> Lookup(const Scope& scope, InodeId parent,
                                           std::string_view name) = 0;
  virtual absl::StatusOr<InodeAttr> GetAttr(const Scope& scope, InodeId ino) = 0;
  // Applies the set fields; a size change rewrites the chunk map (prefix of
  // the last chunk, holes past the old end) and counts against the quota.
  // `mode` changes the permission bits only (the type bits are ignored).
  // ctime and the version change on any set field; mtime also when the size
  // changes (unless `mtime` is given). An empty request changes nothing.
  // Size: EISDIR on directories, EINVAL on other non-regular files, EFBIG
  // past the chunk limit. EOPNOTSUPP when growing a file whose last chunk a
  // truncate cut mid-chunk (raising that chunk's length would bring back the
  // cut bytes instead of zeros): the caller commits the content with a fresh
  // last chunk (CommitContent) and retries.
  virtual absl::StatusOr<InodeAttr> SetAttr(const Scope& scope, InodeId ino,
                                            const SetAttrRequest& req) = 0;
  // Entries with name > `after` (empty: from the start), at most `limit`
  // (capped at kMaxReadDirEntries; 0 means the cap). `plus` fills
  // DirEntry::attr. Names sort bytewise (unsigned).
  virtual absl::StatusOr<ReadDirPage> ReadDir(const Scope& scope, InodeId dir,
                                              std::string_view after, uint32_t limit,
                                              bool plus) = 0;
  // Creates a regular file (mode's permission bits; type forced to S_IFREG).
  // If the name exists: ALREADY_EXISTS when `exclusive`, else returns the
  // existing inode with created=false, changing nothing (EISDIR if it is a
  // directory; any other type, a symlink too, is returned as is).
  virtual absl::StatusOr<CreateResult> Create(const Scope& scope, InodeId parent,
                                              std::string_view name, uint32_t mode,
                                              const Caller& caller, bool exclusive,
                                              const RequestId& request = {}) = 0;
  virtual absl::StatusOr<InodeAttr> Mkdir(const Scope& scope, InodeId parent,
                                          std::string_view name, uint32_t mode,
                                          const Caller& caller, const RequestId& request = {}) = 0;
  virtual absl::StatusOr<InodeAttr> Symlink(const Scope& scope, InodeId parent,
                                            std::string_view name, std::string_view target,
                                            const Caller& caller,
                                            const RequestId& request = {}) = 0;
  virtual absl::StatusOr<std::string> ReadLink(const Scope& scope, InodeId ino) = 0;
  // Adds a name for a non-directory inode (EPERM for directories).
  virtual absl::StatusOr<InodeAttr> Link(const Scope& scope, InodeId ino, InodeId new_parent,
                                         std::string_view new_name,
                                         const RequestId& request = {}) = 0;
  // Removes a non-directory name (EISDIR for directories). The last link of
  // a regular file orphans it (see the top of this file).
  virtual absl::StatusOr<UnlinkResult> Unlink(const Scope& scope, InodeId parent,
                                              std::string_view name,
                                              const RequestId& request = {}) = 0;
  // Removes an empty directory (ENOTDIR, ENOTEMPTY).
  virtual absl::Status Rmdir(const Scope& scope, InodeId parent, std::string_view name,
                             const RequestId& request = {}) = 0;
  // rename(2)/renameat2(2): replaces the target atomically (a file over a
  // file, a dir over an empty dir), or fails with EEXIST (NOREPLACE), or swaps
  // both (EXCHANGE). EINVAL when a directory would move into itself.
  // Returns the inode the target replaced, if any (ino 0: none; always 0 for
  // EXCHANGE): for a file, its links left and whether it was orphaned; for a
  // replaced empty directory (freed), nlink 0 and orphaned false. NOREPLACE
  // onto the source's own name is EEXIST, as in Linux; otherwise two names
  // of one inode (or one name twice) make rename a successful no-op.
  // Flags other than one of NOREPLACE/EXCHANGE are EINVAL.
  virtual absl::StatusOr<UnlinkResult> Rename(const Scope& scope, InodeId parent,
                                              std::string_view name, InodeId new_parent,
                                              std::string_view new_name, uint32_t flags,
                                              const RequestId& request = {}) = 0;

  // --- xattrs ---
  // Names are 1..kMaxXattrNameBytes bytes (ERANGE otherwise, as Linux; EINVAL
  // if they hold a NUL), values at most kMaxXattrValueBytes (E2BIG). A change
  // moves the inode's ctime and version. ListXattr is sorted by name.
  virtual absl::StatusOr<std::string> GetXattr(const Scope& scope, InodeId ino,
                                               std::string_view name) = 0;  // ENODATA
  virtual absl::Status SetXattr(const Scope& scope, InodeId ino, std::string_view name,
                                std::string_view value, uint32_t flags,
                                const RequestId& request = {}) = 0;
  virtual absl::StatusOr<std::vector<std::string>> ListXattr(const Scope& scope,
                                                             InodeId ino) = 0;
  virtual absl::Status RemoveXattr(const Scope& scope, InodeId ino, std::string_view name,
                                   const RequestId& request = {}) = 0;  // ENODATA

  // --- content ---
  // The content of regular file `ino` (EISDIR for directories, EINVAL for
  // other types), read together with the inode: `version` is the inode's
  // version now, so it is the `expected_version` of a following commit (and
  // any change of the inode, attributes included, makes that commit ESTALE).
  virtual absl::StatusOr<ChunkMap> GetChunkMap(const Scope& scope, InodeId ino) = 0;
  // Replaces the content of regular file `ino` with `chunks` (size, mtime),
  // only if its version is still `expected_version` (else ESTALE, nothing
  // changed). Adds references to the new chunks, drops the old ones (chunks
  // whose count reaches 0 go to the garbage list). RESOURCE_EXHAUSTED/EDQUOT
  // if the scope's usage would exceed its quota. The caller has checked the
  // chunks exist in the chunk store. Allowed on an orphan (an open unlinked
  // file being closed). The returned attr's version is the new content's.
  virtual absl::StatusOr<InodeAttr> CommitContent(const Scope& scope, InodeId ino,
                                                  uint64_t expected_version, uint64_t size,
                                                  uint32_t chunk_size,
                                                  const std::vector<ChunkRef>& chunks,
                                                  Timespec mtime) = 0;

  // Small chunks kept in the metadata store itself. A small file's content
  // then needs no chunk-store file (write, fsync, rename, directory fsyncs):
  // its bytes are written in the commit's one atomic batch and are durable
  // exactly when the commit is, which is also what keeps "chunk bytes before
  // the metadata that references them".
  struct SmallChunk {
    ChunkId id;
    std::string_view data;  // SHA-256(data) == id; at most kMaxSmallChunkBytes.
  };
  // CommitContent that also stores `small` (each one a chunk of `chunks`, at
  // most kMaxSmallChunksBytes in all). INVALID_ARGUMENT (nothing changed) if
  // one is too large, does not hash to its id or is not in `chunks`. The
  // caller has checked the other chunks exist. Default: UNIMPLEMENTED.
  virtual absl::StatusOr<InodeAttr> CommitContentWithSmallChunks(
      const Scope& scope, InodeId ino, uint64_t expected_version, uint64_t size,
      uint32_t chunk_size, const std::vector<ChunkRef>& chunks, Timespec mtime,
      const std::vector<SmallChunk>& small) {
    return absl::UnimplementedError("this metadata store keeps no small chunks");
  }
  // The bytes of small chunk `id` (nullopt if this store does not hold it),
  // as stored: the caller verifies them. Default: nullopt.
  virtual absl::StatusOr<std::optional<std::string>> GetSmallChunk(const Scope& scope,
                                                                   const ChunkId& id) {
    return std::optional<std::string>();
  }
  // Drops small chunk `id` (the collector, once nothing references it). OK
  // if absent. Default: OK.
  virtual absl::Status DeleteSmallChunk(const Scope& scope, const ChunkId& id) {
    return absl::OkStatus();
  }

  // Drops the request records of the scope written before `older_than`.
  // Returns how many. Default: 0 (a store that keeps none).
  virtual absl::StatusOr<uint64_t> ExpireRequests(const Scope& scope, Timespec older_than) {
    return uint64_t{0};
  }

  // --- orphans ---
  // Frees an orphan (nlink 0) inode and its chunk references. OK and no-op
  // if the inode still has links or is already gone.
  virtual absl::Status ReleaseInode(const Scope& scope, InodeId ino) = 0;
  // Frees every orphan that became one before `older_than`. Returns how many.
  virtual absl::StatusOr<uint64_t> PurgeOrphans(const Scope& scope, Timespec older_than) = 0;
  virtual absl::StatusOr<std::vector<InodeId>> ListOrphans(const Scope& scope) = 0;

  // --- chunk references (for the collector) ---
  // References to `id` from live and orphan inodes of the scope (0 if none).
  virtual absl::StatusOr<uint64_t> ChunkRefCount(const Scope& scope, const ChunkId& id) = 0;
  // Chunks whose count reached 0 (in id order), at most `limit` (0, or more
  // than 65536: 65536). A chunk referenced again leaves the list. DeleteScope
  // drops the list with the scope: the caller deletes that scope's chunks.
  virtual absl::StatusOr<std::vector<ChunkId>> ListGarbage(const Scope& scope,
                                                           uint32_t limit) = 0;
  // Drops `ids` from the garbage list (after the collector deleted them).
  virtual absl::Status ForgetGarbage(const Scope& scope, const std::vector<ChunkId>& ids) = 0;

  // --- whole-scope scan ---
  // Reads a whole scope from one snapshot (so it sees the tree as it was at
  // one instant): first `inode` for every inode record, in inode number order
  // (orphans included, with nlink 0), then `entry` for every directory entry
  // (parent, name, child inode), by parent inode number and then by name.
  // Both ranges are read sequentially: the cost is linear in the size of the
  // scope whatever the order its inodes were made in, where ReadDir with
  // `plus` per directory reads each child's inode at random (one scope with
  // a million files interleaved across directories took minutes that way).
  // Use it to walk a whole scope (Admin.Summarize), not to list a directory.
  // The store keeps nothing per entry; the callbacks decide what to keep. A
  // callback's error stops the scan and is returned; callbacks must not call
  // the store (the in-memory twin holds its reader lock throughout, so
  // mutations of any scope wait for the scan; RocksDB only pins the snapshot).
  // NOT_FOUND if the scope does not exist; DATA_LOSS on a malformed record.
  virtual absl::Status ScanScope(
      const Scope& scope, const std::function<absl::Status(const InodeAttr&)>& inode,
      const std::function<absl::Status(InodeId parent, std::string_view name, InodeId child)>&
          entry) = 0;

  // --- durability ---
  // Reads may see a mutation of another thread before its batch is durable
  // (mutations share syncs). Returns once everything any read so far could
  // have seen is durable: call it before handing read results to someone who
  // will act on them across a crash. Cheap when nothing is pending. Under
  // MetadataSync::kContentCommits it waits only for the mutations that are
  // synced before they return (content commits, ...): reads may show
  // namespace changes that are not durable yet.
  virtual absl::Status WaitReadsDurable() = 0;
  // Returns once every mutation applied so far is durable (fsync, fsyncdir).
  // Cheap when nothing is pending.
  virtual absl::Status Sync() = 0;
};

// When a mutation of the RocksDB store is durable.
enum class MetadataSync {
  // Every mutation, when it returns.
  kEveryChange,
  // Content commits (CommitContent*), scope, quota and orphan changes when
  // they return, and every mutation applied before them with them. Namespace
  // and attribute changes (create, mkdir, symlink, link, unlink, rmdir,
  // rename, setattr, xattrs) are applied and visible at once and become
  // durable with the next synced mutation or Sync. Written to the OS before
  // they return, so a crash of the server process loses nothing; a crash of
  // the machine may lose those not yet synced, as a local file system loses
  // what was not fsynced. Numbers handed out are never handed out again for
  // something else after such a crash: inode numbers are reserved in blocks
  // by a synced write, and versions restart above every earlier one (an
  // epoch per process, see key_codec.h ScopeMeta). Reads never show a content
  // commit whose sync is still running.
  kContentCommits,
};

// Creates the in-memory twin (tests, fakes). Never fails.
std::unique_ptr<MetadataStore> NewMemoryMetadataStore();

// Opens (creating if needed) the RocksDB store in directory `path`. Mutations
// are durable as `sync` says (WAL synced; concurrent mutations share one
// sync). INTERNAL naming the path if RocksDB cannot open it, e.g. because
// another process holds its lock.
absl::StatusOr<std::unique_ptr<MetadataStore>> OpenRocksMetadataStore(
    const std::string& path, MetadataSync sync = MetadataSync::kEveryChange);

}  // namespace traincache

#endif  // TRAINCACHE_METADATA_STORE_H_
