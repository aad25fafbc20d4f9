// TLS of the gRPC connections between traincache-node, the traincache CLI
// and traincache-server (and between servers, to the pin registry).
//
// Plaintext is allowed only where nothing leaves the machine: a Unix socket
// or a loopback address. Anywhere else a client must be given the CA bundle
// the server's certificate chains to (ClientTls), or be told --insecure; a
// server must be given its certificate and key, or allow_insecure.
//
// The bearer token is sent over TLS as over plaintext: TLS hides it and
// proves the server's identity; the token (or, with mutual TLS, the client
// certificate as well) proves the caller's.
//
// The PEM files are read and checked once, at start (certificates parse, a
// key matches its certificate), so a wrong file stops a program with a
// message naming it instead of failing every handshake later. Pure
// functions; thread-safe.
#ifndef TRAINCACHE_RPC_TLS_H_
#define TRAINCACHE_RPC_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace traincache::rpc {

// What a client dials with. Empty ca_pem: plaintext.
struct ClientTls {
  std::string ca_pem;    // the CA bundle the server's certificate must chain to
  std::string cert_pem;  // client certificate chain, for mutual TLS; empty: none
  std::string key_pem;   // its private key
  std::string
      server_name;  // name checked against the server's certificate; empty: the target's host
  bool enabled() const { return !ca_pem.empty(); }
};

// The files a client's flags name (--tls-ca-file, --tls-cert-file,
// --tls-key-file, --tls-server-name, --insecure).
struct ClientTlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  std::string server_name;
  bool insecure = false;  // plaintext to a server on another machine
};

// Reads and checks the files for a client of `target`. INVALID_ARGUMENT,
// naming the flag, when a file cannot be read or holds no certificate/key,
// when the key does not match the certificate, when only one of cert and key
// is given, and when `target` is neither a Unix socket nor loopback and
// neither a CA file nor `insecure` is given (the token would cross the
// network in the clear).
absl::StatusOr<ClientTls> LoadClientTls(const ClientTlsFiles& files, std::string_view target);

// What a server listens with. Empty cert_pem: plaintext.
struct ServerTls {
  std::string cert_pem;       // the server's certificate chain
  std::string key_pem;        // its private key
  std::string client_ca_pem;  // non-empty: clients must present a certificate it signed
  bool enabled() const { return !cert_pem.empty(); }
};

// The channel and server credentials for those (insecure when not enabled).
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientTls& tls);
std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const ServerTls& tls);
// Sets the name checked against the server's certificate, if tls says one.
void AddTlsArguments(const ClientTls& tls, grpc::ChannelArguments* args);

// For an UNAVAILABLE status of a client dialing with `tls`: a sentence
// (starting with "; ") on what to check about TLS, since gRPC reports a
// failed handshake only as "failed to connect". "" for any other status.
std::string UnavailableHint(const absl::Status& status, const ClientTls& tls);

// True if `target` ("host:port", "unix:/path", "ipv4:...", "dns:///host:port")
// does not leave this machine: a Unix socket, localhost, 127.0.0.0/8, ::1.
bool IsLocalTarget(std::string_view target);

// Reads `path` and checks it holds at least one PEM certificate; `what`
// names it in errors (a flag or a config key).
absl::StatusOr<std::string> ReadCertificates(std::string_view what, const std::string& path);
// Reads `path` and checks it holds a PEM private key.
absl::StatusOr<std::string> ReadPrivateKey(std::string_view what, const std::string& path);
// INVALID_ARGUMENT naming `what` unless `key_pem` is the key of the first
// certificate of `cert_pem`.
absl::Status CheckKeyMatches(std::string_view what, const std::string& cert_pem,
                             const std::string& key_pem);

}  // namespace traincache::rpc

#endif  // TRAINCACHE_RPC_TLS_H_
