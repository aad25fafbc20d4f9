#include "node/chunk_fetcher.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/thread_pool.h"
#include "node/tier_common.h"
#include "traincache/status.h"

namespace traincache::node {
namespace {

using Clock = std::chrono::steady_clock;

// Readers tracked per content for sequential detection (several processes
// reading one file each look sequential on their own).
constexpr size_t kCursorsPerContent = 4;
// Contents tracked for sequential detection; past this the table starts over.
constexpr size_t kMaxStreams = 4096;
// A content read within this long counts as an active stream (the readahead
// memory is shared among those).
constexpr auto kActiveStreamAge = std::chrono::seconds(1);
// How often the active streams are counted again.
constexpr auto kActiveStreamRecount = std::chrono::milliseconds(100);

// Copies [offset, offset+n) of a chunk whose bytes are `bytes` into `out`;
// past the end of `bytes` it reads zeros (a short chunk).
void CopyOut(const std::string& bytes, uint64_t offset, size_t n, char* out) {
  size_t have = offset < bytes.size() ? std::min<size_t>(n, bytes.size() - offset) : 0;
  if (have > 0) std::memcpy(out, bytes.data() + offset, have);
  std::memset(out + have, 0, n - have);
}

// The key of a chunk in memory: scope, then the id's raw bytes. A scope
// string never holds '\0'.
std::string MemoryKey(const Scope& scope, const ChunkId& id) {
  std::string key = scope.ToString();
  key.push_back('\0');
  key.append(id.bytes());
  return key;
}

}  // namespace

class ChunkFetcher::Impl {
 public:
  Impl(ClusterClient* client, NodeTier* tier, Options options)
      : client_(client),
        tier_(tier),
        options_(options),
        pool_(std::make_unique<ThreadPool>(std::max<size_t>(options.threads, 1))) {}

  ~Impl() {
    // Queued readahead is dropped (each task sees stopping_); the pool's
    // destructor waits for the fetches already running.
    stopping_ = true;
    pool_.reset();
  }

  absl::StatusOr<size_t> Read(const ContentKey& key, const ChunkMap& map, uint64_t offset,
                              size_t n, char* out) {
    if (offset >= map.size || n == 0) return 0;
    n = static_cast<size_t>(std::min<uint64_t>(n, map.size - offset));
    const uint64_t chunk_size = map.chunk_size;
    const uint64_t end = offset + n;
    const std::string name = node_internal::ImageName(key);
    MaybeReadAhead(key, name, map, offset, end);

    for (uint64_t pos = offset; pos < end;) {
      const uint64_t index = pos / chunk_size;
      const uint64_t in_chunk = pos - index * chunk_size;
      const size_t len = static_cast<size_t>(std::min(end - pos, chunk_size - in_chunk));
      char* dst = out + (pos - offset);
      if (index >= map.chunks.size()) {
        return absl::InvalidArgumentError(fmt::format(
            "chunk map of {} has {} chunks for {} bytes", name, map.chunks.size(), map.size));
      }
      const ChunkRef& ref = map.chunks[index];
      // Past the ref's length (only in a malformed map) and in holes: zeros.
      const size_t in_ref =
          in_chunk < ref.length ? std::min<size_t>(len, ref.length - in_chunk) : 0;
      std::memset(dst + in_ref, 0, len - in_ref);
      if (ref.id && in_ref > 0) {
        RETURN_IF_ERROR(ReadChunk(key, name, map, index, in_chunk, in_ref, dst));
      } else {
        std::memset(dst, 0, in_ref);
      }
      pos += len;
    }
    return n;
  }

  void Prefetch(const ContentKey& key, std::shared_ptr<const ChunkMap> map, uint64_t first,
                uint64_t count) {
    const std::string name = node_internal::ImageName(key);
    const uint64_t last = std::min<uint64_t>(map->chunks.size(), first + count);
    for (uint64_t index = first; index < last; ++index) {
      if (!map->chunks[index].id) continue;
      pool_->Submit([this, key, name, map, index] {
        if (stopping_ || InMemory(key.scope, *map->chunks[index].id) ||
            tier_->Contains(key, *map, index)) {
          return;
        }
        Fetched fetched = FetchOnce(key, name, *map, index, /*prefetch=*/true);
        if (!fetched.status.ok()) {
          // IGNORE_ERROR: a readahead failure only costs the reader a fetch of its own.
          spdlog::debug("readahead of chunk {} of {}: {}", index, name,
                        fetched.status.ToString());
        }
      });
    }
  }

  FetcherStats Stats() const {
    FetcherStats stats;
    stats.fetches = fetches_.load();
    stats.fetched_bytes = fetched_bytes_.load();
    stats.coalesced = coalesced_.load();
    stats.prefetches = prefetches_.load();
    stats.verify_failures = verify_failures_.load();
    stats.memory_hits = memory_hits_.load();
    std::lock_guard<std::mutex> lock(memory_mu_);
    stats.memory_bytes = memory_used_;
    return stats;
  }

