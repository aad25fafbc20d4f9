// Filesystem: the node's core of one mounted scope — what the thin FUSE
// adapter (src/fuse) calls, one method per low-level FUSE callback, and what
// unit tests drive without FUSE. One instance per mounted scope; any number of
// instances (nodes) may share one ClusterClient, ChunkFetcher and NodeTier.
//
// Meaning (DESIGN.md, "Node read path", "Node write path and consistency"):
//  - Inode numbers are the server's. An inode table entry lives while the
//    kernel holds lookups on it (Lookup, Create, Mkdir, ... add one; Forget
//    drops n) or a handle is open on it. Attributes are cached for
//    Options::attr_ttl, or for Options::metadata_ttl while the scope's change
//    feed is followed (below).
//  - The change feed (node/metadata_watcher.h drives it): while the node
//    follows the server's stream of what other nodes change, entries and
//    attributes are cached (here and by the kernel) for metadata_ttl, and
//    each change drops what it names (ApplyChanges, whose result the watcher
//    hands to the kernel). A reply's cache times come from a ticket taken
//    before its server call (CacheTicket): long only if the feed was followed
//    all along and no change arrived meanwhile, as one that raced the call
//    may not be reflected in what the call returned. While the feed is not
//    followed, attr_ttl/entry_ttl as before; when it breaks or falls behind,
//    everything this node and its kernel cache is dropped. The names the
//    kernel was handed are remembered (per inode, while it is in the table)
//    for that.
//  - Close-to-open consistency: Open always asks the server for the file's
//    current content (one GetChunkMap), so an open that starts after a close
//    on another node sees that version whole. A handle reads the (version,
//    chunk map) it opened, through the ChunkFetcher, so it never mixes two
//    versions; once this node commits a newer version of the inode, every
//    handle of this node reads that (one node is coherent, as a local disk).
//  - Writes go to a per-inode sparse staging file (<staging_dir>/<scope
//    kind>/<scope id>/<ino>) plus the set of byte ranges written since the
//    base version: copy-on-write at chunk granularity. While an inode has a
//    write state, every read of it on this node is served from the staged
//    view (written ranges over the base version, zeros past a truncation).
//    Flush, Fsync and the last Release of a writer commit: each changed chunk
//    is rebuilt whole, hashed, uploaded if the server lacks it (HasChunks
//    first), and ONE CommitContent conditional on the base version publishes
//    the file. Unchanged chunks keep their refs, so a partial overwrite
//    uploads only the chunks it touched. Hashing and uploading run on the
//    ChunkUploader's threads (chunk_uploader.h), bounded in bytes, while the
//    commit reads the next chunks.
//  - Background upload: a chunk a writer has finished (every byte of it
//    written since the base, and a write ended at or past its end) is handed
//    to the ChunkUploader at once, while the writer goes on; the commit then
//    takes its ref instead of sending it again. Any later change that touches
//    the chunk (a write into it, a truncate below its end) drops that upload
//    first, so the commit redoes the chunk from the staged bytes: a ref is
//    used only for bytes nothing changed since they were read. A background
//    upload that failed is redone by the commit, whose error is close's.
//    Uploaded chunks that end up unused (rewritten, the file unlinked, the
//    commit refused) are unreferenced: the server's collector removes them.
//    A commit that the server refuses because a chunk it was told about is
//    gone (ENOENT: collected meanwhile, e.g. a chunk the server already had
//    with no reference left, or an upload older than the collector's grace)
//    sends the missing chunks again and commits once more.
//  - Crash safety: next to each staging file, <ino>.journal records the base
//    map and every staged change (filesystem.cc), so staged data that a
//    crashed daemon never committed is committed by the next Init (same
//    conditional commit and rebase rule; what would publish a mix is logged
//    and left on disk for an operator).
//  - Conflicts: if another node committed first (ESTALE), the commit is
//    redone on the new version only when that cannot publish a mix: the
//    staged content does not depend on the base (truncated to 0, or every
//    byte below the base's end rewritten), or the server's content is still
//    the base's (only attributes changed: chmod, utimens, xattrs). Otherwise
//    the flush/fsync fails with EIO and nothing is published.
//  - Truncate (SetAttr size) of an inode open for write on this node is
//    staged; otherwise it goes to the server.
//  - An unlinked (orphaned) file stays readable and writable through its open
//    handles; the last Release tells the server (ReleaseInode).
//
// Errors: absl::Status with the errno kept (traincache/status.h); the adapter
// replies ToErrno(status). Server errors pass through unchanged (ENOENT,
// EEXIST, ENOTEMPTY, EDQUOT, ...). EBADF for an unknown handle or a write
// through a read-only one; EIO for a commit that lost a conflict; staging
// disk errors carry the errno of the failed system call (ENOSPC, EIO).
// ESTALE when Open or GetAttr finds the inode gone from the server (the
// kernel then looks the name up again). While the server is unreachable
// (UNAVAILABLE after the client's outage timeout), GetAttr of an inode this
// node knows answers its last known attributes; other calls fail with EIO.
//
// Thread-safety: every method may be called concurrently (the adapter runs a
// multi-threaded session loop). Lock order: Inode::mu before Filesystem::mu_;
// mu_ is a leaf (held only for table updates, never across an RPC or I/O).
// Inode::mu is held across a commit's RPCs, so writes and staged reads of that
// one inode wait for its commit; other inodes do not. The ChunkUploader's
// locks come after Inode::mu and never before any lock of this class; its
// threads take no lock of this class (a commit waiting for its uploads, or
// for room in the budget, cannot deadlock with them).
#ifndef TRAINCACHE_NODE_FILESYSTEM_H_
#define TRAINCACHE_NODE_FILESYSTEM_H_

