#define FUSE_USE_VERSION 312
#include "fuse/fuse_mount.h"

#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "metrics/latency_histograms.h"
#include "traincache/status.h"

namespace traincache::fuse {

// A lock request whose answer comes from the LockClient's callback: the
// FUSE thread that received it returns at once, so waits hold no thread.
struct LockWait {
  fuse_req_t req;
  FuseMount* mount;
  LockKind kind;
  uint64_t ino;
  uint64_t owner;
  uint64_t fh;  // the open file's handle (flock: what its release names)
  std::mutex mu;
  std::function<void()> cancel;   // guarded by mu; cleared once answered
  bool cancel_requested = false;  // guarded by mu: interrupted before `cancel` was known
  bool answered = false;          // guarded by mu
};

namespace {

using node::Filesystem;

// Reads and writes of up to 1 MiB per request.
constexpr unsigned kMaxIo = 1u << 20;

// The unique of the INIT a taking-over process replays to its own session:
// never one of the kernel's (its counter starts at 0 and steps by 2; bit 63
// marks resent requests, bit 0 interrupts).
constexpr uint64_t kReplayedInitUnique = (uint64_t{1} << 62) | 0x10;
// FUSE_INIT's opcode, and the notification that makes the kernel queue again
// every request a daemon read but did not answer (Linux 6.9,
// include/uapi/linux/fuse.h: FUSE_NOTIFY_RESEND).
constexpr uint32_t kOpcodeInit = 26;
constexpr int32_t kNotifyResend = 7;

// Declares `var`, this process's handle for the request's file handle
// (FuseMount::OwnHandle), or replies the error and returns.
#define TC_OWN_HANDLE(var, req, ino, fi, flags, dir)                                       \
  uint64_t var = 0;                                                                        \
  if (absl::StatusOr<uint64_t> tc_own = MountOf(req).OwnHandle(ino, (fi)->fh, flags, dir); \
      tc_own.ok()) {                                                                       \
    var = *tc_own;                                                                         \
  } else {                                                                                 \
    return ReplyErr(req, tc_own.status());                                                 \
  }

// The session's userdata is its FuseMount.
FuseMount& MountOf(fuse_req_t req) { return *static_cast<FuseMount*>(fuse_req_userdata(req)); }
Filesystem& Fs(fuse_req_t req) { return MountOf(req).fs(); }

double Seconds(std::chrono::milliseconds ms) { return ms.count() / 1000.0; }

struct stat ToStat(const InodeAttr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_size = static_cast<off_t>(a.size);
  st.st_rdev = a.rdev;
  st.st_blksize = 128 << 10;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  st.st_atim = {a.atime.sec, a.atime.nsec};
  st.st_mtim = {a.mtime.sec, a.mtime.nsec};
  st.st_ctim = {a.ctime.sec, a.ctime.nsec};
  return st;
}

// `ticket`: Filesystem::CacheTicket() from before the call that produced `a`.
fuse_entry_param ToEntry(Filesystem& fs, uint64_t ticket, const InodeAttr& a) {
  fuse_entry_param e{};
  e.ino = a.ino;
  e.generation = 1;
  e.attr = ToStat(a);
  e.attr_timeout = Seconds(fs.AttrTtl(ticket));
  e.entry_timeout = Seconds(fs.EntryTtl(ticket));
  return e;
}

void ReplyErr(fuse_req_t req, const absl::Status& status) {
  int err = ToErrno(status);
  if (err == EIO) spdlog::warn("fuse: replying EIO: {}", status.ToString());
  fuse_reply_err(req, err);
}

void ReplyEntry(fuse_req_t req, uint64_t ticket, const absl::StatusOr<InodeAttr>& attr) {
  if (!attr.ok()) return ReplyErr(req, attr.status());
  fuse_entry_param e = ToEntry(Fs(req), ticket, *attr);
  fuse_reply_entry(req, &e);
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return Caller{ctx->uid, ctx->gid};
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  conn->max_write = kMaxIo;
  conn->max_read = kMaxIo;
  conn->max_readahead = kMaxIo;
  // Page cache kept across opens is decided per open (keep_cache), and a
  // handle reads the version it opened: the kernel need not ask for
  // attributes before reads once attr_ttl passed (libfuse's default
  // auto_inval_data), which would also stall reads of cached files for a
  // whole outage timeout while the server is down.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  const uint64_t ticket = Fs(req).CacheTicket();
  ReplyEntry(req, ticket, Fs(req).Lookup(parent, name));
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Fs(req).Forget(ino, nlookup);
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) Fs(req).Forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void OpGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  const uint64_t ticket = Fs(req).CacheTicket();
  auto attr = Fs(req).GetAttr(ino);
  if (!attr.ok()) return ReplyErr(req, attr.status());
  struct stat st = ToStat(*attr);
  fuse_reply_attr(req, &st, Seconds(Fs(req).AttrTtl(ticket)));
}

void OpSetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* st, int to_set, fuse_file_info* fi) {
  SetAttrRequest set;
  if (to_set & FUSE_SET_ATTR_MODE) set.mode = st->st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID) set.uid = st->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) set.gid = st->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) set.size = static_cast<uint64_t>(st->st_size);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    set.atime = Now();
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    set.atime = Timespec{st->st_atim.tv_sec, static_cast<uint32_t>(st->st_atim.tv_nsec)};
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    set.mtime = Now();
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    set.mtime = Timespec{st->st_mtim.tv_sec, static_cast<uint32_t>(st->st_mtim.tv_nsec)};
  }
  std::optional<uint64_t> fh;
  if (fi) {
    TC_OWN_HANDLE(own, req, ino, fi, fi->flags, false);
    fh = own;
  }
  const uint64_t ticket = Fs(req).CacheTicket();
  auto attr = Fs(req).SetAttr(ino, set, fh);
  if (!attr.ok()) return ReplyErr(req, attr.status());
  struct stat out = ToStat(*attr);
  fuse_reply_attr(req, &out, Seconds(Fs(req).AttrTtl(ticket)));
}

