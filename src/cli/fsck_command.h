// traincache fsck: checks a stopped server's data dir, offline.
//
// Walks every scope of the metadata store (<data_dir>/meta) and every chunk
// its files reference, and every chunk file of the chunk store
// (<data_dir>/chunks): each chunk is read and hashed (small chunks kept with
// the metadata too), each referenced chunk must exist. It reports every
// corrupt or missing chunk with the files (scope and path) that use it, and
// changes nothing: a corrupt chunk file stays where it is (the server sets it
// aside when a read finds it, and the next upload of its bytes heals it).
//
// Offline because it reads everything at disk speed with the server's own
// stores and must see one consistent state: the server holds
// <data_dir>/server.lock, and fsck refuses (FAILED_PRECONDITION naming the
// pid) while a server runs on the data dir.
//
// Not thread-safe; one call at a time per data dir.
#ifndef TRAINCACHE_CLI_FSCK_COMMAND_H_
#define TRAINCACHE_CLI_FSCK_COMMAND_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"

namespace traincache::cli {

struct FsckReport {
  uint64_t scopes = 0;
  uint64_t files = 0;              // Regular files (orphans included) with content.
  uint64_t referenced_chunks = 0;  // Distinct chunks the files reference.
  uint64_t checked_chunks = 0;     // Chunks read and hashed (files and small chunks).
  uint64_t checked_bytes = 0;
  uint64_t corrupt = 0;       // Referenced or not.
  uint64_t missing = 0;       // Referenced but absent.
  uint64_t unreferenced = 0;  // Chunk files no file uses (the collector's work).
  bool ok() const { return corrupt == 0 && missing == 0; }
};

// Checks `data_dir`, writing one line per problem and a summary to `out`.
// Returns the counts; an error only if the check could not run (no such
// data dir, a server holds it, a store does not open): problems found are in
// the report.
absl::StatusOr<FsckReport> RunFsck(const std::string& data_dir, std::ostream& out);

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_FSCK_COMMAND_H_