#include <sys/statvfs.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "node/chunk_fetcher.h"
#include "node/chunk_uploader.h"
#include "traincache/cluster_client.h"
#include "traincache/metadata_store.h"
#include "traincache/node_tier.h"
#include "traincache/scope.h"
#include "traincache/types.h"

namespace traincache::node {

struct FilesystemOptions {
  // Root of the write staging area (node NVMe). Required.
  std::string staging_dir;
  // Chunk size of files this node writes from scratch (an existing file keeps
  // its chunk size unless truncated to 0). A power of two in
  // [kMinChunkSize, kMaxChunkSize].
  uint32_t chunk_size = kDefaultChunkSize;
  // How long attributes and entries may be served from cache (also what the
  // adapter should tell the kernel).
  std::chrono::milliseconds attr_ttl{1000};
  std::chrono::milliseconds entry_ttl{1000};
  // Both, while the change feed is followed (SetFeedHealthy). 0: never
  // longer than attr_ttl/entry_ttl.
  std::chrono::milliseconds metadata_ttl{30'000};
  // Init creates the scope on the server if it does not exist.
  bool create_scope = true;
  // Finished chunks are uploaded while the file is still being written
  // (see the top of this file); false: everything is sent by the commit.
  bool background_upload = true;
  // Threads that hash and upload chunks (background uploads and commits).
  size_t upload_threads = 4;
  // Bytes of chunks queued or being uploaded at once, all files of this
  // scope together: bounds the daemon's memory for big writes
  // (ChunkUploader::Options::budget_bytes).
  uint64_t upload_budget_bytes = 32ull << 20;
  // Open file and directory handles are numbered from here on. A process
  // that takes over a FUSE connection from an earlier one starts past every
  // number that one may have handed out (fuse/handover_state.h), so the
  // kernel's old handles are never mistaken for new ones.
  uint64_t first_handle = 1;
};

struct CreateReply {
  InodeAttr attr;
  uint64_t fh = 0;
};

struct OpenReply {
  uint64_t fh = 0;
  // The kernel may keep the pages it holds for this inode: they belong to
  // the version this open sees (FOPEN_KEEP_CACHE).
  bool keep_cache = false;
  // The kernel's cached attributes of the inode may predate this content
  // (another node committed since): the adapter tells the kernel to drop
  // them before it replies, so that size and mtime match what is read.
  bool attr_stale = false;
  // The content version the handle reads (its chunk map's).
  uint64_t version = 0;
};

// One readdir entry handed to the adapter's callback.
struct DirListEntry {
  std::string_view name;
  InodeId ino = 0;
  uint32_t type = 0;                // S_IFMT bits.
  const InodeAttr* attr = nullptr;  // Plus only; nullptr for "." and "..":
                                    // reply without an entry (no lookup).
  uint64_t next_offset = 0;         // The offset that resumes after it.
  uint64_t cache_ticket = 0;        // Of the listing (taken at OpenDir).
};

// What the kernel must drop after a change-feed message (the adapter's
// notifications, see node/kernel_cache.h).
struct KernelInvalidation {
  std::vector<std::pair<InodeId, std::string>> entries;  // (directory, name)
  std::vector<InodeId> inodes;                           // Attributes only.
  bool empty() const { return entries.empty() && inodes.empty(); }
};

struct FilesystemStats {
  uint64_t commits = 0;           // CommitContent calls that succeeded.
  uint64_t commit_conflicts = 0;  // Commits failed with EIO after ESTALE.
  uint64_t commit_rebases = 0;    // ESTALE answered by re-committing.
  uint64_t uploaded_chunks = 0;   // Chunks sent to the server (with commits or not).
  uint64_t uploaded_bytes = 0;
  // Of those, sent in the background while the file was being written.
  uint64_t background_uploaded_chunks = 0;
  uint64_t background_uploaded_bytes = 0;
  // Chunk refs a commit took from a background upload (not sent again).
  uint64_t background_used_chunks = 0;
  // Background uploads a later change of their chunk made useless.
  uint64_t background_dropped_chunks = 0;
  // Commits that sent chunks again after the server found one missing.
  uint64_t commit_resends = 0;
  // Most bytes the uploader held at once (<= upload_budget_bytes, or one
  // chunk when that is larger).
  uint64_t upload_peak_bytes = 0;
};

class Filesystem {
 public:
  // `client`, `fetcher` and `tier` must outlive the Filesystem.
  Filesystem(Scope scope, ClusterClient* client, ChunkFetcher* fetcher, NodeTier* tier,
             FilesystemOptions options);
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  // Opens the scope (creating it if options.create_scope) and checks the
  // options. Call once before anything else. Returns the root's attributes.
  // Then commits what a crashed (or stopped) earlier run of this scope left
  // staged under staging_dir; what cannot be committed without publishing a
  // mix (another node committed meanwhile) is logged and left there.
  absl::StatusOr<InodeAttr> Init();

