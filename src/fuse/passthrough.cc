#include "fuse/passthrough.h"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fuse/passthrough_abi.h"

namespace traincache::fuse {

namespace {

// Refusals that will not change for this mount (capability, kernel config,
// stacking); others (EMFILE, ENOMEM) only cost the one open.
bool Permanent(int err) {
  return err == EPERM || err == EINVAL || err == ELOOP || err == EOPNOTSUPP || err == ENOTTY ||
         err == ENOSYS;
}

}  // namespace

Passthrough::Passthrough(bool wanted, std::string name)
    : wanted_(wanted), name_(std::move(name)) {}

Passthrough::~Passthrough() = default;

void Passthrough::OnRequest(const void* buf, size_t n) {
  if (n < sizeof(fuse_in_header)) return;
  const auto* in = static_cast<const fuse_in_header*>(buf);
  if (in->opcode == abi::kOpcodeOpen || in->opcode == abi::kOpcodeCreate) {
    // Once negotiated, always: inodes keep their backing files after a
    // later refusal turned new ones off, and their opens must name them.
    if (negotiated_.load(std::memory_order_relaxed)) {
      std::lock_guard lock(mu_);
      open_uniques_.insert(in->unique);
      open_uniques_size_.store(open_uniques_.size(), std::memory_order_relaxed);
    }
  } else if (in->opcode == abi::kOpcodeInit && n >= sizeof(fuse_in_header) + sizeof(fuse_init_in)) {
    fuse_init_in init;
    std::memcpy(&init, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(init));
    kernel_offers_ = (init.flags & FUSE_INIT_EXT) && (init.flags2 & abi::kFlags2Passthrough);
    init_unique_ = in->unique;
  }
}

ssize_t Passthrough::Send(int fd, struct iovec* iov, int count) {
  if (fd >= 0) return writev(fd, iov, count);
  ssize_t total = 0;
  for (int i = 0; i < count; ++i) total += static_cast<ssize_t>(iov[i].iov_len);
  return total;
}

ssize_t Passthrough::OnWritev(int fd, struct iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len != sizeof(fuse_out_header)) return Send(fd, iov, count);
  const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
  const uint64_t init = init_unique_.load();
  if (init != 0 && out->unique == init) {
    init_unique_ = 0;
    return PatchInitReply(fd, iov, count);
  }
  if (open_uniques_size_.load(std::memory_order_relaxed) == 0) return Send(fd, iov, count);
  // An OPEN reply is a fuse_open_out; a CREATE reply a fuse_entry_out and
  // then a fuse_open_out, in one buffer. Decided under the lock, written
  // after it (a write to /dev/fuse may wait on the kernel).
  char patched[sizeof(fuse_entry_out) + sizeof(fuse_open_out)];
  if (PatchOpenReply(*out, iov, count, patched)) iov[1].iov_base = patched;
  return Send(fd, iov, count);
}

bool Passthrough::PatchOpenReply(const fuse_out_header& out, const struct iovec* iov, int count,
                                 char* patched) {
  std::lock_guard lock(mu_);
  // Every OPEN or CREATE gets one reply (success or error): forget its
  // unique here.
  if (open_uniques_.erase(out.unique) == 0) return false;
  open_uniques_size_.store(open_uniques_.size(), std::memory_order_relaxed);
  const size_t len = count == 2 ? iov[1].iov_len : 0;
  const size_t create_len = sizeof(fuse_entry_out) + sizeof(fuse_open_out);
  if (out.error != 0 || (len != sizeof(fuse_open_out) && len != create_len)) return false;
  std::memcpy(patched, iov[1].iov_base, len);
  char* at = patched + len - sizeof(fuse_open_out);
  uint64_t fh;
  uint32_t open_flags;
  std::memcpy(&fh, at + offsetof(fuse_open_out, fh), sizeof(fh));
  auto it = pending_.find(fh);
  if (it == pending_.end()) return false;
  const int32_t backing_id = it->second;
  pending_.erase(it);
  std::memcpy(&open_flags, at + offsetof(fuse_open_out, open_flags), sizeof(open_flags));
  open_flags |= abi::kOpenPassthrough;
  std::memcpy(at + offsetof(fuse_open_out, open_flags), &open_flags, sizeof(open_flags));
  std::memcpy(at + abi::kOpenOutBackingIdOffset, &backing_id, sizeof(backing_id));
  return true;
}

ssize_t Passthrough::PatchInitReply(int fd, struct iovec* iov, int count) {
  const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
  if (out->error != 0 || count != 2 || iov[1].iov_len != sizeof(fuse_init_out)) {
    return Send(fd, iov, count);
  }
  fuse_init_out init;
  std::memcpy(&init, iov[1].iov_base, sizeof(init));
  if (!wanted_) return Send(fd, iov, count);
  if (!kernel_offers_) {
    spdlog::info("{}: the kernel offers no FUSE passthrough; reads are served by the daemon",
                 name_);
    return Send(fd, iov, count);
  }
  if (init.flags & FUSE_WRITEBACK_CACHE) {
    spdlog::warn("{}: no FUSE passthrough with the writeback cache", name_);
    return Send(fd, iov, count);
  }
  init.flags |= FUSE_INIT_EXT;
  init.flags2 |= abi::kFlags2Passthrough;
  const uint32_t max_stack_depth = 1;
  std::memcpy(reinterpret_cast<char*>(&init) + abi::kInitOutMaxStackDepthOffset,
              &max_stack_depth, sizeof(max_stack_depth));
  iov[1].iov_base = &init;
  // Before the write: the kernel lets opens in while it handles the reply,
  // and their OPENs must already be tracked.
  negotiated_ = true;
  enabled_ = true;
  ssize_t n = Send(fd, iov, count);
  if (n < 0) {
    enabled_ = false;
  } else {
    spdlog::info("{}: FUSE passthrough on for files complete in the node tier", name_);
  }
  return n;
}

