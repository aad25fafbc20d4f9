#include "common/data_dir_lock.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace traincache {

absl::StatusOr<int> TakeDataDirLock(const std::string& data_dir, bool create) {
  const std::string path = data_dir + "/server.lock";
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT && !create) {
      return absl::NotFoundError(fmt::format("no server.lock: {}", std::strerror(err)));
    }
    return absl::InternalError(fmt::format("cannot open {}: {}", path, std::strerror(err)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[32] = {};
    ssize_t n = pread(fd, holder, sizeof(holder) - 1, 0);
    close(fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(fmt::format(
          "pid {}", n > 0 ? std::string(holder, std::strcspn(holder, "\n")) : "unknown"));
    }
    return absl::InternalError(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
  }
  return fd;
}

}  // namespace traincache