void OpReadLink(fuse_req_t req, fuse_ino_t ino) {
  auto target = Fs(req).ReadLink(ino);
  if (!target.ok()) return ReplyErr(req, target.status());
  fuse_reply_readlink(req, target->c_str());
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  const uint64_t ticket = Fs(req).CacheTicket();
  ReplyEntry(req, ticket, Fs(req).Mkdir(parent, name, mode, CallerOf(req)));
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ToErrno(Fs(req).Unlink(parent, name)));
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ToErrno(Fs(req).Rmdir(parent, name)));
}

void OpSymlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  const uint64_t ticket = Fs(req).CacheTicket();
  ReplyEntry(req, ticket, Fs(req).Symlink(parent, name, target, CallerOf(req)));
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned int flags) {
  fuse_reply_err(req, ToErrno(Fs(req).Rename(parent, name, new_parent, new_name, flags)));
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  const uint64_t ticket = Fs(req).CacheTicket();
  ReplyEntry(req, ticket, Fs(req).Link(ino, new_parent, new_name));
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto opened = Fs(req).Open(ino, fi->flags);
  if (!opened.ok()) return ReplyErr(req, opened.status());
  fi->fh = opened->fh;
  fi->keep_cache = opened->keep_cache;
  if (Passthrough* pt = MountOf(req).passthrough()) {
    const bool writable = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
    const bool fixed = !writable && Fs(req).ReadsFixedVersion(ino, fi->fh);
    Passthrough::Mode mode = pt->Open(ino, fi->fh, opened->version, fixed, writable,
                                      [&] { return Fs(req).LeaseImage(ino, fi->fh); });
    // The kernel refuses FOPEN_KEEP_CACHE with passthrough (it has no page
    // cache of its own then); direct I/O bypasses it.
    if (mode != Passthrough::Mode::kCached) fi->keep_cache = 0;
    if (mode == Passthrough::Mode::kDirect) fi->direct_io = 1;
  }
  if (opened->attr_stale) {
    // Attributes only (offset < 0): the kernel bumps the inode's attribute
    // version and marks them invalid, taking no lock this open holds, so
    // notifying from inside the open is safe. -ENOENT: the kernel no longer
    // knows the inode, nothing to drop.
    int rc = fuse_lowlevel_notify_inval_inode(MountOf(req).session(), ino, -1, 0);
    if (rc != 0 && rc != -ENOENT) {
      spdlog::warn("fuse: dropping the kernel's attributes of ino {}: {}", ino, strerror(-rc));
    }
  }
  fuse_reply_open(req, fi);
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  const uint64_t ticket = Fs(req).CacheTicket();
  auto created = Fs(req).Create(parent, name, mode, fi->flags, CallerOf(req));
  if (!created.ok()) return ReplyErr(req, created.status());
  fi->fh = created->fh;
  if (Passthrough* pt = MountOf(req).passthrough()) {
    if (pt->Open(created->attr.ino, fi->fh, 0, /*fixed=*/false, /*writable=*/true, nullptr) ==
        Passthrough::Mode::kDirect) {
      fi->direct_io = 1;
    }
  }
  fuse_entry_param e = ToEntry(Fs(req), ticket, created->attr);
  fuse_reply_create(req, &e, fi);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  TC_OWN_HANDLE(fh, req, ino, fi, fi->flags, false);
  auto data = Fs(req).Read(ino, fh, static_cast<uint64_t>(off), size);
  if (!data.ok()) return ReplyErr(req, data.status());
  fuse_reply_buf(req, data->data(), data->size());
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  TC_OWN_HANDLE(fh, req, ino, fi, fi->flags, false);
  auto n = Fs(req).Write(ino, fh, static_cast<uint64_t>(off), std::string_view(buf, size));
  if (!n.ok()) return ReplyErr(req, n.status());
  fuse_reply_write(req, *n);
}

void OpFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // close(2) drops every POSIX lock the process holds on the file.
  MountOf(req).ReleaseOwnerLocks(LockKind::kPosix, ino, fi->lock_owner, fi->fh);
  // An earlier process's handle: adopted read-only unless used already (a
  // FLUSH carries no open flags), so it commits what this process staged
  // through it, if anything.
  TC_OWN_HANDLE(fh, req, ino, fi, O_RDONLY, false);
  fuse_reply_err(req, ToErrno(Fs(req).Flush(ino, fh)));
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // The last close of an open file drops its flock lock.
  if (fi->flock_release) MountOf(req).ReleaseOwnerLocks(LockKind::kFlock, ino, fi->fh, fi->fh);
  const std::optional<uint64_t> fh = MountOf(req).ReleaseHandle(fi->fh);
  if (!fh) return static_cast<void>(fuse_reply_err(req, 0));
  Fs(req).Release(ino, *fh);
  if (Passthrough* pt = MountOf(req).passthrough()) {
    if (std::optional<uint64_t> version = pt->Release(ino, *fh)) {
      Fs(req).DistrustImage(ino, *version);
    }
  }
  fuse_reply_err(req, 0);
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  TC_OWN_HANDLE(fh, req, ino, fi, O_RDONLY, false);
  fuse_reply_err(req, ToErrno(Fs(req).Fsync(ino, fh, datasync != 0)));
}

void OpOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto fh = Fs(req).OpenDir(ino);
  if (!fh.ok()) return ReplyErr(req, fh.status());
  fi->fh = *fh;
  fuse_reply_open(req, fi);
}