  void DropScope(const Scope& scope) {
    std::string prefix = scope.ToString();
    prefix.push_back('\0');
    std::lock_guard<std::mutex> lock(memory_mu_);
    for (auto it = memory_lru_.begin(); it != memory_lru_.end();) {
      if (it->compare(0, prefix.size(), prefix) == 0) {
        auto found = memory_.find(*it);
        memory_used_ -= found->second.bytes->size();
        memory_.erase(found);
        it = memory_lru_.erase(it);
      } else {
        ++it;
      }
    }
  }

 private:
  // The outcome of one flight: the chunk's bytes (the first ref.length bytes
  // at least, zero padded) or the error every waiter gets.
  struct Fetched {
    absl::Status status;
    std::shared_ptr<const std::string> bytes;
    bool from_server = false;  // Verified bytes the tier does not hold yet.
  };
  using FlightKey = std::pair<std::string, uint64_t>;  // (image name, chunk index)

  struct Cursor {
    uint64_t next_offset = 0;  // Where a sequential reader's next read starts.
    uint64_t used = 0;         // Recency among the content's cursors.
  };
  struct Stream {
    Cursor cursors[kCursorsPerContent];
    uint64_t clock = 0;
    uint64_t ahead_until = 0;  // Chunks below this were already read ahead.
    uint32_t window = 0;       // Chunks read ahead of a sequential reader; 0: not yet set.
    uint64_t grown_at = 0;     // The chunk a sequential reader was in when `window` last grew.
    Clock::time_point last_read;
    std::shared_ptr<const ChunkMap> map;  // Copied once per content, shared by readahead.
  };
  struct Remembered {
    std::shared_ptr<const std::string> bytes;
    std::list<std::string>::iterator lru;
  };

  // Copies [in_chunk, in_chunk+n) of non-hole chunk `index` into `out`: from
  // memory, else the tier, else from one fetch shared with every concurrent
  // reader.
  absl::Status ReadChunk(const ContentKey& key, const std::string& name, const ChunkMap& map,
                         uint64_t index, uint64_t in_chunk, size_t n, char* out) {
    if (std::shared_ptr<const std::string> bytes = Recall(key.scope, *map.chunks[index].id)) {
      ++memory_hits_;
      CopyOut(*bytes, in_chunk, n, out);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(bool hit, tier_->Read(key, map, index, in_chunk, n, out));
    if (hit) return absl::OkStatus();
    Fetched fetched = FetchOnce(key, name, map, index, /*prefetch=*/false);
    RETURN_IF_ERROR(fetched.status);
    CopyOut(*fetched.bytes, in_chunk, n, out);
    return absl::OkStatus();
  }

  // Joins the flight of chunk `index` if there is one, else leads it.
  Fetched FetchOnce(const ContentKey& key, const std::string& name, const ChunkMap& map,
                    uint64_t index, bool prefetch) {
    FlightKey flight_key(name, index);
    std::promise<Fetched> promise;
    std::shared_future<Fetched> flight;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = flights_.find(flight_key);
      if (it != flights_.end()) {
        flight = it->second;
        if (!prefetch) ++coalesced_;
      } else {
        flights_.emplace(flight_key, promise.get_future().share());
      }
    }
    if (flight.valid()) return flight.get();

    Fetched fetched = Fetch(key, name, map, index, prefetch);
    // Bytes kept in memory are stored in the tier after the waiters have
    // them: a disk write is no reason to keep a reader waiting. Bytes that
    // could not be kept are stored first, so that a reader coming after the
    // flight ends finds them in the tier rather than fetching again.
    const bool remembered =
        fetched.from_server && Remember(key.scope, *map.chunks[index].id, fetched.bytes);
    if (fetched.from_server && !remembered) Store(key, name, map, index, *fetched.bytes);
    {
      // Erased before the waiters wake: a reader that comes after this point
      // finds the chunk in memory or in the tier (or, if neither could keep
      // it, fetches).
      std::lock_guard<std::mutex> lock(mu_);
      flights_.erase(flight_key);
    }
    promise.set_value(fetched);
    if (remembered) Store(key, name, map, index, *fetched.bytes);
    return fetched;
  }