  const Scope& scope() const { return scope_; }
  const FilesystemOptions& options() const { return options_; }
  uint64_t generation() const { return generation_; }
  FilesystemStats Stats() const;

  // --- inodes ---
  // Adds one lookup to the returned inode.
  absl::StatusOr<InodeAttr> Lookup(InodeId parent, std::string_view name);
  // Drops `n` lookups; the entry goes when none remain and no handle is open.
  void Forget(InodeId ino, uint64_t n);
  absl::StatusOr<InodeAttr> GetAttr(InodeId ino);
  // Size changes of an inode open for write on this node are staged (and
  // committed with its data); everything else goes to the server, after
  // committing staged data so a given mtime is not overwritten later. `fh`:
  // the handle of an ftruncate/futimens, if any.
  absl::StatusOr<InodeAttr> SetAttr(InodeId ino, const SetAttrRequest& req,
                                    std::optional<uint64_t> fh = std::nullopt);

  // --- namespace (each adds one lookup to the inode it returns) ---
  absl::StatusOr<InodeAttr> Mkdir(InodeId parent, std::string_view name, uint32_t mode,
                                  const Caller& caller);
  // `flags` are open(2)'s: O_EXCL makes it exclusive (EEXIST if the name
  // exists), O_TRUNC truncates an existing file (staged), O_APPEND appends.
  absl::StatusOr<CreateReply> Create(InodeId parent, std::string_view name, uint32_t mode,
                                     int flags, const Caller& caller);
  absl::StatusOr<InodeAttr> Symlink(InodeId parent, std::string_view name, std::string_view target,
                                    const Caller& caller);
  absl::StatusOr<InodeAttr> Link(InodeId ino, InodeId new_parent, std::string_view new_name);
  absl::StatusOr<std::string> ReadLink(InodeId ino);
  absl::Status Unlink(InodeId parent, std::string_view name);
  absl::Status Rmdir(InodeId parent, std::string_view name);
  // `flags`: 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
  absl::Status Rename(InodeId parent, std::string_view name, InodeId new_parent,
                      std::string_view new_name, uint32_t flags);

