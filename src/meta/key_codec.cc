#include "meta/key_codec.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "traincache/status.h"

namespace traincache::meta {
namespace {

constexpr uint8_t kFormat = 1;

// --- writing ---

void PutBigEndian64(std::string* out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>((v >> 1) ^ (~(v & 1) + 1)); }

void PutTimespec(std::string* out, Timespec t) {
  PutVarint(out, ZigZag(t.sec));
  PutVarint(out, t.nsec);
}

// --- reading ---

// Reads a value front to back. Every getter returns false (and leaves the
// reader failed) instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int i = 0; i < 10; ++i) {
      if (in_.empty()) return false;
      uint8_t byte = static_cast<uint8_t>(in_[0]);
      in_.remove_prefix(1);
      // The 10th byte may only hold the top bit of a 64-bit number.
      if (i == 9 && byte > 1) return false;
      result |= uint64_t{byte & 0x7fu} << (7 * i);
      if (byte < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Varint32(uint32_t* v) {
    uint64_t wide;
    if (!Varint(&wide) || wide > std::numeric_limits<uint32_t>::max()) return false;
    *v = static_cast<uint32_t>(wide);
    return true;
  }
  bool Byte(uint8_t* v) {
    if (in_.empty()) return false;
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool Bytes(size_t n, std::string_view* v) {
    if (in_.size() < n) return false;
    *v = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  bool Time(Timespec* t) {
    uint64_t sec;
    uint32_t nsec;
    if (!Varint(&sec) || !Varint32(&nsec) || nsec >= 1'000'000'000u) return false;
    *t = Timespec{UnZigZag(sec), nsec};
    return true;
  }
  bool Format() {
    uint8_t f;
    return Byte(&f) && f == kFormat;
  }
  size_t remaining() const { return in_.size(); }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

absl::Status Corrupt(std::string_view what) {
  return absl::DataLossError(fmt::format("corrupt {} record", what));
}

bool ValidFileType(uint32_t type) {
  switch (type) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string ScopePrefix(const Scope& scope) {
  std::string p = scope.ToString();
  p.push_back('\0');
  return p;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<uint8_t>(end.back()) != 0xff) {
      end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return end;
}

ScopeKeys::ScopeKeys(const Scope& scope) : prefix_(ScopePrefix(scope)) {}

std::string ScopeKeys::Tagged(char tag) const {
  std::string k;
  k.reserve(prefix_.size() + 1 + 8 + 32);
  k.append(prefix_);
  k.push_back(tag);
  return k;
}

std::string ScopeKeys::Meta() const { return Tagged(kTagMeta); }

std::string ScopeKeys::Inode(InodeId ino) const {
  std::string k = Tagged(kTagInode);
  PutBigEndian64(&k, ino);
  return k;
}

std::string ScopeKeys::InodePrefix() const { return Tagged(kTagInode); }

std::string ScopeKeys::DentriesPrefix() const { return Tagged(kTagDentry); }

std::string ScopeKeys::DentryPrefix(InodeId parent) const {
  std::string k = Tagged(kTagDentry);
  PutBigEndian64(&k, parent);
  return k;
}

std::string ScopeKeys::Dentry(InodeId parent, std::string_view name) const {
  std::string k = DentryPrefix(parent);
  k.append(name);
  return k;
}

std::string ScopeKeys::Symlink(InodeId ino) const {
  std::string k = Tagged(kTagSymlink);
  PutBigEndian64(&k, ino);
  return k;
}

std::string ScopeKeys::XattrPrefix(InodeId ino) const {
  std::string k = Tagged(kTagXattr);
  PutBigEndian64(&k, ino);
  return k;
}

std::string ScopeKeys::Xattr(InodeId ino, std::string_view name) const {
  std::string k = XattrPrefix(ino);
  k.append(name);
  return k;
}

std::string ScopeKeys::ChunkMap(InodeId ino) const {
  std::string k = Tagged(kTagChunkMap);
  PutBigEndian64(&k, ino);
  return k;
}

std::string ScopeKeys::RefCount(const ChunkId& id) const {
  std::string k = Tagged(kTagRefCount);
  k.append(id.bytes());
  return k;
}

std::string ScopeKeys::GarbagePrefix() const { return Tagged(kTagGarbage); }

std::string ScopeKeys::SmallChunk(const ChunkId& id) const {
  std::string k = Tagged(kTagSmallChunk);
  k += id.bytes();
  return k;
}

std::string ScopeKeys::Garbage(const ChunkId& id) const {
  std::string k = GarbagePrefix();
  k.append(id.bytes());
  return k;
}

std::string ScopeKeys::OrphanPrefix() const { return Tagged(kTagOrphan); }

std::string ScopeKeys::Orphan(InodeId ino) const {
  std::string k = OrphanPrefix();
  PutBigEndian64(&k, ino);
  return k;
}

std::string ScopeKeys::Request(const RequestId& id) const {
  std::string k = Tagged(kTagRequest);
  PutBigEndian64(&k, id.seq);
  k.append(id.client);
  return k;
}

std::string ScopeKeys::RequestExpiryPrefix() const { return Tagged(kTagRequestExpiry); }

std::string ScopeKeys::RequestExpiry(int64_t sec, const RequestId& id) const {
  std::string k = RequestExpiryPrefix();
  // Times before 1970 would sort after every later one; none are written.
  PutBigEndian64(&k, static_cast<uint64_t>(std::max<int64_t>(sec, 0)));
  PutBigEndian64(&k, id.seq);
  k.append(id.client);
  return k;
}

absl::StatusOr<RequestExpiryKey> ParseRequestExpiryKey(std::string_view key,
                                                       std::string_view prefix) {
  ASSIGN_OR_RETURN(std::string_view rest, KeySuffix(key, prefix));
  if (rest.size() < 17 || rest.size() > 16 + kMaxRequestClientBytes) {
    return absl::DataLossError("request expiry key has a wrong size");
  }
  uint64_t sec = 0;
  RequestExpiryKey out;
  for (char c : rest.substr(0, 8)) sec = (sec << 8) | static_cast<uint8_t>(c);
  if (sec > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::DataLossError("request expiry key time out of range");
  }
  out.sec = static_cast<int64_t>(sec);
  for (char c : rest.substr(8, 8)) out.id.seq = (out.id.seq << 8) | static_cast<uint8_t>(c);
  out.id.client = std::string(rest.substr(16));
  return out;
}

absl::StatusOr<std::string_view> ScopeTextOfKey(std::string_view key) {
  size_t nul = key.find('\0');
  if (nul == std::string_view::npos) {
    return absl::DataLossError("key has no scope prefix (no NUL byte)");
  }
  return key.substr(0, nul);
}

absl::StatusOr<std::string_view> KeySuffix(std::string_view key, std::string_view prefix) {
  if (key.size() < prefix.size() || key.substr(0, prefix.size()) != prefix) {
    return absl::DataLossError("key does not start with the expected prefix");
  }
  return key.substr(prefix.size());
}

absl::StatusOr<InodeId> ParseInoKey(std::string_view key, std::string_view prefix) {
  ASSIGN_OR_RETURN(std::string_view rest, KeySuffix(key, prefix));
  if (rest.size() != 8) return absl::DataLossError("inode key suffix is not 8 bytes");
  InodeId ino = 0;
  for (char c : rest) ino = (ino << 8) | static_cast<uint8_t>(c);
  return ino;
}

absl::StatusOr<DentryKey> ParseDentryKey(std::string_view key, std::string_view prefix) {
  ASSIGN_OR_RETURN(std::string_view rest, KeySuffix(key, prefix));
  if (rest.size() < 9) return absl::DataLossError("entry key has no parent and name");
  DentryKey out;
  for (char c : rest.substr(0, 8)) out.parent = (out.parent << 8) | static_cast<uint8_t>(c);
  out.name = rest.substr(8);
  return out;
}

absl::StatusOr<ChunkId> ParseChunkIdKey(std::string_view key, std::string_view prefix) {
  ASSIGN_OR_RETURN(std::string_view rest, KeySuffix(key, prefix));
  absl::StatusOr<ChunkId> id = ChunkId::FromBytes(rest);
  if (!id.ok()) return absl::DataLossError("chunk key suffix is not 32 bytes");
  return id;
}

// --- scope meta ---

std::string EncodeScopeMeta(const ScopeMeta& m) {
  std::string out;
  out.push_back(static_cast<char>(kFormat));
  PutVarint(&out, m.generation);
  PutVarint(&out, m.next_ino);
  PutVarint(&out, m.quota_bytes);
  PutVarint(&out, m.used_bytes);
  PutVarint(&out, m.used_inodes);
  PutVarint(&out, m.ino_limit);
  PutVarint(&out, m.epoch);
  return out;
}

absl::StatusOr<ScopeMeta> DecodeScopeMeta(std::string_view value) {
  Reader r(value);
  ScopeMeta m;
  if (!r.Format() || !r.Varint(&m.generation) || !r.Varint(&m.next_ino) ||
      !r.Varint(&m.quota_bytes) || !r.Varint(&m.used_bytes) || !r.Varint(&m.used_inodes) ||
      m.next_ino <= kRootInode) {
    return Corrupt("scope meta");
  }
  // Records written before ino_limit and epoch existed end here.
  if (!r.done() && (!r.Varint(&m.ino_limit) || !r.Varint(&m.epoch) || !r.done())) {
    return Corrupt("scope meta");
  }
  return m;
}

// --- inodes ---

std::string EncodeInode(const InodeRecord& rec) {
  const InodeAttr& a = rec.attr;
  std::string out;
  out.reserve(64);
  out.push_back(static_cast<char>(kFormat));
  PutVarint(&out, a.mode);
  PutVarint(&out, a.uid);
  PutVarint(&out, a.gid);
  PutVarint(&out, a.nlink);
  PutVarint(&out, a.size);
  PutVarint(&out, a.rdev);
  PutTimespec(&out, a.atime);
  PutTimespec(&out, a.mtime);
  PutTimespec(&out, a.ctime);
  PutVarint(&out, a.version);
  PutVarint(&out, rec.parent);
  return out;
}

absl::StatusOr<InodeRecord> DecodeInode(InodeId ino, std::string_view value) {
  Reader r(value);
  InodeRecord rec;
  InodeAttr& a = rec.attr;
  a.ino = ino;
  if (!r.Format() || !r.Varint32(&a.mode) || !r.Varint32(&a.uid) || !r.Varint32(&a.gid) ||
      !r.Varint32(&a.nlink) || !r.Varint(&a.size) || !r.Varint32(&a.rdev) || !r.Time(&a.atime) ||
      !r.Time(&a.mtime) || !r.Time(&a.ctime) || !r.Varint(&a.version) || !r.Varint(&rec.parent) ||
      !r.done()) {
    return Corrupt(fmt::format("inode {}", ino));
  }
  if (!ValidFileType(a.mode & S_IFMT) || (a.mode & ~(S_IFMT | 07777u)) != 0) {
    return Corrupt(fmt::format("inode {} (mode {:o})", ino, a.mode));
  }
  if (a.is_dir() != (rec.parent != 0)) {
    return Corrupt(fmt::format("inode {} (parent pointer)", ino));
  }
  return rec;
}

// --- dentries ---

std::string EncodeDentry(const DentryValue& d) {
  std::string out;
  out.push_back(static_cast<char>(kFormat));
  PutVarint(&out, d.ino);
  PutVarint(&out, d.type);
  return out;
}

absl::StatusOr<DentryValue> DecodeDentry(std::string_view value) {
  Reader r(value);
  DentryValue d;
  if (!r.Format() || !r.Varint(&d.ino) || !r.Varint32(&d.type) || !r.done() || d.ino == 0 ||
      !ValidFileType(d.type)) {
    return Corrupt("directory entry");
  }
  return d;
}

// --- chunk maps ---

namespace {
constexpr uint8_t kChunkHasId = 1;
constexpr uint8_t kChunkTruncated = 2;
}  // namespace

std::string EncodeChunkMap(const StoredChunkMap& map) {
  std::string out;
  out.reserve(16 + map.chunks.size() * (2 + ChunkId::kSize + 4));
  out.push_back(static_cast<char>(kFormat));
  PutVarint(&out, map.chunk_size);
  PutVarint(&out, map.size);
  PutVarint(&out, map.chunks.size());
  for (const StoredChunk& c : map.chunks) {
    uint8_t flags = (c.ref.id ? kChunkHasId : 0) | (c.truncated ? kChunkTruncated : 0);
    out.push_back(static_cast<char>(flags));
    if (c.ref.id) out.append(c.ref.id->bytes());
    PutVarint(&out, c.ref.length);
  }
  return out;
}

absl::StatusOr<StoredChunkMap> DecodeChunkMap(std::string_view value) {
  Reader r(value);
  StoredChunkMap map;
  uint64_t count;
  if (!r.Format() || !r.Varint32(&map.chunk_size) || !r.Varint(&map.size) || !r.Varint(&count)) {
    return Corrupt("chunk map");
  }
  // Every chunk takes at least 2 bytes: never reserve more than the input
  // could hold, whatever the count claims.
  if (count > kMaxFileChunks || count > r.remaining() / 2) return Corrupt("chunk map (count)");
  // Bound size before the shape check, whose arithmetic must not overflow.
  if (map.size > kMaxFileChunks * uint64_t{kMaxChunkSize}) return Corrupt("chunk map (size)");
  map.chunks.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    StoredChunk c;
    uint8_t flags;
    if (!r.Byte(&flags) || (flags & ~(kChunkHasId | kChunkTruncated)) != 0) {
      return Corrupt("chunk map (flags)");
    }
    if (flags & kChunkHasId) {
      std::string_view raw;
      if (!r.Bytes(ChunkId::kSize, &raw)) return Corrupt("chunk map (id)");
      c.ref.id = *ChunkId::FromBytes(raw);
    } else if (flags & kChunkTruncated) {
      return Corrupt("chunk map (truncated hole)");
    }
    c.truncated = (flags & kChunkTruncated) != 0;
    if (!r.Varint32(&c.ref.length)) return Corrupt("chunk map (length)");
    map.chunks.push_back(std::move(c));
  }
  if (!r.done()) return Corrupt("chunk map (trailing bytes)");
  std::vector<ChunkRef> refs;
  refs.reserve(map.chunks.size());
  for (const StoredChunk& c : map.chunks) refs.push_back(c.ref);
  absl::Status shape = ValidateChunkMapShape(map.size, map.chunk_size, refs);
  if (!shape.ok()) {
    return absl::DataLossError(fmt::format("corrupt chunk map: {}", std::string(shape.message())));
  }
  return map;
}

// --- request records ---

namespace {
enum : uint8_t { kOutcomeOk = 0, kOutcomeAttr = 1, kOutcomeCreate = 2, kOutcomeUnlink = 3 };

// An InodeAttr with its number (EncodeInode keeps the number in the key).
void PutAttr(std::string* out, const InodeAttr& a) {
  PutVarint(out, a.ino);
  PutVarint(out, a.mode);
  PutVarint(out, a.uid);
  PutVarint(out, a.gid);
  PutVarint(out, a.nlink);
  PutVarint(out, a.size);
  PutVarint(out, a.rdev);
  PutTimespec(out, a.atime);
  PutTimespec(out, a.mtime);
  PutTimespec(out, a.ctime);
  PutVarint(out, a.version);
}

bool ReadAttr(Reader& r, InodeAttr* a) {
  return r.Varint(&a->ino) && r.Varint32(&a->mode) && r.Varint32(&a->uid) &&
         r.Varint32(&a->gid) && r.Varint32(&a->nlink) && r.Varint(&a->size) &&
         r.Varint32(&a->rdev) && r.Time(&a->atime) && r.Time(&a->mtime) && r.Time(&a->ctime) &&
         r.Varint(&a->version);
}

bool ReadBool(Reader& r, bool* v) {
  uint8_t b;
  if (!r.Byte(&b) || b > 1) return false;
  *v = b == 1;
  return true;
}
}  // namespace

std::string EncodeRequestRecord(const RequestRecord& rec) {
  std::string out;
  out.push_back(static_cast<char>(kFormat));
  PutTimespec(&out, rec.written);
  if (const auto* attr = std::get_if<InodeAttr>(&rec.outcome)) {
    out.push_back(static_cast<char>(kOutcomeAttr));
    PutAttr(&out, *attr);
  } else if (const auto* c = std::get_if<CreateResult>(&rec.outcome)) {
    out.push_back(static_cast<char>(kOutcomeCreate));
    PutAttr(&out, c->attr);
    out.push_back(static_cast<char>(c->created ? 1 : 0));
    out.push_back(static_cast<char>(c->parent ? 1 : 0));
    if (c->parent) PutAttr(&out, *c->parent);
  } else if (const auto* u = std::get_if<UnlinkResult>(&rec.outcome)) {
    out.push_back(static_cast<char>(kOutcomeUnlink));
    PutVarint(&out, u->ino);
    PutVarint(&out, u->nlink);
    out.push_back(static_cast<char>(u->orphaned ? 1 : 0));
  } else {
    out.push_back(static_cast<char>(kOutcomeOk));
  }
  return out;
}

absl::StatusOr<RequestRecord> DecodeRequestRecord(std::string_view value) {
  Reader r(value);
  RequestRecord rec;
  uint8_t kind;
  if (!r.Format() || !r.Time(&rec.written) || !r.Byte(&kind)) return Corrupt("request");
  bool ok = true;
  switch (kind) {
    case kOutcomeOk:
      break;
    case kOutcomeAttr: {
      InodeAttr a;
      ok = ReadAttr(r, &a);
      rec.outcome = a;
      break;
    }
    case kOutcomeCreate: {
      CreateResult c;
      bool has_parent = false;
      ok = ReadAttr(r, &c.attr) && ReadBool(r, &c.created) && ReadBool(r, &has_parent);
      if (ok && has_parent) {
        c.parent.emplace();
        ok = ReadAttr(r, &*c.parent);
      }
      rec.outcome = std::move(c);
      break;
    }
    case kOutcomeUnlink: {
      UnlinkResult u;
      ok = r.Varint(&u.ino) && r.Varint32(&u.nlink) && ReadBool(r, &u.orphaned);
      rec.outcome = u;
      break;
    }
    default:
      ok = false;
  }
  if (!ok || !r.done()) return Corrupt("request");
  return rec;
}

// --- small values ---

std::string EncodeRefCount(uint64_t count) {
  std::string out;
  PutVarint(&out, count);
  return out;
}

absl::StatusOr<uint64_t> DecodeRefCount(std::string_view value) {
  Reader r(value);
  uint64_t count;
  if (!r.Varint(&count) || !r.done() || count == 0) return Corrupt("chunk reference count");
  return count;
}

std::string EncodeTimespec(Timespec t) {
  std::string out;
  PutTimespec(&out, t);
  return out;
}

absl::StatusOr<Timespec> DecodeTimespec(std::string_view value) {
  Reader r(value);
  Timespec t;
  if (!r.Time(&t) || !r.done()) return Corrupt("timestamp");
  return t;
}

}  // namespace traincache::meta
