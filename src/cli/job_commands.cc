#include "cli/job_commands.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <vector>

#include "rpc/status_convert.h"
#include "traincache/status.h"

namespace traincache::cli {
namespace {

// "12.35 GB": the 1000-based units users see elsewhere in the CLI.
std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1000.0 && unit + 1 < std::size(kUnits)) {
    v /= 1000.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, kUnits[unit]);
}

// Single quotes for a shell, so a launcher can eval the output.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// The fstype of the mount holding `path` (longest mountpoint prefix of its
// real path in /proc/self/mountinfo), "" if none is found.
std::string FsTypeOf(const std::string& path) {
  std::error_code ec;
  std::string real = std::filesystem::canonical(path, ec).string();
  if (ec) return "";
  std::ifstream in("/proc/self/mountinfo");
  std::string line, best_point, best_type;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options ... - fstype source ...
    std::istringstream fields(line);
    std::string id, parent, dev, root, point, field;
    fields >> id >> parent >> dev >> root >> point;
    while (fields >> field && field != "-") {
    }
    std::string type;
    fields >> type;
    bool under = real == point || point == "/" ||
                 (real.rfind(point, 0) == 0 && real.size() > point.size() &&
                  real[point.size()] == '/');
    if (under && point.size() >= best_point.size()) {
      best_point = point;
      best_type = type;
    }
  }
  return best_type;
}

}  // namespace

std::unique_ptr<v1::NodeAdmin::Stub> NodeAdminStub(const std::string& socket) {
  return v1::NodeAdmin::NewStub(
      grpc::CreateChannel("unix:" + socket, grpc::InsecureChannelCredentials()));
}

std::unique_ptr<grpc::ClientContext> NodeAdminContext() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return ctx;
}

absl::Status AttachJob(const std::string& socket, const v1::AttachJobRequest& req,
                       const std::string& format) {
  v1::AttachJobResponse resp;
  RETURN_IF_ERROR(
      rpc::FromGrpcStatus(NodeAdminStub(socket)->Attach(NodeAdminContext().get(), req, &resp)));
  if (format == "json") {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    if (!google::protobuf::util::MessageToJsonString(resp, &json, options).ok()) {
      return absl::InternalError("cannot print the answer as JSON");
    }
    std::cout << json;
  } else {
    std::map<std::string, std::string> env(resp.env().begin(), resp.env().end());
    for (const auto& [key, value] : env) std::cout << "export " << key << "=" << ShellQuote(value) << "\n";
    std::string binds;
    for (const auto& b : resp.binds()) {
      binds += (binds.empty() ? "" : " ") + b.source() + ":" + b.target();
    }
    std::cout << "export TRAINCACHE_BINDS=" << ShellQuote(binds) << "\n";
  }
  std::cerr << "traincache: " << resp.message() << (resp.already_attached() ? " (already attached)" : "")
            << "\n";
  return absl::OkStatus();
}

absl::Status DetachJob(const std::string& socket, const std::string& job_id) {
  v1::DetachJobRequest req;
  req.set_job_id(job_id);
  v1::DetachJobResponse resp;
  RETURN_IF_ERROR(
      rpc::FromGrpcStatus(NodeAdminStub(socket)->Detach(NodeAdminContext().get(), req, &resp)));
  std::cout << "job " << job_id << " detached: its writes are committed";
  if (resp.released_scopes_size() > 0) {
    std::cout << "; no job uses";
    for (const std::string& s : resp.released_scopes()) std::cout << " " << s;
    std::cout << " any more (unmounted after the grace period)";
  }
  std::cout << "\n";
  return absl::OkStatus();
}

absl::Status NodeStats(const std::string& socket) {
  v1::GetNodeStatsResponse resp;
  RETURN_IF_ERROR(rpc::FromGrpcStatus(
      NodeAdminStub(socket)->GetNodeStats(NodeAdminContext().get(), {}, &resp)));
  std::map<std::string, uint64_t> c(resp.counters().begin(), resp.counters().end());
  auto get = [&](const std::string& name) { return c.count(name) ? c[name] : 0; };
  uint64_t hits = get("tier.hits"), misses = get("tier.misses");
  uint64_t cap = get("tier.capacity_bytes"), used = get("tier.used_bytes");
  std::cout << fmt::format("node tier: {} of {} used ({:.1f}%), {} images, {} evicted\n",
                           HumanBytes(used), HumanBytes(cap),
                           cap ? 100.0 * static_cast<double>(used) / static_cast<double>(cap) : 0.0,
                           get("tier.images"), HumanBytes(get("tier.evicted_bytes")));
  std::cout << fmt::format(
      "reads: {} chunk reads from the tier ({}), {} misses; hit ratio {:.1f}%\n", hits,
      HumanBytes(get("tier.hit_bytes")), misses,
      hits + misses ? 100.0 * static_cast<double>(hits) / static_cast<double>(hits + misses) : 0.0);
  std::cout << fmt::format("from the server: {} in {} fetches ({} coalesced, {} readahead)\n",
                           HumanBytes(get("fetch.fetched_bytes")), get("fetch.fetches"),
                           get("fetch.coalesced"), get("fetch.prefetches"));
  std::cout << fmt::format("mounts: {}, attached jobs: {}\n", get("node.mounts"), get("node.jobs"));
  for (const auto& [name, value] : c) {
    if (name.rfind("scope.", 0) != 0 || name.size() < 9 || name.substr(name.size() - 8) != ".commits") {
      continue;
    }
    std::string scope = name.substr(6, name.size() - 6 - 8);
    std::cout << fmt::format("  {}: {} commits, {} uploaded in {} chunks ({} while written)\n",
                             scope, value, HumanBytes(get("scope." + scope + ".uploaded_bytes")),
                             get("scope." + scope + ".uploaded_chunks"),
                             get("scope." + scope + ".background_uploaded_chunks"));
  }
  std::cout << "counters:\n";
  for (const auto& [name, value] : c) std::cout << "  " << name << " " << value << "\n";
  return absl::OkStatus();
}

