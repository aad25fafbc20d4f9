#include "cli/fd_store.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace traincache::cli {
namespace {

std::string NameOf(const char* what, const Scope& scope) {
  return fmt::format("{}-{}-{}", what, scope.kind_name(), scope.id());
}

void Store(const std::string& name, int fd) {
  if (getenv("NOTIFY_SOCKET") == nullptr) return;
  const std::string message = "FDSTORE=1\nFDNAME=" + name;
  int rc = sd_pid_notify_with_fds(0, /*unset_environment=*/0, message.c_str(), &fd, 1);
  if (rc <= 0) {
    spdlog::warn(
        "cannot hand {} to the service manager's fd store ({}): a restart of the "
        "daemon will not keep this mount",
        name, rc < 0 ? strerror(-rc) : "no NOTIFY_SOCKET");
  }
}

}  // namespace

std::map<std::string, StoredMount> TakeStoredMounts() {
  std::map<std::string, StoredMount> out;
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  if (n <= 0) return out;
  std::map<std::string, StoredMount> found;
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    const std::string name = names && names[i] ? names[i] : "";
    // "<fuse|state>-<kind>-<id>": the kind has no '-', the id may.
    const size_t dash1 = name.find('-');
    const size_t dash2 = dash1 == std::string::npos ? dash1 : name.find('-', dash1 + 1);
    absl::StatusOr<Scope> scope = absl::InvalidArgumentError("unnamed");
    if (dash2 != std::string::npos) {
      scope =
          Scope::Parse(name.substr(dash1 + 1, dash2 - dash1 - 1) + ":" + name.substr(dash2 + 1));
    }
    const std::string what = name.substr(0, dash1);
    if (!scope.ok() || (what != "fuse" && what != "state")) {
      spdlog::warn("closing descriptor {} ({}) passed at start: not a traincache mount", fd, name);
      close(fd);
      continue;
    }
    StoredMount& m = found[scope->ToString()];
    int& slot = what == "fuse" ? m.fuse_fd : m.state_fd;
    if (slot >= 0) close(slot);  // A duplicate: the last one wins.
    slot = fd;
  }
  for (int i = 0; names && i < n; ++i) free(names[i]);
  free(names);
  for (auto& [scope, m] : found) {
    if (m.fuse_fd < 0 || m.state_fd < 0) {
      spdlog::warn("{}: half a stored mount passed at start (connection {}, state {}); closed",
                   scope, m.fuse_fd, m.state_fd);
      if (m.fuse_fd >= 0) close(m.fuse_fd);
      if (m.state_fd >= 0) close(m.state_fd);
      continue;
    }
    out.emplace(scope, m);
  }
  return out;
}

void StoreMount(const Scope& scope, int fuse_fd, int state_fd) {
  if (fuse_fd < 0 || state_fd < 0) return;
  // The state first: a connection stored alone is of no use to the next
  // process.
  Store(NameOf("state", scope), state_fd);
  Store(NameOf("fuse", scope), fuse_fd);
}

void RemoveStoredMount(const Scope& scope) {
  if (getenv("NOTIFY_SOCKET") == nullptr) return;
  for (const char* what : {"fuse", "state"}) {
    const std::string message = "FDSTOREREMOVE=1\nFDNAME=" + NameOf(what, scope);
    int rc = sd_notify(/*unset_environment=*/0, message.c_str());
    if (rc < 0) spdlog::warn("sd_notify({}): {}", message, strerror(-rc));
  }
}

}  // namespace traincache::cli