void ReadDirCommon(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                   bool plus) {
  Filesystem& fs = Fs(req);
  TC_OWN_HANDLE(fh, req, ino, fi, O_RDONLY, true);
  std::vector<char> buf(size);
  size_t used = 0;
  std::vector<InodeId> looked_up;  // readdirplus entries that counted a lookup
  absl::Status status =
      fs.ReadDir(fh, static_cast<uint64_t>(off), plus, [&](const node::DirListEntry& e) {
        std::string name(e.name);
        size_t need;
        if (plus) {
          fuse_entry_param entry{};
          if (e.attr) {
            entry = ToEntry(fs, e.cache_ticket, *e.attr);
          } else {
            entry.attr.st_ino = e.ino;
            entry.attr.st_mode = e.type;
          }
          need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &entry,
                                        static_cast<off_t>(e.next_offset));
        } else {
          struct stat st {};
          st.st_ino = e.ino;
          st.st_mode = e.type;
          need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                   static_cast<off_t>(e.next_offset));
        }
        if (need > size - used) return false;  // Did not fit: not sent, not counted.
        used += need;
        if (plus && e.attr) looked_up.push_back(e.ino);
        return true;
      });
  if (!status.ok()) return ReplyErr(req, status);
  if (fuse_reply_buf(req, buf.data(), used) != 0) {
    // The reply never reached the kernel (interrupted): it will not forget
    // entries it never saw, so the lookups they counted are dropped here.
    for (InodeId ino : looked_up) fs.Forget(ino, 1);
  }
}

void OpReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, /*plus=*/false);
}

void OpReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  ReadDirCommon(req, ino, size, off, fi, /*plus=*/true);
}

void OpReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  if (std::optional<uint64_t> fh = MountOf(req).ReleaseHandle(fi->fh)) Fs(req).ReleaseDir(*fh);
  fuse_reply_err(req, 0);
}

void OpFsyncDir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  fuse_reply_err(req, ToErrno(Fs(req).FsyncDir(ino)));
}

void OpStatFs(fuse_req_t req, fuse_ino_t) {
  auto st = Fs(req).StatFs();
  if (!st.ok()) return ReplyErr(req, st.status());
  fuse_reply_statfs(req, &*st);
}

void OpSetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  fuse_reply_err(req, ToErrno(Fs(req).SetXattr(ino, name, std::string_view(value, size),
                                               static_cast<uint32_t>(flags))));
}

// getxattr/listxattr protocol: size 0 asks for the length; a buffer too
// small is ERANGE.
void ReplySized(fuse_req_t req, const absl::StatusOr<std::string>& value, size_t size) {
  if (!value.ok()) return ReplyErr(req, value.status());
  if (size == 0) return static_cast<void>(fuse_reply_xattr(req, value->size()));
  if (size < value->size()) return static_cast<void>(fuse_reply_err(req, ERANGE));
  fuse_reply_buf(req, value->data(), value->size());
}

void OpGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  ReplySized(req, Fs(req).GetXattr(ino, name), size);
}

void OpListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  ReplySized(req, Fs(req).ListXattr(ino), size);
}

void OpRemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  fuse_reply_err(req, ToErrno(Fs(req).RemoveXattr(ino, name)));
}

// The session's I/O (the session's userdata is its FuseMount).
ssize_t IoRead(int fd, void* buf, size_t len, void* userdata) {
  return static_cast<FuseMount*>(userdata)->OnRead(fd, buf, len);
}
ssize_t IoWritev(int fd, struct iovec* iov, int count, void* userdata) {
  return static_cast<FuseMount*>(userdata)->OnWritev(fd, iov, count);
}

// The FUSE connection number of the mount at `mountpoint`: the minor device
// number in /proc/self/mountinfo ("<id> <parent> <major>:<minor> <root> <mp>").
unsigned ConnectionOf(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  unsigned found = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mp;
    fields >> id >> parent >> dev >> root >> mp;
    size_t colon = dev.find(':');
    if (mp == mountpoint && colon != std::string::npos) {
      found = static_cast<unsigned>(std::stoul(dev.substr(colon + 1)));  // the last one wins
    }
  }
  return found;
}

// --- locks (only when the mount has a LockClient) ---

void OnLockInterrupt(fuse_req_t, void* data) {
  auto* wait = static_cast<LockWait*>(data);
  std::function<void()> cancel;
  {
    std::lock_guard lock(wait->mu);
    if (wait->cancel) {
      cancel = wait->cancel;
    } else {
      wait->cancel_requested = true;
    }
  }
  if (cancel) cancel();
}

// Replies to a lock request and retires its wait.
void AnswerLock(const std::shared_ptr<LockWait>& state, const absl::Status& status) {
  fuse_reply_err(state->req, ToErrno(status));
  {
    std::lock_guard lock(state->mu);
    state->answered = true;
    state->cancel = nullptr;  // It holds the call, which holds its callback.
  }
  // Last: an unmount waits for this before it frees the session.
  state->mount->TrackLockWait(state.get(), /*live=*/false);
}