absl::Status PinCommand(rpc::ServerClient& client, const std::string& action,
                        const std::string& project, const std::string& cluster) {
  auto print = [](const v1::Pin& pin) {
    std::cout << "project " << pin.project() << " is pinned to cluster " << pin.cluster();
    if (!pin.job_id().empty()) std::cout << " (by job " << pin.job_id() << ")";
    std::cout << " since " << pin.pinned_at() << "\n";
  };
  v1::PinRef ref;
  ref.set_project(project);
  if (action == "show") {
    v1::Pin pin;
    RETURN_IF_ERROR(client.Call(&v1::Cluster::Stub::GetPin, client.cluster(), ref, &pin));
    print(pin);
  } else if (action == "set") {
    v1::SetPinRequest req;
    req.set_project(project);
    req.set_cluster(cluster);
    v1::Pin pin;
    RETURN_IF_ERROR(client.Call(&v1::Cluster::Stub::SetPin, client.cluster(), req, &pin));
    print(pin);
    std::cout << "(the cache the project had on its old cluster stays there; delete it with "
                 "`traincache delete-scope` on that cluster if it is not wanted)\n";
  } else {
    v1::ClearPinResponse resp;
    RETURN_IF_ERROR(client.Call(&v1::Cluster::Stub::ClearPin, client.cluster(), ref, &resp));
    std::cout << "project " << project << (resp.existed() ? " unpinned" : " was not pinned") << "\n";
  }
  return absl::OkStatus();
}

absl::Status DeleteProject(rpc::ServerClient& client, const std::string& project) {
  RETURN_IF_ERROR(ValidateScopeId(project));
  v1::ScopeRef ref;
  ref.set_scope("project:" + project);
  v1::DeleteScopeResponse resp;
  RETURN_IF_ERROR(client.Call(&v1::Admin::Stub::DeleteScope, client.admin(), ref, &resp));
  std::cout << "deleted project " << project << ": metadata, " << resp.chunks_deleted()
            << " chunks, pin and quota; node daemons drop it from their tiers within their scope "
               "check interval\n";
  return absl::OkStatus();
}

absl::Status Warmup(const std::string& path, bool progress) {
  std::string type = FsTypeOf(path);
  if (type.empty()) return PosixError(ENOENT, fmt::format("{} does not exist", path));
  if (type != "fuse.traincache") {
    return absl::FailedPreconditionError(
        fmt::format("{} is not on a traincache mount (it is on {})", path, type));
  }
  // First the list, so the bar knows the total.
  std::vector<std::pair<std::string, uint64_t>> files;
  uint64_t total = 0;
  std::error_code ec;
  if (std::filesystem::is_regular_file(std::filesystem::symlink_status(path, ec))) {
    files.emplace_back(path, std::filesystem::file_size(path, ec));
  } else {
    for (auto it = std::filesystem::recursive_directory_iterator(
             path, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
        files.emplace_back(it->path().string(), it->file_size(ec));
      }
    }
    if (ec) return PosixError(ec.value(), fmt::format("listing {}: {}", path, ec.message()));
  }
  for (const auto& f : files) total += f.second;

  const auto start = std::chrono::steady_clock::now();
  auto last_draw = start - std::chrono::seconds(1);
  uint64_t done = 0;
  size_t files_done = 0;
  auto draw = [&](bool final) {
    auto now = std::chrono::steady_clock::now();
    if (!progress || (!final && now - last_draw < std::chrono::milliseconds(200))) return;
    last_draw = now;
    double secs = std::chrono::duration<double>(now - start).count();
    double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    int filled = static_cast<int>(frac * 30);
    std::cerr << fmt::format("\r[{}{}] {:3.0f}% {} / {}  {}/s  {}/{} files", std::string(filled, '#'),
                             std::string(30 - filled, '.'), frac * 100, HumanBytes(done),
                             HumanBytes(total),
                             HumanBytes(secs > 0 ? static_cast<uint64_t>(done / secs) : 0),
                             files_done, files.size())
              << (final ? "\n" : "") << std::flush;
  };
  std::vector<char> buf(1 << 20);
  for (const auto& [file, size] : files) {
    int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, fmt::format("open {}", file));
    ssize_t n;
    while ((n = read(fd, buf.data(), buf.size())) > 0) {
      done += static_cast<uint64_t>(n);
      draw(false);
    }
    int err = errno;
    // The bytes are in the node tier now; they need not stay in page cache.
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (n < 0) return ErrnoStatus(err, fmt::format("read {}", file));
    ++files_done;
  }
  draw(true);
  std::cout << fmt::format("warmed {} files, {} into the node tier\n", files.size(), HumanBytes(done));
  return absl::OkStatus();
}

}  // namespace traincache::cli
