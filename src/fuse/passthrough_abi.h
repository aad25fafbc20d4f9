// The parts of the kernel's FUSE ABI (include/uapi/linux/fuse.h, protocol
// 7.40, Linux 6.9) that FUSE passthrough needs and that Debian 12's headers
// (kernel 6.1, libfuse 3.14) lack. Values are the kernel's; each is checked
// against the layout libfuse sends (fuse_init_out of 64 bytes, fuse_open_out
// of 16) by the static_asserts below.
//
// How passthrough is negotiated and used (src/fuse/passthrough.cc):
//  - INIT: the kernel offers FUSE_PASSTHROUGH in flags2 (bit 37 of the
//    combined 64-bit flags); the reply sets it, sets FUSE_INIT_EXT so that
//    flags2 is read at all, and sets max_stack_depth = 1 (the backing files
//    live on an ordinary filesystem, stack depth 0).
//  - OPEN: the daemon registers a backing file with FUSE_DEV_IOC_BACKING_OPEN
//    on the session's /dev/fuse descriptor (needs CAP_SYS_ADMIN) and answers
//    the open with FOPEN_PASSTHROUGH and the returned backing id; reads and
//    mmap of that open file then go to the backing file in the kernel.
//  - FUSE_DEV_IOC_BACKING_CLOSE frees the id (open files keep the backing).
#ifndef TRAINCACHE_FUSE_PASSTHROUGH_ABI_H_
#define TRAINCACHE_FUSE_PASSTHROUGH_ABI_H_

#include <linux/fuse.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace traincache::fuse::abi {

// INIT flags2 bit (bit 37 of the combined flags).
inline constexpr uint32_t kFlags2Passthrough = 1u << (37 - 32);
// fuse_init_out: the field after flags2 (unused[0] in 7.36 headers).
inline constexpr size_t kInitOutMaxStackDepthOffset = offsetof(fuse_init_out, flags2) + 4;
// fuse_open_out: open_flags bit, and the field after open_flags (padding in
// 7.36 headers) that carries the backing id.
inline constexpr uint32_t kOpenPassthrough = 1u << 7;
inline constexpr size_t kOpenOutBackingIdOffset = offsetof(fuse_open_out, open_flags) + 4;

struct BackingMap {
  int32_t fd;
  uint32_t flags;  // 0
  uint64_t padding;
};
inline constexpr unsigned long kIocBackingOpen = _IOW(FUSE_DEV_IOC_MAGIC, 1, BackingMap);
inline constexpr unsigned long kIocBackingClose = _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t);

inline constexpr uint32_t kOpcodeOpen = FUSE_OPEN;
inline constexpr uint32_t kOpcodeCreate = FUSE_CREATE;
inline constexpr uint32_t kOpcodeInit = FUSE_INIT;

static_assert(sizeof(fuse_init_out) == 64, "libfuse 3.14 answers INIT with 64 bytes");
static_assert(kInitOutMaxStackDepthOffset + 4 <= sizeof(fuse_init_out));
static_assert(sizeof(fuse_open_out) == 16 && kOpenOutBackingIdOffset == 12);
static_assert(sizeof(fuse_entry_out) == 128, "a CREATE reply's fuse_open_out is at 128");
static_assert(sizeof(BackingMap) == 16);

}  // namespace traincache::fuse::abi

#endif  // TRAINCACHE_FUSE_PASSTHROUGH_ABI_H_
