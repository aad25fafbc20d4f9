#include "fuse/handover_state.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "traincache/status.h"

namespace traincache::fuse {
namespace {

constexpr char kMagic[8] = {'T', 'C', 'F', 'U', 'S', 'E', '0', '1'};
constexpr size_t kHeader = sizeof(kMagic) + 8 + 4 + 4;
constexpr size_t kMaxInit = 4096;
constexpr size_t kMaxMountpoint = 4096;

}  // namespace

absl::StatusOr<int> CreateHandoverFd(const HandoverState& state) {
  int fd = memfd_create("traincache-fuse-state", MFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "memfd_create for the FUSE hand-over state");
  if (absl::Status s = WriteHandoverState(fd, state); !s.ok()) {
    close(fd);
    return s;
  }
  return fd;
}

absl::Status WriteHandoverState(int fd, const HandoverState& state) {
  if (state.init_request.size() > kMaxInit || state.mountpoint.size() > kMaxMountpoint) {
    return absl::InvalidArgumentError("FUSE hand-over state too large");
  }
  std::string out(kMagic, sizeof(kMagic));
  const uint32_t init_len = static_cast<uint32_t>(state.init_request.size());
  const uint32_t mp_len = static_cast<uint32_t>(state.mountpoint.size());
  out.append(reinterpret_cast<const char*>(&state.epoch), 8);
  out.append(reinterpret_cast<const char*>(&init_len), 4);
  out.append(reinterpret_cast<const char*>(&mp_len), 4);
  out += state.init_request;
  out += state.mountpoint;
  // One pwrite of a few hundred bytes into memory: a reader after a crash
  // sees the old or the new copy (the lengths only ever describe one).
  ssize_t n = pwrite(fd, out.data(), out.size(), 0);
  if (n != static_cast<ssize_t>(out.size())) {
    return ErrnoStatus(n < 0 ? errno : EIO, "write of the FUSE hand-over state");
  }
  if (ftruncate(fd, static_cast<off_t>(out.size())) != 0) {
    return ErrnoStatus(errno, "truncate of the FUSE hand-over state");
  }
  return absl::OkStatus();
}

absl::StatusOr<HandoverState> ReadHandoverState(int fd) {
  std::string in(kHeader + kMaxInit + kMaxMountpoint, '\0');
  ssize_t n = pread(fd, in.data(), in.size(), 0);
  if (n < 0) return ErrnoStatus(errno, "read of the FUSE hand-over state");
  in.resize(static_cast<size_t>(n));
  if (in.size() < kHeader || std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::InvalidArgumentError("not a traincache FUSE hand-over state");
  }
  HandoverState s;
  uint32_t init_len = 0, mp_len = 0;
  std::memcpy(&s.epoch, in.data() + 8, 8);
  std::memcpy(&init_len, in.data() + 16, 4);
  std::memcpy(&mp_len, in.data() + 20, 4);
  if (init_len > kMaxInit || mp_len > kMaxMountpoint || in.size() != kHeader + init_len + mp_len ||
      s.epoch == 0) {
    return absl::InvalidArgumentError("torn or corrupt FUSE hand-over state");
  }
  s.init_request = in.substr(kHeader, init_len);
  s.mountpoint = in.substr(kHeader + init_len, mp_len);
  return s;
}

}  // namespace traincache::fuse
