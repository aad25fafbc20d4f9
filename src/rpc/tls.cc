#include "rpc/tls.h"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "traincache/status.h"

namespace traincache::rpc {
namespace {

absl::Status Bad(std::string_view what, std::string_view message) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", what, message));
}

absl::StatusOr<std::string> ReadFile(std::string_view what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Bad(what, fmt::format("cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct BioCloser {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioCloser>;
struct X509Closer {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Closer>;
struct KeyCloser {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyCloser>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Not a callback prompt: an encrypted key is refused rather than asked for.
int NoPassphrase(char*, int, int, void*) { return -1; }

}  // namespace

absl::StatusOr<std::string> ReadCertificates(std::string_view what, const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(what, path));
  BioPtr bio = MemoryBio(pem);
  int count = 0;
  while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr)}) ++count;
  ERR_clear_error();  // The read that ended the loop left "no start line" behind.
  if (count == 0) return Bad(what, fmt::format("{} holds no PEM certificate", path));
  return pem;
}

absl::StatusOr<std::string> ReadPrivateKey(std::string_view what, const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadFile(what, path));
  BioPtr bio = MemoryBio(pem);
  KeyPtr key{PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr)};
  ERR_clear_error();
  if (!key) {
    return Bad(what, fmt::format("{} holds no PEM private key (or one with a passphrase)", path));
  }
  return pem;
}

absl::Status CheckKeyMatches(std::string_view what, const std::string& cert_pem,
                             const std::string& key_pem) {
  BioPtr cert_bio = MemoryBio(cert_pem);
  BioPtr key_bio = MemoryBio(key_pem);
  X509Ptr cert{PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassphrase, nullptr)};
  KeyPtr key{PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr)};
  bool match = cert && key && X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  if (!match) return Bad(what, "the private key is not the key of the certificate");
  return absl::OkStatus();
}

std::string UnavailableHint(const absl::Status& status, const ClientTls& tls) {
  if (status.code() != absl::StatusCode::kUnavailable) return "";
  if (!tls.enabled()) {
    return "; this client speaks plaintext (no --tls-ca-file): if the server serves TLS, "
           "give the CA of its certificate with --tls-ca-file";
  }
  return "; this client speaks TLS: check that the server serves TLS, that --tls-ca-file is "
         "the CA that signed its certificate, that the certificate names the host of --server "
         "(or --tls-server-name), and whether the server requires a client certificate "
         "(--tls-cert-file, --tls-key-file)";
}

bool IsLocalTarget(std::string_view target) {
  if (target.rfind("unix:", 0) == 0 || target.rfind("unix-abstract:", 0) == 0) return true;
  for (std::string_view scheme : {"dns:///", "ipv4:", "ipv6:"}) {
    if (target.rfind(scheme, 0) == 0) target.remove_prefix(scheme.size());
  }
  std::string_view host = target;
  if (!host.empty() && host.front() == '[') {
    size_t end = host.find(']');
    if (end == std::string_view::npos) return false;
    host = host.substr(1, end - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8: four dotted numbers, the first 127.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

absl::StatusOr<ClientTls> LoadClientTls(const ClientTlsFiles& files, std::string_view target) {
  ClientTls tls;
  if (files.ca_file.empty()) {
    if (!files.cert_file.empty() || !files.key_file.empty() || !files.server_name.empty()) {
      return Bad("--tls-ca-file",
                 "is required with --tls-cert-file, --tls-key-file and "
                 "--tls-server-name");
    }
    if (!files.insecure && !IsLocalTarget(target)) {
      return Bad("--server",
                 fmt::format("{} is not a Unix socket or loopback address: give --tls-ca-file "
                             "(the CA of the server's certificate) to connect with TLS, or "
                             "--insecure to send the token over the network in the clear",
                             target));
    }
    return tls;
  }
  if (files.insecure) return Bad("--insecure", "cannot be given with --tls-ca-file");
  ASSIGN_OR_RETURN(tls.ca_pem, ReadCertificates("--tls-ca-file", files.ca_file));
  if (files.cert_file.empty() != files.key_file.empty()) {
    return Bad(files.cert_file.empty() ? "--tls-cert-file" : "--tls-key-file",
               "is required with the other of --tls-cert-file and --tls-key-file");
  }
  if (!files.cert_file.empty()) {
    ASSIGN_OR_RETURN(tls.cert_pem, ReadCertificates("--tls-cert-file", files.cert_file));
    ASSIGN_OR_RETURN(tls.key_pem, ReadPrivateKey("--tls-key-file", files.key_file));
    RETURN_IF_ERROR(CheckKeyMatches("--tls-key-file", tls.cert_pem, tls.key_pem));
  }
  tls.server_name = files.server_name;
  return tls;
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientTls& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.ca_pem;
  ssl.pem_cert_chain = tls.cert_pem;
  ssl.pem_private_key = tls.key_pem;
  return grpc::SslCredentials(ssl);
}

void AddTlsArguments(const ClientTls& tls, grpc::ChannelArguments* args) {
  if (tls.enabled() && !tls.server_name.empty()) args->SetSslTargetNameOverride(tls.server_name);
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const ServerTls& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      tls.client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = tls.client_ca_pem;
  ssl.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return grpc::SslServerCredentials(ssl);
}

}  // namespace traincache::rpc
