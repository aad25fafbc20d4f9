#include "common/counters.h"

namespace traincache {

void Counters::Add(std::string_view name, uint64_t delta) {
  std::lock_guard lock(mu_);
  auto it = values_.find(name);
  if (it == values_.end()) {
    values_.emplace(std::string(name), delta);
  } else {
    it->second += delta;
  }
}

uint64_t Counters::Get(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = values_.find(name);
  return it == values_.end() ? 0 : it->second;
}

std::map<std::string, uint64_t> Counters::Snapshot() const {
  std::lock_guard lock(mu_);
  return {values_.begin(), values_.end()};
}

}  // namespace traincache
