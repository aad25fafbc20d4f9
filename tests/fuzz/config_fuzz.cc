// libFuzzer target: traincache-server's config parser (src/server/config.h)
// on arbitrary text. Parsing and then checking a config must either give a
// config or INVALID_ARGUMENT naming the problem, never crash, throw or hang.
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace traincache::server;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ServerConfig> config = ParseServerConfig(text);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(config.status().message().find("config") != std::string_view::npos);
    return 0;
  }
  // Finalize reads token files: keep it off the fuzzer's paths (/dev/zero
  // would be read forever), the checks of every other key still run.
  config->token_file.clear();
  config->registry_token_file.clear();
  if (config->token.empty()) config->token = "0123456789abcdef0123";
  if (config->data_dir.empty()) config->data_dir = "/nonexistent";
  absl::StatusOr<ServerConfig> final = FinalizeServerConfig(*config);
  if (!final.ok()) {
    FUZZ_CHECK(final.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(final.status().message().find("config key '") == 0);
  }
  return 0;
}