  // --- files ---
  absl::StatusOr<OpenReply> Open(InodeId ino, int flags);
  // Up to `size` bytes at `offset` (fewer at EOF).
  absl::StatusOr<std::string> Read(InodeId ino, uint64_t fh, uint64_t offset, size_t size);
  // Returns the bytes written (all of `data`). O_APPEND handles write at the
  // staged end whatever `offset` says.
  absl::StatusOr<size_t> Write(InodeId ino, uint64_t fh, uint64_t offset, std::string_view data);
  // close(2) of one descriptor: commits staged data. The commit's error
  // (EIO after a lost conflict, EDQUOT, ...) is close's.
  absl::Status Flush(InodeId ino, uint64_t fh);
  // fsync(2): commits what is staged (a commit is durable, with every change
  // made before it); with nothing to commit, asks the server to sync, as the
  // file's create and attribute changes may not be durable yet (MetadataSync).
  absl::Status Fsync(InodeId ino, uint64_t fh, bool datasync);
  // fsync(2) of a directory: every change so far (names in it) made durable.
  absl::Status FsyncDir(InodeId ino);
  // FUSE passthrough (DESIGN.md, "Node tier"): for read-only handle `fh`
  // of `ino`, when this node stages no write of the inode and the version
  // the handle opened is complete in the node tier, lends out that version's
  // image (open, pinned against eviction) for the kernel to read directly.
  // Such a handle then keeps reading the version it opened even after this
  // node commits a newer one (as handles on other nodes do). NOT_FOUND when
  // the handle does not qualify; EBADF for an unknown handle.
  absl::StatusOr<std::unique_ptr<ImageLease>> LeaseImage(InodeId ino, uint64_t fh);
  // True if handle `fh` is read-only and reads the version it opened (no
  // write staged on this node, no newer version committed here): what
  // passthrough needs of every handle that reads an image.
  bool ReadsFixedVersion(InodeId ino, uint64_t fh);
  // After this node was granted a lock on `ino`: what another node committed
  // before it released that lock becomes what this node's handles read, as
  // NFS revalidates a file when a lock is taken (close-to-open alone misses
  // the common open, lock, read, write, close). One call to the server.
  // Returns true if the content changed, so the kernel's pages and
  // attributes of the inode must go; staged writes here are left alone (the
  // commit decides).
  absl::StatusOr<bool> RevalidateUnderLock(InodeId ino);
  // The image of version `version` of `ino` may have been written through
  // the kernel (a writer's shared mmap of a passthrough backing file): the
  // tier checks its chunks again before it serves them.
  void DistrustImage(InodeId ino, uint64_t version);
  // The handle is gone. The last writer's release commits what is still
  // staged (errors are logged: nobody is left to tell); the last handle of an
  // unlinked file releases it on the server.
  void Release(InodeId ino, uint64_t fh);

  // --- directories ---
  // Snapshots the listing ("." and ".." first); offsets of the handle are
  // indexes into it, stable for the life of the handle.
  absl::StatusOr<uint64_t> OpenDir(InodeId ino);
  // Calls `add` for entries from `offset` on until it returns false (the
  // reply buffer is full) or the listing ends. With `plus`, each accepted
  // entry other than "." and ".." counts one lookup.
  absl::Status ReadDir(uint64_t fh, uint64_t offset, bool plus,
                       const std::function<bool(const DirListEntry&)>& add);
  void ReleaseDir(uint64_t fh);

  // --- xattrs (flags as setxattr(2)) ---
  absl::StatusOr<std::string> GetXattr(InodeId ino, std::string_view name);
  absl::Status SetXattr(InodeId ino, std::string_view name, std::string_view value, uint32_t flags);
  // The names, each followed by a NUL (listxattr(2)'s buffer).
  absl::StatusOr<std::string> ListXattr(InodeId ino);
  absl::Status RemoveXattr(InodeId ino, std::string_view name);

  // Blocks of 4 KiB: total = quota, free = quota - used.
  absl::StatusOr<struct statvfs> StatFs();

  // --- the scope as a whole (the node daemon) ---
  // Commits every staged change of this scope now, as an fsync of each
  // dirty file would (a job's detach waits for its writes this way), then
  // makes every change durable. Returns the first error; the other inodes
  // are still tried.
  absl::Status CommitAll();
  // The scope was deleted on the server: from now on every call answers
  // ENOENT (never data of the old scope), and what was staged is discarded.
  // Returns the inodes the kernel may hold (attributes, pages) so the
  // adapter can invalidate them. Safe to call more than once.
  std::vector<InodeId> MarkScopeDeleted();
  bool scope_deleted() const { return deleted_.load(std::memory_order_acquire); }