  // The leader's work: memory or the tier once more (another flight may have
  // brought the chunk between our miss and our lead), else the server,
  // verified.
  Fetched Fetch(const ContentKey& key, const std::string& name, const ChunkMap& map,
                uint64_t index, bool prefetch) {
    const ChunkRef& ref = map.chunks[index];
    if (std::shared_ptr<const std::string> bytes = Recall(key.scope, *ref.id)) {
      return Fetched{absl::OkStatus(), std::move(bytes)};
    }
    if (tier_->Contains(key, map, index)) {
      auto bytes = std::make_shared<std::string>(ref.length, '\0');
      absl::StatusOr<bool> hit = tier_->Read(key, map, index, 0, ref.length, bytes->data());
      if (hit.ok() && *hit) return Fetched{absl::OkStatus(), std::move(bytes)};
    }
    ++fetches_;
    if (prefetch) ++prefetches_;
    // The server need not hash what we hash anyway. Bytes that do not match
    // are asked for once more, verified by the server: it then finds (and
    // sets aside) a corrupt copy on its disk, or the damage was on the way.
    absl::StatusOr<std::string> got = client_->GetChunkUnverified(key.scope, *ref.id);
    for (int attempt = 0;; ++attempt) {
      if (absl::IsNotFound(got.status())) {
        // The content names the chunk, so the server should hold it: it lost
        // it or set it aside as corrupt (maybe on an earlier fetch, a
        // readahead's). The bytes are lost to this reader: EIO, not ENOENT.
        return Fetched{
            absl::DataLossError(fmt::format(
                "chunk {} ({}) of {} ({}): the server does not have it (lost, or set "
                "aside as corrupt): {}",
                index, ref.id->ToHex(), name, key.scope.ToString(), got.status().message())),
            nullptr};
      }
      if (!got.ok()) return Fetched{got.status(), nullptr};
      fetched_bytes_ += got->size();
      if (ChunkId::Of(*got) == *ref.id) break;
      ++verify_failures_;
      if (attempt == 1) {
        return Fetched{absl::DataLossError(fmt::format(
                           "chunk {} ({}) of {} from the server does not match its id",
                           index, ref.id->ToHex(), name)),
                       nullptr};
      }
      spdlog::warn("chunk {} ({}) of {} from the server does not match its id; asking again, "
                   "verified by the server", index, ref.id->ToHex(), name);
      ++fetches_;
      got = client_->GetChunk(key.scope, *ref.id, 0, 0);
    }
    return Fetched{absl::OkStatus(), std::make_shared<const std::string>(std::move(*got)),
                   /*from_server=*/true};
  }

  void Store(const ContentKey& key, const std::string& name, const ChunkMap& map, uint64_t index,
             const std::string& bytes) {
    absl::Status stored = tier_->Store(key, map, index, bytes);
    if (!stored.ok()) {
      // IGNORE_ERROR: the reader still gets the verified bytes; only the
      // caching is lost (a full tier with nothing evictable, a disk error).
      spdlog::warn("node tier: not caching chunk {} of {}: {}", index, name, stored.ToString());
    }
  }

  // The verified bytes of chunk `id` of `scope` if they are in memory (and
  // makes them the most recently used).
  std::shared_ptr<const std::string> Recall(const Scope& scope, const ChunkId& id) {
    const std::string mkey = MemoryKey(scope, id);
    std::lock_guard<std::mutex> lock(memory_mu_);
    auto it = memory_.find(mkey);
    if (it == memory_.end()) return nullptr;
    memory_lru_.splice(memory_lru_.begin(), memory_lru_, it->second.lru);
    return it->second.bytes;
  }

  bool InMemory(const Scope& scope, const ChunkId& id) {
    const std::string mkey = MemoryKey(scope, id);
    std::lock_guard<std::mutex> lock(memory_mu_);
    return memory_.contains(mkey);
  }

  // Keeps verified bytes in memory, dropping the least recently used ones
  // past options_.memory_bytes. False if they do not fit at all.
  bool Remember(const Scope& scope, const ChunkId& id, std::shared_ptr<const std::string> bytes) {
    if (bytes->size() > options_.memory_bytes) return false;
    std::string mkey = MemoryKey(scope, id);
    std::lock_guard<std::mutex> lock(memory_mu_);
    if (memory_.contains(mkey)) return true;
    while (memory_used_ + bytes->size() > options_.memory_bytes) {
      auto victim = memory_.find(memory_lru_.back());
      memory_used_ -= victim->second.bytes->size();
      memory_.erase(victim);
      memory_lru_.pop_back();
    }
    memory_used_ += bytes->size();
    memory_lru_.push_front(mkey);
    memory_.emplace(std::move(mkey), Remembered{std::move(bytes), memory_lru_.begin()});
    return true;
  }

  // The most chunks one sequential reader may have read ahead now: its share
  // of half the memory, within [readahead_chunks, max_readahead_chunks].
  uint32_t WindowCapLocked(const ChunkMap& map, Clock::time_point now) {
    if (now - active_counted_at_ >= kActiveStreamRecount) {
      active_streams_ = 0;
      for (const auto& [name, stream] : streams_) {
        if (now - stream.last_read < kActiveStreamAge) ++active_streams_;
      }
      active_counted_at_ = now;
    }
    const uint64_t share =
        options_.memory_bytes / 2 / map.chunk_size / std::max<uint64_t>(active_streams_, 1);
    const uint32_t floor = options_.readahead_chunks;
    const uint32_t ceiling = std::max(options_.max_readahead_chunks, floor);
    return static_cast<uint32_t>(std::clamp<uint64_t>(share, floor, ceiling));
  }

