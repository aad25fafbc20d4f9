// AttachmentTable: the scopes each node identity may use under the server
// config key `require_attached_scopes` (cluster.proto, "Attached scopes").
// An identity may use a scope while at least one job it attached (and has
// not detached) uses it; two jobs of one node sharing a project keep it
// usable until both are gone.
//
// The whole table is in memory, loaded once from an AttachmentStore at
// Open: Allows() is what every data-plane call asks, so it reads a map under
// a shared lock and never the disk. Attach and Detach write through to the
// store (durable) before they change the map, so an answer a caller saw
// survives a server restart.
//
// Thread-safe. Lock order: write_mu_ before mu_. Allows() takes only mu_, so
// it never waits for a disk sync: a writer holds mu_ only to swap the map
// entries, after its store write returned.
#ifndef TRAINCACHE_SERVER_ATTACHMENT_TABLE_H_
#define TRAINCACHE_SERVER_ATTACHMENT_TABLE_H_

#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "meta/attachment_store.h"
#include "traincache/scope.h"

namespace traincache::server {

class AttachmentTable {
 public:
  // Loads every record of `store`. DATA_LOSS if one does not decode.
  static absl::StatusOr<std::unique_ptr<AttachmentTable>> Open(
      std::unique_ptr<meta::AttachmentStore> store);

  // Records that `identity` attached `job_id`, which uses `scopes`; a job
  // attached again is replaced (same scopes: nothing changes). Errors: the
  // store's (nothing changed), INVALID_ARGUMENT for a bad identity.
  absl::Status Attach(const std::string& identity, const std::string& job_id,
                      const std::vector<Scope>& scopes);
  // Forgets `identity`'s job `job_id`. Returns whether it was attached and
  // which of its scopes `identity` may no longer use (no other job of it
  // uses them). OK for a job that is not attached (idempotent).
  struct Detached {
    bool existed = false;
    std::vector<Scope> released;
  };
  absl::StatusOr<Detached> Detach(const std::string& identity, const std::string& job_id);

  // Whether `identity` has an attached job that uses `scope`.
  bool Allows(const std::string& identity, const Scope& scope) const;

  // Totals, for the start-up log line.
  size_t identities() const;
  size_t jobs() const;

 private:
  explicit AttachmentTable(std::unique_ptr<meta::AttachmentStore> store)
      : store_(std::move(store)) {}
  struct Node {
    std::map<std::string, std::vector<Scope>> jobs;  // by job id
    std::map<Scope, int> uses;                       // scope -> jobs using it
  };
  // Requires mu_ held exclusively.
  void AddLocked(const std::string& identity, const std::string& job_id,
                 const std::vector<Scope>& scopes);
  // Requires mu_ held exclusively. Returns the scopes no job uses any more.
  std::vector<Scope> RemoveLocked(const std::string& identity, const std::string& job_id);

  std::unique_ptr<meta::AttachmentStore> store_;
  // Serializes Attach and Detach: the store and the map change in the same order.
  std::mutex write_mu_;
  mutable std::shared_mutex mu_;
  std::map<std::string, Node> nodes_;  // guarded by mu_; by identity
};

}  // namespace traincache::server

#endif  // TRAINCACHE_SERVER_ATTACHMENT_TABLE_H_