  // --- cache times under the change feed (see the top) ---
  // Take before the call whose result is replied to the kernel; then
  // EntryTtl/AttrTtl(ticket) is how long the kernel may keep it.
  uint64_t CacheTicket() const { return cache_state_.load(); }
  std::chrono::milliseconds EntryTtl(uint64_t ticket) const;
  std::chrono::milliseconds AttrTtl(uint64_t ticket) const;
  // The feed is followed from now on (true: the watcher got the stream's
  // first message), or not any more (false: it broke). Going down drops what
  // this node caches and returns every name and inode the kernel may hold
  // with a long time; going up drops this node's attributes cached meanwhile
  // (for attr_ttl only, they may predate the stream) and returns nothing.
  KernelInvalidation SetFeedHealthy(bool healthy);
  bool feed_healthy() const { return (cache_state_.load() & 1) != 0; }
  // Applies one feed message: drops this node's attributes of what it
  // names (a directory's with each of its entries) and returns what the
  // kernel must drop, limited to names and inodes it was handed. `lost`:
  // everything, as SetFeedHealthy(false) but staying healthy.
  KernelInvalidation ApplyChanges(const ScopeChanges& changes);
  // Those of `inodes` the kernel may hold (in the table).
  std::vector<InodeId> KnownInodes(const std::vector<InodeId>& inodes);

 private:
  struct Inode;
  struct WriteState;
  struct Handle;
  struct DirHandle;
  using Clock = std::chrono::steady_clock;