void StartLock(fuse_req_t req, fuse_ino_t ino, uint64_t owner, uint64_t fh, const LockRange& range,
               bool wait) {
  FuseMount& mount = MountOf(req);
  auto state = std::make_shared<LockWait>();
  state->req = req;
  state->mount = &mount;
  state->kind = range.kind;
  state->ino = ino;
  state->owner = owner;
  state->fh = fh;
  // Registered before the lock starts, cleared (waiting for a running
  // interrupt callback to end) before the reply: the callback never sees a
  // request that was answered.
  fuse_req_interrupt_func(req, OnLockInterrupt, state.get());
  mount.NoteLockOwner(range.kind, ino, owner, fh);
  mount.TrackLockWait(state.get(), /*live=*/true);
  std::function<void()> cancel = mount.options().locks->Lock(
      mount.fs().scope(), ino, owner, range, wait, [state](absl::Status status) {
        fuse_req_interrupt_func(state->req, nullptr, nullptr);
        if (!status.ok()) return AnswerLock(state, status);
        // Held now: a close that ran meanwhile (another thread of the
        // process) must not have made the mount forget to release it.
        state->mount->NoteLockOwner(state->kind, state->ino, state->owner, state->fh);
        // What the last holder committed is read from here on: checked with
        // the server off this callback's thread (a gRPC one, or the lock
        // call's), before the program learns it holds the lock.
        state->mount->RunAfterLock([state] {
          FuseMount& mount = *state->mount;
          absl::StatusOr<bool> changed = mount.fs().RevalidateUnderLock(state->ino);
          if (!changed.ok()) {
            // The lock is held; the cached content may be old. Said, not
            // failed: the program holds the lock either way.
            spdlog::warn("fuse: ino {}: cannot check for a newer version under the lock: {}",
                         state->ino, changed.status().ToString());
          }
          // The kernel's pages are dropped even when this node knew the
          // version already: an open that told the kernel to drop older
          // pages may not have done so yet (the kernel drops them after the
          // open's reply, on the opener's time), and a second open in
          // between keeps them. The soak read this node's own previous
          // write under the lock that way, and lost an increment.
          mount.InvalidateInodes({state->ino});
          AnswerLock(state, absl::OkStatus());
        });
      });

  bool cancel_now = false;
  {
    std::lock_guard lock(state->mu);
    // Unless already answered (then keeping `cancel` would be a cycle).
    if (!state->answered) {
      state->cancel = cancel;
      cancel_now = state->cancel_requested;
    }
  }
  if (cancel_now) cancel();
}

// struct flock (as libfuse hands it: l_whence SEEK_SET, l_len 0 = to EOF)
// to an inclusive range.
LockRange RangeOf(const struct flock& fl, LockKind kind) {
  LockRange r;
  r.kind = kind;
  r.type = fl.l_type == F_WRLCK   ? LockType::kWrite
           : fl.l_type == F_RDLCK ? LockType::kRead
                                  : LockType::kUnlock;
  r.start = static_cast<uint64_t>(std::max<off_t>(fl.l_start, 0));
  r.end = fl.l_len <= 0 || fl.l_start + fl.l_len - 1 >= std::numeric_limits<int64_t>::max() - 1
              ? UINT64_MAX
              : static_cast<uint64_t>(fl.l_start + fl.l_len - 1);
  r.pid = static_cast<uint32_t>(fl.l_pid);
  return r;
}

void OpGetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  FuseMount& mount = MountOf(req);
  auto held = mount.options().locks->Test(mount.fs().scope(), ino, fi->lock_owner,
                                          RangeOf(*lock, LockKind::kPosix));
  if (!held.ok()) return ReplyErr(req, held.status());
  if (!*held) {
    lock->l_type = F_UNLCK;
  } else {
    const LockRange& h = **held;
    lock->l_type = h.type == LockType::kWrite ? F_WRLCK : F_RDLCK;
    lock->l_whence = SEEK_SET;
    lock->l_start = static_cast<off_t>(h.start);
    lock->l_len = h.end == UINT64_MAX ? 0 : static_cast<off_t>(h.end - h.start + 1);
    lock->l_pid = static_cast<pid_t>(h.pid);
  }
  fuse_reply_lock(req, lock);
}

void OpSetLk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  LockRange range = RangeOf(*lock, LockKind::kPosix);
  if (range.type == LockType::kUnlock) {
    FuseMount& mount = MountOf(req);
    fuse_reply_err(
        req, ToErrno(mount.options().locks->Unlock(mount.fs().scope(), ino, fi->lock_owner,
                                                   LockKind::kPosix, range.start, range.end)));
    return;
  }
  StartLock(req, ino, fi->lock_owner, fi->fh, range, sleep != 0);
}

void OpFlock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  FuseMount& mount = MountOf(req);
  if (op & LOCK_UN) {
    fuse_reply_err(req, ToErrno(mount.options().locks->Unlock(mount.fs().scope(), ino, fi->fh,
                                                              LockKind::kFlock, 0, UINT64_MAX)));
    return;
  }
  LockRange range{.kind = LockKind::kFlock,
                  .type = (op & LOCK_EX) ? LockType::kWrite : LockType::kRead,
                  .pid = static_cast<uint32_t>(fuse_req_ctx(req)->pid)};
  // A flock belongs to the open file, which is our handle: its number is
  // never reused (the kernel's owner id, the file's address, can be reused
  // by a new open before the old file's asynchronous RELEASE arrives, and
  // that late release would free the new file's lock).
  StartLock(req, ino, /*owner=*/fi->fh, fi->fh, range, (op & LOCK_NB) == 0);
}

// The ops whose latency is recorded; kOpNames gives their `op` label.
enum Op : size_t {
  kLookup,
  kForget,
  kForgetMulti,
  kGetAttr,
  kSetAttr,
  kReadLink,
  kMkdir,
  kUnlink,
  kRmdir,
  kSymlink,
  kRename,
  kLink,
  kOpen,
  kCreate,
  kRead,
  kWrite,
  kFlush,
  kRelease,
  kFsync,
  kOpenDir,
  kReadDir,
  kReadDirPlus,
  kReleaseDir,
  kFsyncDir,
  kStatFs,
  kSetXattr,
  kGetXattr,
  kListXattr,
  kRemoveXattr,
  kGetLk,
  kSetLk,
  kFlock,
  kNumOps
};
constexpr const char* kOpNames[] = {
    "lookup",      "forget",     "forget_multi", "getattr", "setattr",  "readlink", "mkdir",
    "unlink",      "rmdir",      "symlink",      "rename",  "link",     "open",     "create",
    "read",        "write",      "flush",        "release", "fsync",    "opendir",  "readdir",
    "readdirplus", "releasedir", "fsyncdir",     "statfs",  "setxattr", "getxattr", "listxattr",
    "removexattr", "getlk",      "setlk",        "flock"};
