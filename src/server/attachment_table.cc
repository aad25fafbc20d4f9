#include "server/attachment_table.h"

#include "traincache/status.h"

namespace traincache::server {

absl::StatusOr<std::unique_ptr<AttachmentTable>> AttachmentTable::Open(
    std::unique_ptr<meta::AttachmentStore> store) {
  ASSIGN_OR_RETURN(std::vector<meta::AttachmentRecord> records, store->List());
  std::unique_ptr<AttachmentTable> table(new AttachmentTable(std::move(store)));
  std::unique_lock lock(table->mu_);
  for (const meta::AttachmentRecord& r : records) table->AddLocked(r.identity, r.job_id, r.scopes);
  lock.unlock();
  return table;
}

void AttachmentTable::AddLocked(const std::string& identity, const std::string& job_id,
                                const std::vector<Scope>& scopes) {
  Node& node = nodes_[identity];
  auto [it, inserted] = node.jobs.try_emplace(job_id, scopes);
  if (!inserted) {
    // A job attached again with other scopes: its old ones count no more.
    for (const Scope& old : it->second) {
      if (--node.uses[old] == 0) node.uses.erase(old);
    }
    it->second = scopes;
  }
  for (const Scope& scope : scopes) ++node.uses[scope];
}

std::vector<Scope> AttachmentTable::RemoveLocked(const std::string& identity,
                                                 const std::string& job_id) {
  std::vector<Scope> released;
  auto n = nodes_.find(identity);
  if (n == nodes_.end()) return released;
  auto j = n->second.jobs.find(job_id);
  if (j == n->second.jobs.end()) return released;
  for (const Scope& scope : j->second) {
    auto u = n->second.uses.find(scope);
    if (u != n->second.uses.end() && --u->second == 0) {
      n->second.uses.erase(u);
      released.push_back(scope);
    }
  }
  n->second.jobs.erase(j);
  if (n->second.jobs.empty()) nodes_.erase(n);
  return released;
}

absl::Status AttachmentTable::Attach(const std::string& identity, const std::string& job_id,
                                     const std::vector<Scope>& scopes) {
  std::lock_guard write(write_mu_);
  {
    // Attached already with these scopes: no disk write (a node retrying
    // an attach after a lost answer costs nothing).
    std::shared_lock lock(mu_);
    auto n = nodes_.find(identity);
    if (n != nodes_.end()) {
      auto j = n->second.jobs.find(job_id);
      if (j != n->second.jobs.end() && j->second == scopes) return absl::OkStatus();
    }
  }
  RETURN_IF_ERROR(store_->Put({.identity = identity, .job_id = job_id, .scopes = scopes}));
  std::unique_lock lock(mu_);
  AddLocked(identity, job_id, scopes);
  return absl::OkStatus();
}

absl::StatusOr<AttachmentTable::Detached> AttachmentTable::Detach(const std::string& identity,
                                                                  const std::string& job_id) {
  std::lock_guard write(write_mu_);
  {
    std::shared_lock lock(mu_);
    auto n = nodes_.find(identity);
    if (n == nodes_.end() || !n->second.jobs.contains(job_id)) return Detached{};
  }
  // Durable first: a restart must not bring back a job whose detach was answered.
  RETURN_IF_ERROR(store_->Delete(identity, job_id));
  std::unique_lock lock(mu_);
  return Detached{.existed = true, .released = RemoveLocked(identity, job_id)};
}

bool AttachmentTable::Allows(const std::string& identity, const Scope& scope) const {
  std::shared_lock lock(mu_);
  auto n = nodes_.find(identity);
  return n != nodes_.end() && n->second.uses.contains(scope);
}

size_t AttachmentTable::identities() const {
  std::shared_lock lock(mu_);
  return nodes_.size();
}

size_t AttachmentTable::jobs() const {
  std::shared_lock lock(mu_);
  size_t total = 0;
  for (const auto& [identity, node] : nodes_) total += node.jobs.size();
  return total;
}

}  // namespace traincache::server
