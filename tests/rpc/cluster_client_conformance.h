// The conformance suite of ClusterClient (traincache/cluster_client.h): one
// set of TEST_Ps that every implementation must pass. A test binary
// instantiates it with its implementations:
//
//   INSTANTIATE_TEST_SUITE_P(Fake, ClusterClientConformanceTest,
//                            ::testing::Values(ClusterClientImpl{"fake", MakeFakeEnv}),
//                            ClusterClientImpl::Name);
//
// The fake runs in the quick suite; the gRPC client against a real
// traincache-server in the integration suite.
#ifndef TRAINCACHE_TESTS_RPC_CLUSTER_CLIENT_CONFORMANCE_H_
#define TRAINCACHE_TESTS_RPC_CLUSTER_CLIENT_CONFORMANCE_H_

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "traincache/cluster_client.h"

namespace traincache::testing {

// One implementation under test, with what the suite needs besides the
// interface (setting a quota is an operator's call, not the node's).
class ClusterClientEnv {
 public:
  virtual ~ClusterClientEnv() = default;
  virtual ClusterClient& client() = 0;
  virtual absl::Status SetQuota(const Scope& scope, uint64_t quota_bytes) = 0;
};

struct ClusterClientImpl {
  std::string name;
  // Makes a fresh, empty environment; a failure is reported by returning null
  // after ADD_FAILURE.
  std::function<std::unique_ptr<ClusterClientEnv>()> make;

  static std::string Name(const ::testing::TestParamInfo<ClusterClientImpl>& info) {
    return info.param.name;
  }
  friend void PrintTo(const ClusterClientImpl& impl, std::ostream* os) { *os << impl.name; }
};

class ClusterClientConformanceTest : public ::testing::TestWithParam<ClusterClientImpl> {
 protected:
  void SetUp() override;

  ClusterClient& client() { return env_->client(); }
  const Scope& scope() const { return scope_; }

  std::unique_ptr<ClusterClientEnv> env_;
  Scope scope_ = *Scope::Parse("project:conformance");
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_RPC_CLUSTER_CLIENT_CONFORMANCE_H_