int Passthrough::OpenBacking(const ImageLease& lease) {
  abi::BackingMap map{.fd = lease.fd(), .flags = 0, .padding = 0};
  int id = ioctl(session_fd_, abi::kIocBackingOpen, &map);
  if (id > 0) return id;
  const int err = id < 0 ? errno : EINVAL;
  {
    std::lock_guard lock(mu_);
    ++stats_.refusals;
  }
  if (Permanent(err)) {
    if (enabled_.exchange(false)) {
      spdlog::warn("{}: the kernel refused a passthrough backing file ({}); reads are served by "
                   "the daemon from now on",
                   name_, std::strerror(err));
    }
  } else {
    spdlog::warn("{}: cannot register a passthrough backing file: {}", name_, std::strerror(err));
  }
  return 0;
}

void Passthrough::CloseBacking(int backing_id) {
  uint32_t id = static_cast<uint32_t>(backing_id);
  if (ioctl(session_fd_, abi::kIocBackingClose, &id) != 0) {
    spdlog::warn("{}: closing passthrough backing id {}: {}", name_, backing_id,
                 std::strerror(errno));
  }
}

void Passthrough::CountLocked(InodeMode& m, uint64_t fh, uint64_t ino, Mode mode,
                              bool writable) {
  handles_[fh] = HandleMode{.ino = ino, .mode = mode, .writable = writable};
  switch (mode) {
    case Mode::kPassthrough:
      ++m.passthrough_opens;
      pending_[fh] = m.backing_id;
      ++stats_.opens;
      break;
    case Mode::kDirect:
      ++m.direct_opens;
      pending_[fh] = m.backing_id;
      ++stats_.direct_opens;
      break;
    case Mode::kCached:
      ++m.cached_opens;
      break;
  }
}

Passthrough::Mode Passthrough::Open(uint64_t ino, uint64_t fh, uint64_t version, bool fixed,
                                    bool writable, const LeaseFn& lease) {
  std::unique_lock lock(mu_);
  {
    InodeMode& m = inodes_[ino];
    if (m.backing_id != 0) {
      // The inode is in passthrough mode: every open of it must name its
      // backing file (the kernel answers EIO otherwise); one that cannot
      // read it adds direct I/O, which the kernel serves from the daemon.
      Mode mode = fixed && version == m.version ? Mode::kPassthrough : Mode::kDirect;
      CountLocked(m, fh, ino, mode, writable);
      return mode;
    }
    if (!fixed || !lease || !enabled_.load() || m.cached_opens > 0) {
      CountLocked(m, fh, ino, Mode::kCached, writable);
      return Mode::kCached;
    }
  }
  // A new backing file. The lease may verify chunks: not under the lock.
  lock.unlock();
  absl::StatusOr<std::unique_ptr<ImageLease>> leased = lease();
  const int id = leased.ok() ? OpenBacking(**leased) : 0;
  lock.lock();
  InodeMode& m = inodes_[ino];  // Re-found: a Release may have erased it meanwhile.
  if (id > 0 && m.backing_id == 0 && m.cached_opens == 0) {
    m.backing_id = id;
    m.version = version;
    m.lease = *std::move(leased);
    ++stats_.backing_files;
    CountLocked(m, fh, ino, Mode::kPassthrough, writable);
    return Mode::kPassthrough;
  }
  if (id > 0) CloseBacking(id);  // Another open got there first.
  Mode mode = m.backing_id == 0                   ? Mode::kCached
              : fixed && version == m.version ? Mode::kPassthrough
                                              : Mode::kDirect;
  CountLocked(m, fh, ino, mode, writable);
  lock.unlock();  // `leased`, if unused, goes back to the tier outside the lock.
  return mode;
}

std::optional<uint64_t> Passthrough::Release(uint64_t ino, uint64_t fh) {
  std::unique_ptr<ImageLease> lease;  // Given back outside the lock.
  std::lock_guard lock(mu_);
  pending_.erase(fh);
  auto h = handles_.find(fh);
  if (h == handles_.end()) return std::nullopt;
  const HandleMode handle = h->second;
  handles_.erase(h);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return std::nullopt;
  InodeMode& m = it->second;
  std::optional<uint64_t> written;
  switch (handle.mode) {
    case Mode::kPassthrough:
      --m.passthrough_opens;
      break;
    case Mode::kDirect:
      --m.direct_opens;
      if (handle.writable) written = m.version;
      break;
    case Mode::kCached:
      --m.cached_opens;
      break;
  }
  if (m.backing_id != 0 && m.passthrough_opens == 0 && m.direct_opens == 0) {
    CloseBacking(m.backing_id);
    m.backing_id = 0;
    lease = std::move(m.lease);
  }
  if (m.passthrough_opens == 0 && m.cached_opens == 0 && m.direct_opens == 0) inodes_.erase(it);
  return written;
}

PassthroughStats Passthrough::Stats() const {
  std::lock_guard lock(mu_);
  PassthroughStats s = stats_;
  s.enabled = enabled_.load();
  return s;
}

}  // namespace traincache::fuse