static_assert(std::size(kOpNames) == kNumOps, "one name per op");

// Timed<kOp, Fn>::Call is Fn with its time recorded as op kOp. The histogram
// is taken before Fn runs: Fn's reply frees the request.
template <Op kOp, auto Fn>
struct Timed;
template <Op kOp, typename... Args, void (*Fn)(fuse_req_t, Args...)>
struct Timed<kOp, Fn> {
  static void Call(fuse_req_t req, Args... args) {
    metrics::ScopedLatency timer(MountOf(req).OpLatency(kOp));
    Fn(req, args...);
  }
};

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = Timed<kLookup, OpLookup>::Call;
  ops.forget = Timed<kForget, OpForget>::Call;
  ops.forget_multi = Timed<kForgetMulti, OpForgetMulti>::Call;
  ops.getattr = Timed<kGetAttr, OpGetAttr>::Call;
  ops.setattr = Timed<kSetAttr, OpSetAttr>::Call;
  ops.readlink = Timed<kReadLink, OpReadLink>::Call;
  ops.mkdir = Timed<kMkdir, OpMkdir>::Call;
  ops.unlink = Timed<kUnlink, OpUnlink>::Call;
  ops.rmdir = Timed<kRmdir, OpRmdir>::Call;
  ops.symlink = Timed<kSymlink, OpSymlink>::Call;
  ops.rename = Timed<kRename, OpRename>::Call;
  ops.link = Timed<kLink, OpLink>::Call;
  ops.open = Timed<kOpen, OpOpen>::Call;
  ops.create = Timed<kCreate, OpCreate>::Call;
  ops.read = Timed<kRead, OpRead>::Call;
  ops.write = Timed<kWrite, OpWrite>::Call;
  ops.flush = Timed<kFlush, OpFlush>::Call;
  ops.release = Timed<kRelease, OpRelease>::Call;
  ops.fsync = Timed<kFsync, OpFsync>::Call;
  ops.opendir = Timed<kOpenDir, OpOpenDir>::Call;
  ops.readdir = Timed<kReadDir, OpReadDir>::Call;
  ops.readdirplus = Timed<kReadDirPlus, OpReadDirPlus>::Call;
  ops.releasedir = Timed<kReleaseDir, OpReleaseDir>::Call;
  ops.fsyncdir = Timed<kFsyncDir, OpFsyncDir>::Call;
  ops.statfs = Timed<kStatFs, OpStatFs>::Call;
  ops.setxattr = Timed<kSetXattr, OpSetXattr>::Call;
  ops.getxattr = Timed<kGetXattr, OpGetXattr>::Call;
  ops.listxattr = Timed<kListXattr, OpListXattr>::Call;
  ops.removexattr = Timed<kRemoveXattr, OpRemoveXattr>::Call;
  return ops;
}();

// With a LockClient: flock(2) and fcntl(2) locks go to the server, so they
// serialize across nodes. (Without, the kernel keeps them per node.)
const fuse_lowlevel_ops kOpsWithLocks = [] {
  fuse_lowlevel_ops ops = kOps;
  // A blocking lock's time is until its wait is set up (the answer comes
  // later, from the lock client's callback).
  ops.getlk = Timed<kGetLk, OpGetLk>::Call;
  ops.setlk = Timed<kSetLk, OpSetLk>::Call;
  ops.flock = Timed<kFlock, OpFlock>::Call;
  return ops;
}();

}  // namespace