  // Table helpers (take mu_).
  std::shared_ptr<Inode> FindInode(InodeId ino);
  // Finds or adds the entry and pins it (counted as an open in progress).
  std::shared_ptr<Inode> GetOrAddInode(InodeId ino);
  // Adds one lookup and caches `attr` (fetched after `ticket` was taken)
  // as the entry `name` of `parent`; returns `attr` with staged overlays.
  InodeAttr AddLookup(const InodeAttr& attr, uint64_t ticket, InodeId parent,
                      std::string_view name);
  // Caches `attr`, fetched after `ticket` was taken, if its inode is in the table.
  void CacheAttr(const InodeAttr& attr, uint64_t ticket);
  // When attributes fetched after `ticket` may be served until. Requires mu_.
  Clock::time_point ExpiryLocked(uint64_t ticket) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The name index: which (directory, name) entries the kernel was handed,
  // for each inode of the table. Require mu_.
  void AddNameLocked(InodeId parent, std::string_view name, InodeId ino)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the entry; returns the inode it named (0: none known).
  InodeId DropNameLocked(InodeId parent, std::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops every cached attribute and name; returns them for the kernel.
  KernelInvalidation DropAllLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops what is cached of `inode`'s attributes (and xattrs known absent).
  void DropAttrLocked(Inode& inode) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether GetXattr may answer ENODATA for `name` without asking; and
  // noting that the server said so, unless InvalidateAttr ran since
  // `generation` was read (XattrKnownAbsent sets it).
  bool XattrKnownAbsent(InodeId ino, std::string_view name, uint64_t* generation);
  void NoteXattrAbsent(InodeId ino, std::string_view name, uint64_t generation);
  // Whether `inode` keeps its cached attributes over `attr`: they are fresh
  // and of a newer version.
  bool KeepsNewerLocked(const Inode& inode, const InodeAttr& attr) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InvalidateAttr(InodeId ino);
  // Applies the staged size/mtime of `ino`, if any. Requires mu_.
  void OverlayLocked(InodeAttr& attr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Handle> FindHandle(uint64_t fh);
  // FindHandle for a request through the handle (read, write, flush,
  // fsync): nullptr unless it is a handle of `ino`; notes the handle used.
  std::shared_ptr<Handle> FindUsedHandle(InodeId ino, uint64_t fh);
  static void Settled(Inode& inode, uint64_t fh);
  absl::Status CheckName(std::string_view name) const;
  // ENOENT once MarkScopeDeleted ran.
  absl::Status CheckLive() const;
  // <staging_dir>/<kind>/<id>: this scope's staging folder.
  std::string StagingDir() const;
  // Commits the inode's staged data, if any (fsync's work); with nothing
  // staged and `sync_if_clean`, asks the server to sync instead.
  absl::Status SyncInode(Inode& inode, bool sync_if_clean);
  // An unlink or rename removed the last link of `r.ino`.
  void HandleUnlinked(const UnlinkResult& r);
  // Ends a pin of GetOrAddInode (or a handle's count); the last one of an
  // orphan releases it on the server.
  void Unpin(Inode& inode);
  void ReleaseOrphan(InodeId ino);
  // Drops the table entry if nothing holds it. Requires mu_.
  void MaybeEraseLocked(InodeId ino) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Registers a handle of `inode` opened with `flags` whose server content
  // is `map` (fresh from the server). Sets up the write state and O_TRUNC.
  absl::StatusOr<OpenReply> OpenWithMap(const std::shared_ptr<Inode>& inode, int flags,
                                        ChunkMap map);

  // Commits the staged data a previous run of this scope left in `dir`
  // (<ino> plus <ino>.journal, see filesystem.cc). Called by Init.
  void RecoverStaged(const std::string& dir);
  // One inode's leftover; OK when committed (or nothing was staged) and the
  // files are removed, else the files are left where they are.
  absl::Status RecoverInode(InodeId ino, const std::string& path);

  // A write state over `map` whose removed staging files the janitor closes.
  std::unique_ptr<WriteState> NewWriteState(ChunkMap map);
  // Write-state operations; all require inode.mu.
  absl::Status EnsureStagingFile(Inode& inode, WriteState& ws);
  absl::Status StageTruncate(Inode& inode, WriteState& ws, uint64_t size);
  // Bytes [offset, offset+n) of the staged view, n already clipped to the
  // staged size.
  absl::Status ReadStaged(Inode& inode, WriteState& ws, uint64_t offset, size_t n, char* out);
  absl::Status Commit(Inode& inode, WriteState& ws);
  // Queues background uploads of the chunks a write of [offset, end) has
  // finished.
  void ScheduleUploads(WriteState& ws, uint64_t offset, uint64_t end);
  // The server refused a commit naming chunks it does not hold: sends the
  // staged chunks among `indexes` of `refs` that it lacks. OK and false if
  // none was missing (the ENOENT was about something else).
  absl::StatusOr<bool> ResendMissing(Inode& inode, WriteState& ws,
                                     const std::vector<ChunkRef>& refs,
                                     const std::vector<uint64_t>& indexes);
  void PublishOverlay(Inode& inode, const WriteState* ws);
  void DropWriteState(Inode& inode);

  const Scope scope_;
  ClusterClient* const client_;
  ChunkFetcher* const fetcher_;
  NodeTier* const tier_;
  const FilesystemOptions options_;
  uint64_t generation_ = 0;  // Set by Init.
  std::atomic<bool> deleted_{false};
  // Bit 0: the change feed is followed; the rest counts changes and state
  // changes of it. A ticket is a value of it: valid while it is unchanged.
  std::atomic<uint64_t> cache_state_{0};
  // Before the tables: write states (in inodes_) cancel their uploads and
  // hand their staging files to the janitor when they go, so both must
  // outlive them.
  const std::unique_ptr<ChunkUploader> uploader_;
  // Closes removed staging files (frees their page cache) off the caller's
  // thread; its destructor closes what is queued.
  const std::unique_ptr<ThreadPool> janitor_;

  mutable absl::Mutex mu_;  // Leaf: acquire after Inode::mu, never before.
  std::unordered_map<InodeId, std::shared_ptr<Inode>> inodes_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::shared_ptr<Handle>> handles_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dir_handles_ ABSL_GUARDED_BY(mu_);
  // The name index (AddNameLocked): entry -> the inode it names; each inode
  // lists its entries (Inode::names) so they go with it.
  struct NameKey {
    InodeId parent;
    std::string name;
    bool operator==(const NameKey&) const = default;
  };
  struct NameKeyHash {
    size_t operator()(const NameKey& k) const {
      return std::hash<std::string>()(k.name) ^
             (std::hash<InodeId>()(k.parent) * 0x9e3779b97f4a7c15ull);
    }
  };
  std::unordered_map<NameKey, InodeId, NameKeyHash> names_ ABSL_GUARDED_BY(mu_);
  uint64_t next_fh_ ABSL_GUARDED_BY(mu_) = 1;
  FilesystemStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_FILESYSTEM_H_
