#include "cli/service_notify.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>

#include "traincache/status.h"

namespace traincache::cli {
namespace {

// Status lines are single lines: a newline would end the assignment.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

void Notify(const std::string& message) {
  int rc = sd_notify(/*unset_environment=*/0, message.c_str());
  if (rc < 0) spdlog::warn("sd_notify({}): {}", message, strerror(-rc));
}

}  // namespace

void NotifyReady(const std::string& status) {
  Notify(fmt::format("READY=1\nSTATUS={}", OneLine(status)));
}

void NotifyStopping(const std::string& status) {
  Notify(fmt::format("STOPPING=1\nSTATUS={}", OneLine(status)));
}

void NotifyStatus(const std::string& status) { Notify("STATUS=" + OneLine(status)); }

absl::Status WaitUntilAnswering(const std::vector<std::string>& mountpoints,
                                std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::pair<std::string, std::future<absl::Status>>> checks;
  for (const std::string& mp : mountpoints) {
    // A detached thread and a promise, not std::async: the future of
    // std::async would wait for a hung stat in its destructor.
    auto promise = std::make_shared<std::promise<absl::Status>>();
    checks.emplace_back(mp, promise->get_future());
    std::thread([mp, promise] {
      struct stat st {}, parent {};
      std::string up = std::filesystem::path(mp).parent_path().string();
      if (stat(mp.c_str(), &st) != 0) {
        int err = errno;
        promise->set_value(PosixError(err, fmt::format("stat {}: {}", mp, strerror(err))));
      } else if (stat(up.c_str(), &parent) == 0 && parent.st_dev == st.st_dev) {
        // The mountpoint directory itself: nothing is mounted on it.
        promise->set_value(absl::FailedPreconditionError(fmt::format("{} is not mounted", mp)));
      } else {
        promise->set_value(absl::OkStatus());
      }
    }).detach();
  }
  for (auto& [mp, result] : checks) {
    if (result.wait_until(deadline) != std::future_status::ready) {
      return absl::DeadlineExceededError(fmt::format(
          "{} did not answer a stat within {} ms", mp, timeout.count()));
    }
    RETURN_IF_ERROR(result.get());
  }
  return absl::OkStatus();
}

}  // namespace traincache::cli
