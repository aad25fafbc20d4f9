// Passthrough: FUSE passthrough for one mount (DESIGN.md, "Node tier"): an
// open of a file whose content is complete in the node tier is answered with
// the tier image as the kernel's backing file, so its reads and mmap run in
// the kernel at the speed of the tier's disk, with no daemon round trip.
//
// libfuse 3.14 has no API for it, so this class sits under the session as its
// custom I/O (fuse_session_custom_io on the session's /dev/fuse descriptor):
// OnRead sees every request, OnWritev every reply. It asks for passthrough in
// the INIT reply (when wanted and the kernel offers it) and patches the OPEN
// replies of the handles Open chose for passthrough (passthrough_abi.h).
//
// The kernel keeps one I/O mode per inode: while any open file of an inode
// uses passthrough, every new open of it must name the same backing file
// (FOPEN_PASSTHROUGH) and a page-cached open fails with EIO, and the other way
// round. So Open decides per inode:
//  - passthrough, when the open is read-only and qualifies (the `lease`
//    callback lends the image) and no page-cached open of the inode is live,
//    or when the inode is in passthrough mode at the same version;
//  - direct I/O (FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO: reads and writes go to
//    the daemon, which serves the version the handle opened) when the inode
//    is in passthrough mode but this open cannot read that image (a writer,
//    another version). Only mmap of such an open maps the kernel's backing
//    file, the older version: an in-place overwrite seen on a node that still
//    reads the old version through passthrough is read() right, not mmap()'d
//    right, until the old version's last file is closed (a replace by rename
//    is a new inode and has no such window);
//  - the page cache otherwise, as without passthrough.
// The kernel leaves an open file's mode before it sends the RELEASE, so
// counting opens from our replies to the RELEASEs is never behind it.
// Where the kernel refuses (no FUSE_PASSTHROUGH offered at INIT, or the
// backing registration fails: no CAP_SYS_ADMIN, a backing file it cannot
// stack on) the mount serves every read itself; the first refusal is logged.
//
// Thread-safe (the session loop is multi-threaded).
#ifndef TRAINCACHE_FUSE_PASSTHROUGH_H_
#define TRAINCACHE_FUSE_PASSTHROUGH_H_

#include <linux/fuse.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "absl/status/statusor.h"
#include "traincache/node_tier.h"

namespace traincache::fuse {

struct PassthroughStats {
  bool enabled = false;         // negotiated at INIT and not refused since
  uint64_t opens = 0;           // opens answered with passthrough
  uint64_t backing_files = 0;   // backing files registered with the kernel
  uint64_t direct_opens = 0;    // opens served with direct I/O (mode conflict)
  uint64_t refusals = 0;        // backing registrations the kernel refused
};

class Passthrough {
 public:
  enum class Mode { kCached, kPassthrough, kDirect };
  using LeaseFn = std::function<absl::StatusOr<std::unique_ptr<ImageLease>>()>;

  // `wanted`: ask the kernel for passthrough at INIT. `name` is for logs.
  Passthrough(bool wanted, std::string name);
  ~Passthrough();
  Passthrough(const Passthrough&) = delete;
  Passthrough& operator=(const Passthrough&) = delete;

  // Sets the /dev/fuse descriptor (before the session loop starts).
  void set_session_fd(int fd) { session_fd_ = fd; }

  // How open `fh` of `ino` (content `version`) is served; remembered until
  // Release(ino, fh). `fixed`: the handle is read-only and reads the version
  // it opened (Filesystem::ReadsFixedVersion), so it may read an image.
  // `lease` is called (at most once) when a new backing file is needed.
  Mode Open(uint64_t ino, uint64_t fh, uint64_t version, bool fixed, bool writable,
            const LeaseFn& lease);
  // The kernel released open `fh`: the last passthrough open of an inode
  // frees its backing id and gives the image back to the tier. Returns the
  // backing file's version if `fh` was a writer given direct I/O on it: the
  // kernel opened the image writable for it, and a shared writable mmap
  // writes into the image, so the caller has the tier re-verify it.
  std::optional<uint64_t> Release(uint64_t ino, uint64_t fh);

  PassthroughStats Stats() const;

  // The session's I/O: OnRequest sees each request read from the kernel (n
  // bytes), OnWritev sends each reply (writev(2)'s contract). `fd` < 0:
  // nothing is written, the reply is only looked at (the INIT a process
  // replays when it takes over a connection, whose reply the kernel must
  // not get: FuseMount).
  void OnRequest(const void* buf, size_t n);
  ssize_t OnWritev(int fd, struct iovec* iov, int count);

 private:
  struct InodeMode {
    int passthrough_opens = 0;
    int cached_opens = 0;
    int direct_opens = 0;
    uint64_t version = 0;  // of the backing file
    int backing_id = 0;    // 0: none
    std::unique_ptr<ImageLease> lease;
  };

  // Registers `lease`'s image; the backing id, or 0 after a refusal (logged
  // once; passthrough is then off for this mount).
  int OpenBacking(const ImageLease& lease);
  void CloseBacking(int backing_id);
  void CountLocked(InodeMode& m, uint64_t fh, uint64_t ino, Mode mode, bool writable);
  ssize_t PatchInitReply(int fd, struct iovec* iov, int count);
  // writev(2) to `fd`, or (fd < 0) the length it would have written.
  static ssize_t Send(int fd, struct iovec* iov, int count);
  // If `out` answers a tracked OPEN or CREATE of a handle that names a
  // backing file, copies the payload into `patched` with FOPEN_PASSTHROUGH
  // and the backing id set, and returns true.
  bool PatchOpenReply(const fuse_out_header& out, const struct iovec* iov, int count,
                      char* patched);

  const bool wanted_;
  const std::string name_;
  int session_fd_ = -1;
  std::atomic<bool> negotiated_{false};  // the INIT reply asked for passthrough
  std::atomic<bool> enabled_{false};     // negotiated and not refused since
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> kernel_offers_{false};

  // Held around the backing ioctls; never across a write to /dev/fuse nor
  // while a lease is given back (the tier's lock is never taken under it).
  mutable std::mutex mu_;
  struct HandleMode {
    uint64_t ino = 0;
    Mode mode = Mode::kCached;
    bool writable = false;
  };
  std::unordered_map<uint64_t, InodeMode> inodes_;    // guarded by mu_
  std::unordered_map<uint64_t, HandleMode> handles_;  // fh -> mode; guarded by mu_
  std::unordered_map<uint64_t, int> pending_;         // fh -> backing id until its reply; mu_
  std::unordered_set<uint64_t> open_uniques_;         // OPEN/CREATE not yet answered; mu_
  std::atomic<size_t> open_uniques_size_{0};          // its size, read without mu_
  PassthroughStats stats_;                            // guarded by mu_
};

}  // namespace traincache::fuse

#endif  // TRAINCACHE_FUSE_PASSTHROUGH_H_