absl::StatusOr<std::unique_ptr<FuseMount>> FuseMount::Mount(node::Filesystem* fs,
                                                            FuseMountOptions options) {
  std::unique_ptr<FuseMount> m(new FuseMount());
  m->fs_ = fs;
  m->options_ = std::move(options);
  if (m->options_.metrics) {
    m->op_latency_ = std::make_unique<metrics::LatencyHistograms>(
        *m->options_.metrics, "traincache_node_fuse_op_duration_seconds",
        "Time from a FUSE request's arrival in the daemon to its reply, by op", "op",
        std::vector<std::string>(std::begin(kOpNames), std::end(kOpNames)));
  }
  std::error_code ec;
  // Not for a takeover: a stat of a mount nobody serves yet would wait for
  // this very process.
  if (m->options_.takeover_fd < 0) std::filesystem::create_directories(m->options_.mountpoint, ec);
  if (ec) {
    return absl::InternalError(
        fmt::format("cannot create mountpoint {}: {}", m->options_.mountpoint, ec.message()));
  }
  std::string opts = fmt::format(
      "allow_other,default_permissions,fsname=traincache:{},subtype=traincache,max_read={}",
      fs->scope().ToString(), kMaxIo);
  std::vector<std::string> argv_storage = {"traincache-node", "-o", opts};
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops& ops = m->options_.locks ? kOpsWithLocks : kOps;
  m->session_ = fuse_session_new(&args, &ops, sizeof(ops), m.get());
  if (!m->session_) {
    if (m->options_.takeover_fd >= 0) close(m->options_.takeover_fd);
    return absl::InternalError("fuse_session_new failed (bad mount options?)");
  }
  const bool takeover = m->options_.takeover_fd >= 0;
  m->state_ = m->options_.state;
  m->state_.mountpoint = m->options_.mountpoint;
  m->first_handle_ = FirstHandleOf(m->state_.epoch);
  if (takeover) {
    if (m->state_.init_request.empty()) {
      fuse_session_destroy(m->session_);
      m->session_ = nullptr;
      close(m->options_.takeover_fd);
      return absl::FailedPreconditionError(
          fmt::format("{}: the connection handed over has no recorded INIT; cannot serve it",
                      m->options_.mountpoint));
    }
    m->session_fd_ = m->options_.takeover_fd;
    m->replay_init_ = m->state_.init_request;
    m->replay_pending_ = true;
    m->replaying_ = true;
    m->state_fd_ = m->options_.state_fd;
  } else {
    if (fuse_session_mount(m->session_, m->options_.mountpoint.c_str()) != 0) {
      fuse_session_destroy(m->session_);
      m->session_ = nullptr;
      return absl::InternalError(fmt::format("cannot mount {} (is /dev/fuse there, are we root?)",
                                             m->options_.mountpoint));
    }
    m->session_fd_ = fuse_session_fd(m->session_);
  }
  m->mounted_ = true;
  {
    std::lock_guard lock(m->notify_mu_);
    m->notify_ok_ = true;
  }
  // The state beside the descriptor: a new memfd, or the one handed over
  // with the bumped epoch (a crash of this process must not reuse it).
  absl::Status state_status;
  if (takeover) {
    state_status = WriteHandoverState(m->state_fd_, m->state_);
  } else if (absl::StatusOr<int> fd = CreateHandoverFd(m->state_); fd.ok()) {
    m->state_fd_ = *fd;
  } else {
    state_status = fd.status();
  }
  if (!state_status.ok()) {
    spdlog::warn("fuse: {}: no hand-over state ({}); a restart will not keep this mount",
                 m->options_.mountpoint, state_status.ToString());
  }
  // The loop's threads wait in poll() on the descriptor and on wake_fd_, so
  // that Detach can end the loop without ending the connection: the
  // descriptor is non-blocking (a thread woken with nothing left to read
  // goes back to poll instead of blocking in read).
  m->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  const int flags = fcntl(m->session_fd_, F_GETFL);
  // A takeover that fails leaves the mount alone (Detach: the connection
  // stays with its other holders); a new mount is undone.
  auto fail = [&](int err) {
    IGNORE_ERROR(takeover ? m->Detach() : m->Unmount(/*force=*/true));
    return PosixError(err,
                      fmt::format("{}: cannot set up the session's I/O", m->options_.mountpoint));
  };
  if (m->wake_fd_ < 0 || flags < 0 || fcntl(m->session_fd_, F_SETFL, flags | O_NONBLOCK) != 0) {
    return fail(errno);
  }
  if (m->options_.passthrough) {
    m->passthrough_ = std::make_unique<Passthrough>(true, m->options_.mountpoint);
    m->passthrough_->set_session_fd(m->session_fd_);
  }
  fuse_custom_io io{};
  io.read = IoRead;
  io.writev = IoWritev;
  if (int rc = fuse_session_custom_io(m->session_, &io, m->session_fd_); rc != 0) return fail(-rc);
  // From mountinfo, not stat(): the loop is not serving yet, so a stat of
  // the mount would wait for an answer forever.
  m->connection_ = ConnectionOf(m->options_.mountpoint);
  // The mount's readahead starts at the kernel's default (128 KiB): raised
  // to one read request (INIT only ever lowers it), so a sequential reader
  // the daemon serves sends 1 MiB reads instead of 128 KiB ones.
  const std::string read_ahead = fmt::format("/sys/class/bdi/0:{}/read_ahead_kb", m->connection_);
  if (!(std::ofstream(read_ahead) << (kMaxIo >> 10) << "\n")) {
    spdlog::warn("fuse: cannot raise the readahead of {} ({})", m->options_.mountpoint, read_ahead);
  }
  m->loop_ = std::thread([raw = m.get()] {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, raw->options_.max_threads);
    int rc = fuse_session_loop_mt(raw->session_, config);
    fuse_loop_cfg_destroy(config);
    if (rc != 0) spdlog::warn("fuse: session loop of {} ended with {}", raw->mountpoint(), rc);
  });
  if (takeover) {
    spdlog::info("took over the FUSE connection of {} at {} (process {} serving it)",
                 fs->scope().ToString(), m->options_.mountpoint, m->state_.epoch);
  } else {
    spdlog::info("mounted {} at {}", fs->scope().ToString(), m->options_.mountpoint);
  }
  return m;
}

