// The client TLS flags of traincache-node and traincache: the same names and
// meanings in both (README, "Security").
#ifndef TRAINCACHE_CLI_TLS_FLAGS_H_
#define TRAINCACHE_CLI_TLS_FLAGS_H_

#include <CLI/CLI.hpp>
#include <string>

#include "rpc/tls.h"

namespace traincache::cli {

// Adds --tls-ca-file, --tls-cert-file, --tls-key-file, --tls-server-name and
// --insecure, filling `files`. `ca_default` names where the CA's default
// comes from, for the help ("" if none).
inline void AddClientTlsFlags(CLI::App& app, rpc::ClientTlsFiles& files,
                              const std::string& ca_default = "") {
  app.add_option("--tls-ca-file", files.ca_file,
                 "PEM CA bundle of the server's certificate: connect with TLS" +
                     (ca_default.empty() ? "" : " (default " + ca_default + ")"));
  app.add_option("--tls-cert-file", files.cert_file,
                 "PEM client certificate, for a server that requires one (mutual TLS)");
  app.add_option("--tls-key-file", files.key_file, "PEM private key of --tls-cert-file");
  app.add_option("--tls-server-name", files.server_name,
                 "name the server's certificate must carry (default: the host of --server)");
  app.add_flag("--insecure", files.insecure,
               "plaintext to a server that is not on this machine (the token crosses the "
               "network in the clear)");
}

}  // namespace traincache::cli

#endif  // TRAINCACHE_CLI_TLS_FLAGS_H_
