#include "traincache/scope.h"

#include <cerrno>
#include <string>

#include <gtest/gtest.h>

#include "traincache/status.h"

namespace traincache {
namespace {

TEST(ScopeTest, ParsesProjectAndTeam) {
  auto p = Scope::Parse("project:abc-1.x_y");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kind(), ScopeKind::kProject);
  EXPECT_EQ(p->id(), "abc-1.x_y");
  EXPECT_EQ(p->ToString(), "project:abc-1.x_y");
  auto t = Scope::Parse("team:T9");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind(), ScopeKind::kTeam);
}

TEST(ScopeTest, RejectsMalformed) {
  for (const char* bad : {"", "project", "project:", "user:abc", "project:-abc", "project:.x",
                          "project:a/b", "project:a b", "team:a:b", "project:..", "PROJECT:a"}) {
    auto s = Scope::Parse(bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(Scope::Parse("project:" + std::string(128, 'a')).ok());
  EXPECT_FALSE(Scope::Parse("project:" + std::string(129, 'a')).ok());
  EXPECT_FALSE(Scope::Parse(std::string("project:a\0b", 11)).ok());
}

TEST(ScopeTest, ValidateName) {
  EXPECT_TRUE(ValidateName("a").ok());
  EXPECT_TRUE(ValidateName("...").ok());
  EXPECT_TRUE(ValidateName(std::string(255, 'x')).ok());
  EXPECT_EQ(ToErrno(ValidateName("")), EINVAL);
  EXPECT_EQ(ToErrno(ValidateName(".")), EINVAL);
  EXPECT_EQ(ToErrno(ValidateName("..")), EINVAL);
  EXPECT_EQ(ToErrno(ValidateName("a/b")), EINVAL);
  EXPECT_EQ(ToErrno(ValidateName(std::string("a\0b", 3))), EINVAL);
  EXPECT_EQ(ToErrno(ValidateName(std::string(256, 'x'))), ENAMETOOLONG);
}

}  // namespace
}  // namespace traincache