FuseMount::~FuseMount() {
  IGNORE_ERROR(Unmount(/*force=*/true));
  if (state_fd_ >= 0) close(state_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

ssize_t FuseMount::OnRead(int fd, void* buf, size_t len) {
  // Only a takeover's first requests take the lock (the hot path does not).
  if (replaying_.load(std::memory_order_acquire)) {
    std::unique_lock lock(state_mu_);
    if (!replay_init_.empty()) {
      // A takeover's first request: the kernel's INIT, as the first process
      // got it, under a unique of ours (its reply goes nowhere: OnWritev).
      const size_t n = std::min(len, replay_init_.size());
      std::memcpy(buf, replay_init_.data(), n);
      auto* in = static_cast<fuse_in_header*>(buf);
      in->unique = kReplayedInitUnique;
      replay_init_.clear();
      lock.unlock();
      if (passthrough_) passthrough_->OnRequest(buf, n);
      return static_cast<ssize_t>(n);
    }
    // libfuse answers EIO to anything before INIT: no kernel request is
    // read until the replayed one is done.
    replay_cv_.wait(lock, [&] { return !replay_pending_; });
  }
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0) {
      const auto* in = static_cast<const fuse_in_header*>(buf);
      if (static_cast<size_t>(n) >= sizeof(fuse_in_header) && in->opcode == kOpcodeInit) {
        // Recorded for the next process (see the top of fuse_mount.h).
        std::lock_guard lock(state_mu_);
        state_.init_request.assign(static_cast<const char*>(buf), static_cast<size_t>(n));
        if (state_fd_ >= 0) {
          if (absl::Status s = WriteHandoverState(state_fd_, state_); !s.ok()) {
            spdlog::warn("fuse: {}: INIT not recorded for a hand-over: {}", options_.mountpoint,
                         s.ToString());
          }
        }
      }
      if (passthrough_) passthrough_->OnRequest(buf, static_cast<size_t>(n));
      return n;
    }
    if (errno != EAGAIN) return n;  // ENODEV: unmounted or aborted; EINTR.
    pollfd fds[2] = {{.fd = fd, .events = POLLIN, .revents = 0},
                     {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return -1;
    if (fds[1].revents & POLLIN) {
      // Detach or Unmount: libfuse sees the session exited and ends the loop.
      errno = EINTR;
      return -1;
    }
    // Readable, or an error the next read reports (ENODEV).
  }
}

ssize_t FuseMount::OnWritev(int fd, struct iovec* iov, int count) {
  if (count >= 1 && iov[0].iov_len == sizeof(fuse_out_header) &&
      static_cast<const fuse_out_header*>(iov[0].iov_base)->unique == kReplayedInitUnique) {
    // The reply to the replayed INIT: not for the kernel, which answered
    // the first one long ago (passthrough notes what it would have asked).
    ssize_t n = 0;
    if (passthrough_) {
      n = passthrough_->OnWritev(-1, iov, count);
    } else {
      for (int i = 0; i < count; ++i) n += static_cast<ssize_t>(iov[i].iov_len);
    }
    // What the earlier process had read and not answered is lost to it:
    // the kernel queues those requests again for this one.
    fuse_out_header resend{.len = sizeof(fuse_out_header), .error = kNotifyResend, .unique = 0};
    if (write(fd, &resend, sizeof(resend)) != static_cast<ssize_t>(sizeof(resend))) {
      spdlog::warn(
          "fuse: {}: the kernel cannot resend what the earlier process left unanswered "
          "({}; Linux >= 6.9 can): those callers wait until interrupted",
          options_.mountpoint, strerror(errno));
    }
    {
      std::lock_guard lock(state_mu_);
      replay_pending_ = false;
      replaying_ = false;
    }
    replay_cv_.notify_all();
    return n;
  }
  return passthrough_ ? passthrough_->OnWritev(fd, iov, count) : writev(fd, iov, count);
}

absl::StatusOr<uint64_t> FuseMount::OwnHandle(uint64_t ino, uint64_t fh, int flags, bool dir) {
  if (fh >= first_handle_) return fh;
  {
    std::lock_guard lock(adopted_mu_);
    if (auto it = adopted_.find(fh); it != adopted_.end()) return it->second;
  }
  // Opened again on the same inode: what the kernel's handle reads (or
  // writes) from now on. No truncation or creation: those happened.
  uint64_t own = 0;
  if (dir) {
    ASSIGN_OR_RETURN(own, fs_->OpenDir(ino));
  } else {
    ASSIGN_OR_RETURN(node::OpenReply opened, fs_->Open(ino, flags & (O_ACCMODE | O_APPEND)));
    own = opened.fh;
  }
  {
    std::lock_guard lock(adopted_mu_);
    auto [it, added] = adopted_.emplace(fh, own);
    if (added) {
      spdlog::debug("fuse: {}: handle {} of ino {} from an earlier process adopted as {}",
                    options_.mountpoint, fh, ino, own);
      return own;
    }
    // Another request of the same handle adopted it first: keep that one.
    const uint64_t theirs = it->second;
    if (dir) {
      fs_->ReleaseDir(own);
    } else {
      fs_->Release(ino, own);
    }
    return theirs;
  }
}

std::optional<uint64_t> FuseMount::ReleaseHandle(uint64_t fh) {
  if (fh >= first_handle_) return fh;
  std::lock_guard lock(adopted_mu_);
  auto it = adopted_.find(fh);
  if (it == adopted_.end()) return std::nullopt;
  const uint64_t own = it->second;
  adopted_.erase(it);
  return own;
}

void FuseMount::StopLoop() {
  fuse_session_exit(session_);
  // Stays readable: every thread in poll wakes, each one sees the exit.
  const uint64_t one = 1;
  if (wake_fd_ >= 0 && write(wake_fd_, &one, sizeof(one)) != sizeof(one)) {
    spdlog::warn("fuse: {}: cannot wake the session loop: {}", options_.mountpoint,
                 strerror(errno));
  }
  {
    // A loop stopped before the replayed INIT was answered.
    std::lock_guard lock(state_mu_);
    replay_pending_ = false;
    replaying_ = false;
  }
  replay_cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

void FuseMount::StopServing() {
  mounted_ = false;
  {
    // A notification under way ends now, and none starts on a session
    // about to be destroyed.
    std::lock_guard lock(notify_mu_);
    notify_ok_ = false;
  }
  StopLoop();
  // Lock waits are answered from the lock client's threads: all of them
  // before the session (which their replies use) goes.
  EndLockWaits();
  fuse_session_destroy(session_);
  session_ = nullptr;
  session_fd_ = -1;
}

absl::Status FuseMount::Detach() {
  if (!mounted_) return absl::OkStatus();
  // Closes this process's descriptor; the connection stays with the others.
  StopServing();
  spdlog::info("stopped serving {} without unmounting it (hand-over)", options_.mountpoint);
  return absl::OkStatus();
}

void FuseMount::InvalidateInodes(const std::vector<uint64_t>& inodes) {
  std::lock_guard lock(notify_mu_);
  if (!notify_ok_) return;
  for (uint64_t ino : inodes) {
    // -ENOENT: the kernel already forgot it; nothing to drop.
    int rc = fuse_lowlevel_notify_inval_inode(session_, ino, 0, 0);
    if (rc != 0 && rc != -ENOENT) {
      spdlog::debug("{}: cannot invalidate inode {}: {}", options_.mountpoint, ino, strerror(-rc));
    }
  }
}

void FuseMount::InvalidateEntries(const std::vector<std::pair<InodeId, std::string>>& entries) {
  std::lock_guard lock(notify_mu_);
  if (!notify_ok_) return;
  for (const auto& [parent, name] : entries) {
    // May wait for a lookup in `parent` to finish (the kernel drops the
    // entry under the directory's lock). -ENOENT: the kernel holds no such
    // entry (or no such directory).
    int rc = fuse_lowlevel_notify_inval_entry(session_, parent, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT) {
      spdlog::debug("{}: cannot invalidate entry {} of inode {}: {}", options_.mountpoint, name,
                    parent, strerror(-rc));
    }
  }
}

void FuseMount::InvalidateAttrs(const std::vector<InodeId>& inodes) {
  std::lock_guard lock(notify_mu_);
  if (!notify_ok_) return;
  for (InodeId ino : inodes) {
    // Offset < 0: attributes only, the pages stay (kernel_cache.h).
    int rc = fuse_lowlevel_notify_inval_inode(session_, ino, -1, 0);
    if (rc != 0 && rc != -ENOENT) {
      spdlog::debug("{}: cannot invalidate the attributes of inode {}: {}", options_.mountpoint,
                    ino, strerror(-rc));
    }
  }
}

void FuseMount::NoteLockOwner(LockKind kind, uint64_t ino, uint64_t owner, uint64_t fh) {
  std::lock_guard lock(lock_owners_mu_);
  lock_owners_[{kind, ino, owner}] = fh;
}

void FuseMount::ReleaseOwnerLocks(LockKind kind, uint64_t ino, uint64_t owner, uint64_t fh) {
  if (!options_.locks) return;
  {
    std::lock_guard lock(lock_owners_mu_);
    // Most closes are of files nobody locked: no call for those.
    auto it = lock_owners_.find({kind, ino, owner});
    if (it == lock_owners_.end()) return;
    // (A flock's owner is its handle, see OpFlock: never reused.)
    if (kind == LockKind::kFlock && it->second != fh) return;
    lock_owners_.erase(it);
  }
  absl::Status status = options_.locks->Unlock(fs_->scope(), ino, owner, kind, 0, UINT64_MAX);
  if (!status.ok()) {
    spdlog::warn("{}: inode {}: cannot release locks at close: {}", fs_->scope().ToString(), ino,
                 status.ToString());
  }
}

prometheus::Histogram* FuseMount::OpLatency(size_t op) const {
  return op_latency_ ? op_latency_->at(op) : nullptr;
}

void FuseMount::TrackLockWait(LockWait* wait, bool live) {
  std::lock_guard lock(waits_mu_);
  if (live) {
    lock_waits_.insert(wait);
  } else {
    lock_waits_.erase(wait);
    // Under the mutex: once an unmount sees the set empty, no callback
    // touches this object any more.
    waits_cv_.notify_all();
  }
}

void FuseMount::EndLockWaits() {
  if (!options_.locks) return;
  std::vector<std::function<void()>> cancels;
  {
    std::lock_guard lock(waits_mu_);
    for (LockWait* wait : lock_waits_) {
      std::lock_guard wait_lock(wait->mu);
      if (wait->cancel) {
        cancels.push_back(wait->cancel);
      } else {
        wait->cancel_requested = true;
      }
    }
  }
  for (auto& cancel : cancels) cancel();
  {
    std::unique_lock lock(waits_mu_);
    if (!waits_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return lock_waits_.empty(); })) {
      spdlog::error("fuse: {}: {} lock waits still unanswered at unmount", options_.mountpoint,
                    lock_waits_.size());
    }
  }
  // No flush or release will come for files still open in a forced
  // unmount: give their locks back now.
  std::map<std::tuple<LockKind, uint64_t, uint64_t>, uint64_t> owners;
  {
    std::lock_guard lock(lock_owners_mu_);
    owners.swap(lock_owners_);
  }
  for (const auto& [key, fh] : owners) {
    const auto& [kind, ino, owner] = key;
    IGNORE_ERROR(options_.locks->Unlock(fs_->scope(), ino, owner, kind, 0, UINT64_MAX));
  }
}

absl::Status FuseMount::Unmount(bool force) {
  if (!mounted_) return absl::OkStatus();
  const std::string& mp = options_.mountpoint;
  // A plain unmount succeeds only when nothing uses the mount; the kernel
  // then ends the connection, which wakes the loop's threads (ENODEV).
  if (umount2(mp.c_str(), 0) != 0) {
    int err = errno;
    if (err == EBUSY && !force) {
      return PosixError(EBUSY, fmt::format("{} is in use (open files or working directories)", mp));
    }
    if (err == EBUSY) {
      // Abort the connection, then detach the mount from the tree: without
      // the abort the loop's threads would wait in read(/dev/fuse) for as
      // long as a process keeps a file open. MNT_FORCE is how FUSE aborts
      // (umount_begin); the fusectl "abort" file is the fallback where that
      // is refused.
      if (umount2(mp.c_str(), MNT_FORCE) != 0 && errno != EBUSY) {
        std::string abort_path = fmt::format("/sys/fs/fuse/connections/{}/abort", connection_);
        if (!(std::ofstream(abort_path) << "1\n")) {
          spdlog::warn("fuse: cannot abort connection {} of {}", connection_, mp);
        }
      }
      if (umount2(mp.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
        spdlog::warn("fuse: lazy unmount of {}: {}", mp, strerror(errno));
      }
    } else if (err != EINVAL) {  // EINVAL: already unmounted (by an operator).
      spdlog::warn("fuse: unmount of {}: {}", mp, strerror(err));
    }
  }
  StopServing();
  spdlog::info("unmounted {}", mp);
  return absl::OkStatus();
}

}  // namespace traincache::fuse
