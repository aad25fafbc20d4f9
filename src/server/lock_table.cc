#include "server/lock_table.h"

#include <fmt/format.h>

#include <algorithm>

#include "traincache/status.h"

namespace traincache::server {

bool LockTable::Overlaps(const LockRange& a, const LockRange& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == LockKind::kFlock) return true;
  return a.start <= b.end && b.start <= a.end;
}

bool LockTable::Conflicts(const HeldLock& held, const LockOwner& owner, const LockRange& range) {
  if (held.owner == owner) return false;
  if (!Overlaps(held.range, range)) return false;
  return held.range.type == LockType::kWrite || range.type == LockType::kWrite;
}

const HeldLock* LockTable::FirstConflict(const File& file, const LockOwner& owner,
                                         const LockRange& range) const {
  for (const HeldLock& h : file.held) {
    if (Conflicts(h, owner, range)) return &h;
  }
  return nullptr;
}

void LockTable::RemoveOwned(File& file, const LockOwner& owner, LockKind kind, uint64_t start,
                            uint64_t end) {
  auto touched = [&](const HeldLock& h) {
    return h.owner == owner && h.range.kind == kind &&
           (kind == LockKind::kFlock || (h.range.end >= start && h.range.start <= end));
  };
  if (std::none_of(file.held.begin(), file.held.end(), touched)) return;
  std::vector<HeldLock> kept;
  kept.reserve(file.held.size() + 1);
  for (const HeldLock& h : file.held) {
    if (!(h.owner == owner) || h.range.kind != kind) {
      kept.push_back(h);
      continue;
    }
    if (kind == LockKind::kFlock) continue;
    if (h.range.end < start || h.range.start > end) {
      kept.push_back(h);
      continue;
    }
    // Keep the parts outside [start, end].
    if (h.range.start < start) {
      HeldLock left = h;
      left.range.end = start - 1;
      kept.push_back(left);
    }
    if (h.range.end > end) {
      HeldLock right = h;
      right.range.start = end + 1;
      kept.push_back(right);
    }
  }
  file.held = std::move(kept);
}

void LockTable::Apply(File& file, const LockOwner& owner, const LockRange& range) {
  RemoveOwned(file, owner, range.kind, range.start, range.end);
  file.held.push_back({owner, range});
}

absl::StatusOr<LockTable::LockResult> LockTable::Lock(const std::string& key,
                                                      const LockOwner& owner,
                                                      const LockRange& in_range, bool wait,
                                                      Granted granted) {
  LockRange range = in_range;
  if (range.type == LockType::kUnlock) return absl::InvalidArgumentError("Lock of type unlock");
  if (range.kind == LockKind::kFlock) {
    range.start = 0;
    range.end = UINT64_MAX;
  }
  if (range.start > range.end) {
    return absl::InvalidArgumentError(
        fmt::format("lock range start {} is past its end {}", range.start, range.end));
  }
  Callbacks callbacks;
  LockResult result{Outcome::kGranted};
  {
    std::lock_guard lock(mu_);
    File& file = files_[key];
    if (file.held.size() + file.waiters.size() >= kMaxPerFile) {
      EraseIfEmpty(key);
      return PosixError(ENOLCK, fmt::format("too many locks on one file (limit {})", kMaxPerFile));
    }
    // A flock conversion gives up the old lock first, as Linux does.
    if (range.kind == LockKind::kFlock) RemoveOwned(file, owner, LockKind::kFlock, 0, UINT64_MAX);
    if (!FirstConflict(file, owner, range)) {
      Apply(file, owner, range);
    } else if (!wait) {
      result = LockResult{Outcome::kConflict};
    } else {
      uint64_t id = next_waiter_++;
      file.waiters.push_back({id, owner, range, std::move(granted)});
      result = LockResult{Outcome::kWaiting, id};
    }
    // What this owner gave up (a downgrade, a conversion) may let waiters in.
    WakeLocked(file, callbacks);
    EraseIfEmpty(key);
  }
  for (auto& [cb, status] : callbacks) cb(status);
  return result;
}

void LockTable::WakeLocked(File& file, Callbacks& out) {
  for (auto it = file.waiters.begin(); it != file.waiters.end();) {
    if (FirstConflict(file, it->owner, it->range)) {
      ++it;
      continue;
    }
    Apply(file, it->owner, it->range);
    out.emplace_back(std::move(it->granted), absl::OkStatus());
    it = file.waiters.erase(it);
  }
}

void LockTable::EraseIfEmpty(const std::string& key) {
  auto it = files_.find(key);
  if (it != files_.end() && it->second.held.empty() && it->second.waiters.empty()) {
    files_.erase(it);
  }
}

void LockTable::Unlock(const std::string& key, const LockOwner& owner, LockKind kind,
                       uint64_t start, uint64_t end) {
  Callbacks callbacks;
  {
    std::lock_guard lock(mu_);
    auto it = files_.find(key);
    if (it == files_.end()) return;
    RemoveOwned(it->second, owner, kind, start, end);
    WakeLocked(it->second, callbacks);
    EraseIfEmpty(key);
  }
  for (auto& [cb, status] : callbacks) cb(status);
}

std::optional<HeldLock> LockTable::Test(const std::string& key, const LockOwner& owner,
                                        const LockRange& range) {
  std::lock_guard lock(mu_);
  auto it = files_.find(key);
  if (it == files_.end()) return std::nullopt;
  const HeldLock* h = FirstConflict(it->second, owner, range);
  if (!h) return std::nullopt;
  return *h;
}

bool LockTable::Cancel(const std::string& key, uint64_t waiter) {
  Granted dropped;  // destroyed outside the mutex
  std::lock_guard lock(mu_);
  auto it = files_.find(key);
  if (it == files_.end()) return false;
  auto& waiters = it->second.waiters;
  auto w = std::find_if(waiters.begin(), waiters.end(),
                        [&](const Waiter& x) { return x.id == waiter; });
  if (w == waiters.end()) return false;
  dropped = std::move(w->granted);
  waiters.erase(w);
  EraseIfEmpty(key);
  return true;
}

void LockTable::ReleaseSession(uint64_t session) {
  Callbacks callbacks;
  {
    std::lock_guard lock(mu_);
    for (auto it = files_.begin(); it != files_.end();) {
      File& file = it->second;
      std::erase_if(file.held, [&](const HeldLock& h) { return h.owner.session == session; });
      for (auto w = file.waiters.begin(); w != file.waiters.end();) {
        if (w->owner.session != session) {
          ++w;
          continue;
        }
        callbacks.emplace_back(std::move(w->granted),
                               absl::AbortedError("the lock session ended (lease expired)"));
        w = file.waiters.erase(w);
      }
      WakeLocked(file, callbacks);
      if (file.held.empty() && file.waiters.empty()) {
        it = files_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [cb, status] : callbacks) cb(status);
}

size_t LockTable::HeldCount() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [key, file] : files_) n += file.held.size();
  return n;
}

size_t LockTable::WaiterCount() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [key, file] : files_) n += file.waiters.size();
  return n;
}

}  // namespace traincache::server
