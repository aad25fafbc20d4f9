// The in-memory NodeTier (node_tier.h): the disk tier's contract without a
// disk, for tests of everything above the tier. Same LRU by bytes with the
// same watermarks as the disk tier; one mutex around everything, since no
// call does I/O.

#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "node/tier_common.h"
#include "traincache/node_tier.h"

namespace traincache {
namespace {

using node_internal::CheckChunkRange;
using node_internal::ImageName;
using node_internal::InodePrefix;
using node_internal::ScopePrefix;

constexpr double kHighWatermark = 0.95;
constexpr double kLowWatermark = 0.85;

class MemoryTier final : public NodeTier {
 public:
  explicit MemoryTier(uint64_t capacity) { stats_.capacity_bytes = capacity; }

  absl::StatusOr<bool> Read(const ContentKey& key, const ChunkMap& map, uint64_t index,
                            uint64_t offset, size_t n, char* out) override {
    if (absl::Status s = CheckChunkRange(map, index, offset, n); !s.ok()) return s;
    if (!map.chunks[index].id) {
      std::memset(out, 0, n);
      return true;
    }
    std::lock_guard<std::mutex> lock(mu_);
    Image* image = Find(key, map);
    if (image == nullptr || !image->chunks[index]) {
      ++stats_.misses;
      return false;
    }
    Touch(*image);
    const std::string& bytes = *image->chunks[index];
    size_t have = offset < bytes.size() ? std::min<size_t>(n, bytes.size() - offset) : 0;
    if (have > 0) std::memcpy(out, bytes.data() + offset, have);
    std::memset(out + have, 0, n - have);
    ++stats_.hits;
    stats_.hit_bytes += n;
    return true;
  }

  absl::Status Store(const ContentKey& key, const ChunkMap& map, uint64_t index,
                     std::string_view bytes) override {
    if (absl::Status s = CheckChunkRange(map, index, 0, 0); !s.ok()) return s;
    const ChunkRef& ref = map.chunks[index];
    if (!ref.id) return absl::InvalidArgumentError(fmt::format("chunk {} is a hole", index));
    const size_t len = std::min<size_t>(bytes.size(), ref.length);

    std::lock_guard<std::mutex> lock(mu_);
    Image* image = Find(key, map);
    if (image == nullptr) {
      std::string name = ImageName(key);
      auto [it, inserted] = images_.try_emplace(name);
      it->second.name = name;
      it->second.size = map.size;
      it->second.chunk_size = map.chunk_size;
      it->second.chunks.resize(map.chunks.size());
      lru_.push_front(name);
      it->second.lru = lru_.begin();
      image = &it->second;
    }
    Touch(*image);
    if (image->chunks[index]) return absl::OkStatus();
    const uint64_t capacity = stats_.capacity_bytes;
    if (stats_.used_bytes + len > kHighWatermark * capacity) {
      // Least recently used first; never the image we are storing into.
      // Victims are chosen first: erasing one erases its node of lru_.
      uint64_t used = stats_.used_bytes;
      std::vector<std::string> victims;
      for (auto it = lru_.rbegin(); it != lru_.rend() && used + len > kLowWatermark * capacity;
           ++it) {
        if (*it == image->name) continue;
        victims.push_back(*it);
        used -= images_.at(*it).bytes;
      }
      for (const std::string& victim : victims) {
        stats_.evicted_bytes += images_.at(victim).bytes;
        Erase(victim);
      }
    }
    if (stats_.used_bytes + len > capacity) {
      return absl::ResourceExhaustedError(fmt::format(
          "node tier full: {} of {} bytes used and nothing more to evict for {} bytes",
          stats_.used_bytes, capacity, len));
    }
    image->chunks[index] = std::string(bytes.substr(0, len));
    image->bytes += len;
    stats_.used_bytes += len;
    return absl::OkStatus();
  }

  bool Contains(const ContentKey& key, const ChunkMap& map, uint64_t index) override {
    if (index >= map.chunks.size()) return false;
    if (!map.chunks[index].id) return true;
    std::lock_guard<std::mutex> lock(mu_);
    Image* image = Find(key, map);
    return image != nullptr && image->chunks[index].has_value();
  }

  bool Complete(const ContentKey& key, const ChunkMap& map) override {
    std::lock_guard<std::mutex> lock(mu_);
    Image* image = Find(key, map);
    for (size_t i = 0; i < map.chunks.size(); ++i) {
      if (map.chunks[i].id && (image == nullptr || !image->chunks[i])) return false;
    }
    return true;
  }

  std::string ImagePath(const ContentKey& key) const override {
    return "memory:" + ImageName(key);
  }

  void Distrust(const ContentKey&) override {}  // Nothing outside can write it.

  absl::StatusOr<std::unique_ptr<ImageLease>> LeaseImage(const ContentKey& key,
                                                         const ChunkMap&) override {
    return absl::NotFoundError(fmt::format("{}: the memory tier has no image files",
                                           ImageName(key)));
  }

  absl::Status DropScope(const Scope& scope) override {
    std::lock_guard<std::mutex> lock(mu_);
    ErasePrefix(ScopePrefix(scope), std::nullopt);
    return absl::OkStatus();
  }

  absl::Status DropOtherVersions(const Scope& scope, InodeId ino, uint64_t keep_version) override {
    std::lock_guard<std::mutex> lock(mu_);
    ErasePrefix(InodePrefix(scope, ino), ImageName(ContentKey{scope, ino, keep_version}));
    return absl::OkStatus();
  }

  TierStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    TierStats stats = stats_;
    stats.images = images_.size();
    return stats;
  }

 private:
  struct Image {
    std::string name;
    uint64_t size = 0;
    uint32_t chunk_size = 0;
    std::vector<std::optional<std::string>> chunks;  // nullopt: absent.
    uint64_t bytes = 0;
    std::list<std::string>::iterator lru;
  };

  // The image of `key` if it has `map`'s shape (a content never changes, so a
  // different shape is a caller's bug; it reads as absent).
  Image* Find(const ContentKey& key, const ChunkMap& map) {
    auto it = images_.find(ImageName(key));
    if (it == images_.end()) return nullptr;
    Image& image = it->second;
    if (image.size != map.size || image.chunk_size != map.chunk_size ||
        image.chunks.size() != map.chunks.size()) {
      return nullptr;
    }
    return &image;
  }

  void Touch(Image& image) { lru_.splice(lru_.begin(), lru_, image.lru); }

  void Erase(const std::string& name) {
    auto it = images_.find(name);
    stats_.used_bytes -= it->second.bytes;
    lru_.erase(it->second.lru);
    images_.erase(it);
  }

  // Erases images whose name starts with `prefix`, except `keep`.
  void ErasePrefix(const std::string& prefix, const std::optional<std::string>& keep) {
    for (auto it = images_.lower_bound(prefix);
         it != images_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      std::string name = (it++)->first;
      if (name != keep) Erase(name);
    }
  }

  mutable std::mutex mu_;
  std::map<std::string, Image> images_;  // guarded by mu_; by name, so prefixes are ranges
  std::list<std::string> lru_;           // guarded by mu_; front: most recently used
  TierStats stats_;                      // guarded by mu_ (images is computed)
};

}  // namespace

std::unique_ptr<NodeTier> NewMemoryTier(uint64_t capacity_bytes) {
  return std::make_unique<MemoryTier>(capacity_bytes);
}

}  // namespace traincache
