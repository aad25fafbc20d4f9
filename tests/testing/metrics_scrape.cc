#include "testing/metrics_scrape.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace traincache::testing {

absl::StatusOr<std::string> HttpGet(const std::string& host_port, const std::string& path,
                                    int timeout_seconds) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("not host:port: " + host_port);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
  if (inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError("not an IPv4 address: " + host_port);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(fmt::format("socket: {}", strerror(errno)));
  timeval tv{.tv_sec = timeout_seconds, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(fmt::format("connect {}: {}", host_port, strerror(err)));
  }
  // HTTP/1.0: the server closes the connection after the answer, so the
  // body is everything up to EOF.
  std::string request = fmt::format("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", path, host_port);
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(fmt::format("send: {}", strerror(err)));
  }
  std::string response;
  char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      return absl::DeadlineExceededError(fmt::format("recv: {}", strerror(err)));
    }
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  size_t line_end = response.find("\r\n");
  std::string status_line = response.substr(0, line_end);
  if (status_line.find(" 200") == std::string::npos) {
    return absl::UnavailableError("answer: " + status_line);
  }
  size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return absl::DataLossError("no end of headers");
  return response.substr(body + 4);
}

MetricSamples ParseMetrics(const std::string& text) {
  MetricSamples out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    // The value follows the last space (label values in these tests hold none).
    size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string value = line.substr(space + 1);
    out[line.substr(0, space)] = std::strtod(value.c_str(), nullptr);  // "Nan" reads as NaN
  }
  return out;
}

MetricSamples ScrapeMetrics(const std::string& host_port) {
  auto body = HttpGet(host_port, "/metrics");
  return body.ok() ? ParseMetrics(*body) : MetricSamples{};
}

std::optional<double> Sample(const MetricSamples& samples, const std::string& key) {
  auto it = samples.find(key);
  if (it == samples.end()) return std::nullopt;
  return it->second;
}

}  // namespace traincache::testing
