// HandoverState: what a process serving a FUSE connection leaves beside its
// /dev/fuse descriptor so that the next process can serve the same
// connection (issue 7: a node daemon restarted or crashed without breaking
// the mounts containers hold). It lives in a memfd that travels with the
// descriptor (systemd's fd store, or any Unix-socket hand-over) and is
// rewritten in place, so its holder always sees the latest copy.
//
// What it carries and why:
//  - the kernel's FUSE_INIT request, as the first process read it: the
//    kernel sends INIT once per connection, and libfuse answers nothing
//    before it, so the next process replays it to its own session (its reply
//    is swallowed; the kernel keeps what the first reply negotiated);
//  - an epoch, one more for each process that served the connection: open
//    file handles are numbered from FirstHandleOf(epoch), so a handle the
//    kernel still holds from an earlier process is told from one of ours
//    (and adopted: FuseMount);
//  - the mountpoint, to check that the descriptor is the mount we mean.
//
// File format (host byte order; only this machine reads it): "TCFUSE01",
// u64 epoch, u32 init length, u32 mountpoint length, the INIT bytes, the
// mountpoint bytes. Thread-compatible (callers serialize writes).
#ifndef TRAINCACHE_FUSE_HANDOVER_STATE_H_
#define TRAINCACHE_FUSE_HANDOVER_STATE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace traincache::fuse {

struct HandoverState {
  uint64_t epoch = 1;
  std::string init_request;  // fuse_in_header + fuse_init_in; empty until INIT came
  std::string mountpoint;
};

// Handles of the process of `epoch` are numbered from here on (2^40 each).
inline uint64_t FirstHandleOf(uint64_t epoch) { return epoch << 40; }

// A new memfd holding `state`; the descriptor, or the errno of the failed call.
absl::StatusOr<int> CreateHandoverFd(const HandoverState& state);
// Rewrites the memfd `fd` with `state`.
absl::Status WriteHandoverState(int fd, const HandoverState& state);
// Reads it back. INVALID_ARGUMENT for what does not parse (not ours, torn).
absl::StatusOr<HandoverState> ReadHandoverState(int fd);

}  // namespace traincache::fuse

#endif  // TRAINCACHE_FUSE_HANDOVER_STATE_H_
