// TempDir: a fresh directory under $TMPDIR (or /tmp), removed with its
// contents when the object goes away, unless TRAINCACHE_KEEP_TEST_DIRS is
// set (to read the daemons' logs of a run after it).
#ifndef TRAINCACHE_TESTS_TESTING_TEMP_DIR_H_
#define TRAINCACHE_TESTS_TESTING_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace traincache::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/traincache-test-XXXXXX";
    path_ = mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    if (const char* keep = std::getenv("TRAINCACHE_KEEP_TEST_DIRS"); keep && *keep) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace traincache::testing

#endif  // TRAINCACHE_TESTS_TESTING_TEMP_DIR_H_
