// FUZZ_CHECK: what a fuzz target asserts about the code under test. A
// failed check prints the condition and aborts, which libFuzzer reports as a
// crash and saves the input that caused it.
#ifndef TRAINCACHE_TESTS_FUZZ_FUZZ_CHECK_H_
#define TRAINCACHE_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

#endif  // TRAINCACHE_TESTS_FUZZ_FUZZ_CHECK_H_
