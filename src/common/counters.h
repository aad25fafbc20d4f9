// Counters: named monotonically increasing counters (RPC calls, errors, bytes
// in and out), read as a snapshot by the stats RPC and tests.
// Thread-safe.
#ifndef TRAINCACHE_COMMON_COUNTERS_H_
#define TRAINCACHE_COMMON_COUNTERS_H_

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace traincache {

class Counters {
 public:
  void Add(std::string_view name, uint64_t delta = 1);
  uint64_t Get(std::string_view name) const;
  std::map<std::string, uint64_t> Snapshot() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> values_;  // guarded by mu_
};

}  // namespace traincache

#endif  // TRAINCACHE_COMMON_COUNTERS_H_
