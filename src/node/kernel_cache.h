// KernelCache: what the node core may ask of the kernel's caches of one
// mount — to drop entries and attributes it handed out (the FUSE adapter's
// notifications; fuse::FuseMount implements it). The core stays free of
// libfuse: it says what is stale, the adapter tells the kernel.
//
// Both calls may block while the kernel looks something up or answers a
// request on the same mount (the kernel takes the directory's lock to drop
// an entry), so they must never be made from inside a FUSE request handler:
// the change feed's thread (metadata_watcher.h) makes them. Names and inodes
// the kernel does not hold are ignored. Thread-safe; a no-op once the mount
// is gone.
#ifndef TRAINCACHE_NODE_KERNEL_CACHE_H_
#define TRAINCACHE_NODE_KERNEL_CACHE_H_

#include <string>
#include <utility>
#include <vector>

#include "traincache/types.h"

namespace traincache::node {

class KernelCache {
 public:
  virtual ~KernelCache() = default;
  // Drops each entry `name` of directory `parent` (and the directory's
  // attributes): the next path walk through it asks the daemon.
  virtual void InvalidateEntries(const std::vector<std::pair<InodeId, std::string>>& entries) = 0;
  // Drops the attributes of each inode (not its pages: an open handle keeps
  // reading the version it opened, and the next open decides about pages).
  virtual void InvalidateAttrs(const std::vector<InodeId>& inodes) = 0;
};

}  // namespace traincache::node

#endif  // TRAINCACHE_NODE_KERNEL_CACHE_H_
