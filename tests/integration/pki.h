// Pki: certificates an integration test makes for itself with the openssl
// CLI in its temp dir, as an operator would (README, "Security"): CAs, and
// leaf certificates they sign whose CN is the leaf's name (a node's
// identity under require_attached_scopes). <dir>/<name>.crt and .key.
#ifndef TRAINCACHE_TESTS_INTEGRATION_PKI_H_
#define TRAINCACHE_TESTS_INTEGRATION_PKI_H_

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "testing/server_process.h"

namespace traincache::testing {

class Pki {
 public:
  explicit Pki(std::string dir) : dir_(std::move(dir)) {}

  std::string Crt(const std::string& name) const { return dir_ + "/" + name + ".crt"; }
  std::string Key(const std::string& name) const { return dir_ + "/" + name + ".key"; }

  // A self-signed CA.
  void MakeCa(const std::string& name) {
    Run({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", Key(name), "-out", Crt(name), "-days", "2", "-subj", "/CN=" + name});
  }
  // A certificate with CN=<name> signed by `ca`, with the extensions `ext`
  // (one per line).
  void MakeLeaf(const std::string& name, const std::string& ca, const std::string& ext) {
    std::string ext_file = dir_ + "/" + name + ".ext";
    std::ofstream(ext_file) << ext;
    Run({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
         Key(name), "-out", dir_ + "/" + name + ".csr", "-subj", "/CN=" + name});
    Run({"x509", "-req", "-in", dir_ + "/" + name + ".csr", "-CA", Crt(ca), "-CAkey", Key(ca),
         "-CAcreateserial", "-out", Crt(name), "-days", "2", "-extfile", ext_file});
  }

 private:
  void Run(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/bin/openssl");
    std::string log = dir_ + "/openssl.log";
    ASSERT_EQ(RunProgram(args, log), 0) << [&] {
      std::ifstream in(log);
      std::stringstream s;
      s << in.rdbuf();
      return s.str();
    }();
  }

  std::string dir_;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_INTEGRATION_PKI_H_