  // Notes the read [offset, end) of `key` and, if it continues one of the
  // content's readers, fetches the next chunks ahead of it.
  void MaybeReadAhead(const ContentKey& key, const std::string& name, const ChunkMap& map,
                      uint64_t offset, uint64_t end) {
    if (options_.readahead_chunks == 0) return;
    const uint64_t last = (end - 1) / map.chunk_size;
    uint64_t from = 0, to = 0;
    std::shared_ptr<const ChunkMap> shared;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (streams_.size() >= kMaxStreams && !streams_.contains(name)) streams_.clear();
      Stream& stream = streams_[name];
      const Clock::time_point now = Clock::now();
      stream.last_read = now;
      Cursor* match = nullptr;
      Cursor* oldest = &stream.cursors[0];
      for (Cursor& cursor : stream.cursors) {
        // A fresh cursor has next_offset 0: a read from the start counts as sequential.
        if (cursor.next_offset == offset && match == nullptr) match = &cursor;
        if (cursor.used < oldest->used) oldest = &cursor;
      }
      Cursor* cursor = match != nullptr ? match : oldest;
      cursor->next_offset = end;
      cursor->used = ++stream.clock;
      if (match == nullptr) return;
      // The window starts small and doubles each time the reader enters a
      // new chunk: a short sequential read costs little, a long one soon
      // has enough chunks in flight to keep every fetch thread busy.
      const uint32_t cap = WindowCapLocked(map, now);
      if (stream.window == 0) {
        stream.window = options_.readahead_chunks;
        stream.grown_at = last;
      } else if (last > stream.grown_at) {
        stream.window = std::min<uint32_t>(stream.window * 2, cap);
        stream.grown_at = last;
      }
      stream.window = std::min(stream.window, cap);
      // Chunks already read ahead are skipped, unless this reader is far
      // from them (another reader's window, or an earlier epoch's).
      to = std::min<uint64_t>(map.chunks.size(), last + 1 + stream.window);
      from = last + 1;
      if (stream.ahead_until > from && stream.ahead_until <= to) from = stream.ahead_until;
      if (from >= to) return;
      stream.ahead_until = to;
      if (stream.map == nullptr) stream.map = std::make_shared<const ChunkMap>(map);
      shared = stream.map;
    }
    Prefetch(key, std::move(shared), from, to - from);
  }

  ClusterClient* const client_;
  NodeTier* const tier_;
  const Options options_;

  std::mutex mu_;
  std::map<FlightKey, std::shared_future<Fetched>> flights_;  // guarded by mu_
  std::map<std::string, Stream> streams_;                      // guarded by mu_
  uint64_t active_streams_ = 0;                                // guarded by mu_
  Clock::time_point active_counted_at_;                        // guarded by mu_

  // Never held with mu_.
  mutable std::mutex memory_mu_;
  std::unordered_map<std::string, Remembered> memory_;  // guarded by memory_mu_
  std::list<std::string> memory_lru_;  // guarded by memory_mu_; front: most recently used
  uint64_t memory_used_ = 0;           // guarded by memory_mu_

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> fetches_{0};
  std::atomic<uint64_t> fetched_bytes_{0};
  std::atomic<uint64_t> coalesced_{0};
  std::atomic<uint64_t> prefetches_{0};
  std::atomic<uint64_t> verify_failures_{0};
  std::atomic<uint64_t> memory_hits_{0};

  // Last: destroyed first, so no task outlives the members it uses.
  std::unique_ptr<ThreadPool> pool_;
};

ChunkFetcher::ChunkFetcher(ClusterClient* client, NodeTier* tier, Options options)
    : impl_(std::make_unique<Impl>(client, tier, options)) {}

ChunkFetcher::~ChunkFetcher() = default;

absl::StatusOr<size_t> ChunkFetcher::Read(const ContentKey& key, const ChunkMap& map,
                                          uint64_t offset, size_t n, char* out) {
  return impl_->Read(key, map, offset, n, out);
}

void ChunkFetcher::Prefetch(const ContentKey& key, const ChunkMap& map, uint64_t first,
                            uint64_t count) {
  impl_->Prefetch(key, std::make_shared<const ChunkMap>(map), first, count);
}

FetcherStats ChunkFetcher::Stats() const { return impl_->Stats(); }

void ChunkFetcher::DropScope(const Scope& scope) { impl_->DropScope(scope); }

}  // namespace traincache::node
