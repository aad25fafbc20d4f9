// POSIX through the mount (issue 3, item 7): ordinary system calls on node
// A's mount, results checked on A and, where the call's effect must reach
// the server, on node B's. Each test asserts bytes, errnos and attributes.
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <linux/fs.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <thread>

#include "integration/mount_fixture.h"
#include "traincache/v1/admin.grpc.pb.h"

namespace traincache::testing {
namespace {

namespace fs = std::filesystem;

// Attributes are cached for attr_ttl (1 s) on each node and in its kernel;
// waiting this long makes B ask the server again.
void WaitOutAttrCache() { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); }

std::string PreadString(int fd, size_t n, off_t off) {
  std::string out(n, '\0');
  ssize_t got = pread(fd, out.data(), n, off);
  if (got < 0) return "<errno " + std::to_string(errno) + ">";
  out.resize(static_cast<size_t>(got));
  return out;
}

int RenameAt2(const std::string& from, const std::string& to, unsigned flags) {
  return static_cast<int>(
      syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}

using PosixMountTest = MountTest;

TEST_F(PosixMountTest, CreateExclusive) {
  int fd = open(A("x").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0640);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(WriteAll(fd, "first"), 0);
  EXPECT_EQ(close(fd), 0);
  errno = 0;
  EXPECT_EQ(open(A("x").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0640), -1);
  EXPECT_EQ(errno, EEXIST);
  errno = 0;
  EXPECT_EQ(open(B("x").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0640), -1);
  EXPECT_EQ(errno, EEXIST);
  // O_CREAT without O_EXCL opens the existing file and keeps its bytes.
  fd = open(B("x").c_str(), O_RDWR | O_CREAT, 0640);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(PreadString(fd, 100, 0), "first");
  close(fd);
  struct stat st {};
  ASSERT_EQ(stat(B("x").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(PosixMountTest, AppendWritesAtTheEndOnBothNodes) {
  ASSERT_EQ(WriteFile(A("log"), "abc"), 0);
  int fd = open(A("log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  lseek(fd, 0, SEEK_SET);  // O_APPEND ignores the offset.
  EXPECT_EQ(WriteAll(fd, "def"), 0);
  // A second appender on the same node interleaves at the end, too.
  int fd2 = open(A("log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd2, 0);
  EXPECT_EQ(WriteAll(fd2, "123"), 0);
  EXPECT_EQ(WriteAll(fd, "ghi"), 0);
  EXPECT_EQ(close(fd2), 0);
  EXPECT_EQ(close(fd), 0);
  EXPECT_EQ(ReadFile(B("log")), "abcdef123ghi");

  fd = open(B("log").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(WriteAll(fd, "jkl"), 0);
  EXPECT_EQ(close(fd), 0);
  EXPECT_EQ(ReadFile(A("log")), "abcdef123ghijkl");
}

TEST_F(PosixMountTest, TruncateAndFtruncateShrinkAndExtendWithZeros) {
  const std::string data = RandomBytes(10 * kMiB + 5, 7);
  ASSERT_EQ(WriteFile(A("t"), data), 0);

  // truncate(2) of a closed file: shrink mid-chunk, then extend.
  const size_t shrunk = 5 * kMiB + 123;
  ASSERT_EQ(truncate(A("t").c_str(), shrunk), 0);
  EXPECT_TRUE(ReadFile(B("t")) == data.substr(0, shrunk));
  ASSERT_EQ(truncate(A("t").c_str(), 9 * kMiB), 0);
  std::string want = data.substr(0, shrunk) + std::string(9 * kMiB - shrunk, '\0');
  EXPECT_TRUE(ReadFile(B("t")) == want);
  EXPECT_TRUE(ReadFile(A("t")) == want);

  // ftruncate(2) through an open descriptor, mixed with writes.
  int fd = open(A("t").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 1000), 0);
  EXPECT_EQ(PreadString(fd, 2000, 0), want.substr(0, 1000));
  ASSERT_EQ(ftruncate(fd, 3000), 0);
  ASSERT_EQ(pwrite(fd, "Z", 1, 2000), 1);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 3000);
  EXPECT_EQ(close(fd), 0);
  want = want.substr(0, 1000) + std::string(2000, '\0');
  want[2000] = 'Z';
  EXPECT_EQ(ReadFile(B("t")), want);
  ASSERT_EQ(stat(B("t").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 3000);

  // O_TRUNC of an existing file.
  fd = open(A("t").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(close(fd), 0);
  EXPECT_EQ(ReadFile(B("t")), "");
}

TEST_F(PosixMountTest, SparseFilePastFourGiB) {
  const off_t far = static_cast<off_t>(6 * kGiB);
  int fd = open(A("sparse").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "head", 4, 0), 4);
  ASSERT_EQ(pwrite(fd, "tail!", 5, far), 5);
  ASSERT_EQ(close(fd), 0);

  struct stat st {};
  ASSERT_EQ(stat(B("sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, far + 5);
  fd = open(B("sparse").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(PreadString(fd, 4, 0), "head");
  EXPECT_EQ(PreadString(fd, 5, far), "tail!");
  EXPECT_EQ(PreadString(fd, 100, far + 5), "");  // EOF.
  // Holes read as zeros: inside the first chunk, mid-file, just before the tail.
  EXPECT_EQ(PreadString(fd, 1 << 20, 4), std::string(1 << 20, '\0'));
  EXPECT_EQ(PreadString(fd, 1 << 20, static_cast<off_t>(3 * kGiB)), std::string(1 << 20, '\0'));
  EXPECT_EQ(PreadString(fd, 4096, far - 4096), std::string(4096, '\0'));
  close(fd);
}

TEST_F(PosixMountTest, FsyncPublishesToTheOtherNodeBeforeClose) {
  const std::string v1 = RandomBytes(5 * kMiB, 8);
  int fd = open(A("synced").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(WriteAll(fd, v1), 0);
  ASSERT_EQ(fsync(fd), 0);
  EXPECT_TRUE(ReadFile(B("synced")) == v1);  // A still holds it open.
  ASSERT_EQ(pwrite(fd, "XY", 2, 100), 2);
  ASSERT_EQ(fdatasync(fd), 0);
  std::string v2 = v1;
  v2.replace(100, 2, "XY");
  EXPECT_TRUE(ReadFile(B("synced")) == v2);
  EXPECT_EQ(close(fd), 0);
}

TEST_F(PosixMountTest, UnlinkedOpenFileStaysReadableUntilClose) {
  const std::string data = RandomBytes(6 * kMiB, 9);
  ASSERT_EQ(WriteFile(A("tmp"), data), 0);
  int rd = open(A("tmp").c_str(), O_RDONLY);
  ASSERT_GE(rd, 0);
  int rw = open(A("tmp").c_str(), O_RDWR);
  ASSERT_GE(rw, 0);
  ASSERT_EQ(unlink(A("tmp").c_str()), 0);

  struct stat st {};
  errno = 0;
  EXPECT_EQ(stat(A("tmp").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  errno = 0;
  EXPECT_EQ(stat(B("tmp").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_TRUE(ListDir(mnt_b_).empty());

  ASSERT_EQ(fstat(rd, &st), 0);
  EXPECT_EQ(st.st_nlink, 0u);
  posix_fadvise(rd, 0, 0, POSIX_FADV_DONTNEED);  // Reads reach the daemon.
  EXPECT_TRUE(PreadString(rd, data.size(), 0) == data);
  // Still writable through a handle, and the write is seen by the reader.
  ASSERT_EQ(pwrite(rw, "new", 3, 10), 3);
  ASSERT_EQ(fsync(rw), 0);
  EXPECT_EQ(PreadString(rd, 3, 10), "new");
  EXPECT_EQ(close(rw), 0);
  EXPECT_EQ(PreadString(rd, 3, 10), "new");
  EXPECT_EQ(close(rd), 0);

  // The name is free again.
  ASSERT_EQ(WriteFile(A("tmp"), "fresh"), 0);
  EXPECT_EQ(ReadFile(B("tmp")), "fresh");
}

TEST_F(PosixMountTest, RenameOverFilesAndOfNonEmptyDirectories) {
  ASSERT_EQ(WriteFile(A("src"), "new content"), 0);
  ASSERT_EQ(WriteFile(A("dst"), "old content"), 0);
  EXPECT_EQ(ReadFile(B("dst")), "old content");
  ASSERT_EQ(rename(A("src").c_str(), A("dst").c_str()), 0);
  EXPECT_EQ(ReadFile(B("dst")), "new content");
  EXPECT_FALSE(fs::exists(B("src")));

  // A whole tree moves with its directory.
  ASSERT_TRUE(fs::create_directories(A("tree/sub/deeper")));
  ASSERT_EQ(WriteFile(A("tree/a"), "A"), 0);
  ASSERT_EQ(WriteFile(A("tree/sub/deeper/b"), "B"), 0);
  ASSERT_EQ(rename(A("tree").c_str(), A("moved").c_str()), 0);
  EXPECT_FALSE(fs::exists(B("tree")));
  EXPECT_EQ(ReadFile(B("moved/a")), "A");
  EXPECT_EQ(ReadFile(B("moved/sub/deeper/b")), "B");
  // Into another directory, over an empty directory.
  ASSERT_TRUE(fs::create_directories(A("parent/empty")));
  ASSERT_EQ(rename(A("moved/sub").c_str(), A("parent/empty").c_str()), 0);
  EXPECT_EQ(ReadFile(B("parent/empty/deeper/b")), "B");
  EXPECT_EQ(ListDir(B("moved")), (std::set<std::string>{"a"}));

  // Not over a non-empty directory, not a directory over a file or back.
  ASSERT_TRUE(fs::create_directories(A("full")));
  ASSERT_EQ(WriteFile(A("full/f"), "f"), 0);
  errno = 0;
  EXPECT_EQ(rename(A("moved").c_str(), A("full").c_str()), -1);
  EXPECT_TRUE(errno == ENOTEMPTY || errno == EEXIST) << strerror(errno);
  errno = 0;
  EXPECT_EQ(rename(A("moved").c_str(), A("dst").c_str()), -1);
  EXPECT_EQ(errno, ENOTDIR);
  errno = 0;
  EXPECT_EQ(rename(A("dst").c_str(), A("full").c_str()), -1);
  EXPECT_EQ(errno, EISDIR);
  // Nor into itself.
  errno = 0;
  EXPECT_EQ(rename(A("moved").c_str(), A("moved/inside").c_str()), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(ReadFile(B("full/f")), "f");
  EXPECT_EQ(ReadFile(B("moved/a")), "A");
}

TEST_F(PosixMountTest, RenameNoReplaceAndExchange) {
  ASSERT_EQ(WriteFile(A("one"), "1"), 0);
  ASSERT_EQ(WriteFile(A("two"), "2"), 0);
  errno = 0;
  EXPECT_EQ(RenameAt2(A("one"), A("two"), RENAME_NOREPLACE), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(ReadFile(B("two")), "2");
  EXPECT_EQ(RenameAt2(A("one"), A("three"), RENAME_NOREPLACE), 0);
  EXPECT_EQ(ReadFile(B("three")), "1");
  EXPECT_FALSE(fs::exists(B("one")));

  struct stat two_before {}, three_before {};
  ASSERT_EQ(stat(A("two").c_str(), &two_before), 0);
  ASSERT_EQ(stat(A("three").c_str(), &three_before), 0);
  ASSERT_EQ(RenameAt2(A("two"), A("three"), RENAME_EXCHANGE), 0);
  // B looked both names up above and both inodes live on: B may resolve the
  // names as they were for entry_ttl (1 s), as designed (FUSE gives no way to
  // revalidate a cached name at open). After it, B sees the swap.
  WaitOutAttrCache();
  EXPECT_EQ(ReadFile(B("two")), "1");
  EXPECT_EQ(ReadFile(B("three")), "2");
  struct stat st {};
  ASSERT_EQ(stat(B("two").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, three_before.st_ino);
  // A file and a directory swap too.
  ASSERT_TRUE(fs::create_directories(A("dir/inner")));
  ASSERT_EQ(RenameAt2(A("two"), A("dir"), RENAME_EXCHANGE), 0);
  EXPECT_EQ(ReadFile(A("dir")), "1");  // At once on the node that renamed.
  EXPECT_TRUE(fs::is_directory(A("two/inner")));
  WaitOutAttrCache();  // B just resolved "two" as a file (entry_ttl, above).
  EXPECT_EQ(ReadFile(B("dir")), "1");
  EXPECT_TRUE(fs::is_directory(B("two/inner")));
  errno = 0;
  EXPECT_EQ(RenameAt2(A("two"), A("missing"), RENAME_EXCHANGE), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(PosixMountTest, SymlinksWithRelativeTargets) {
  ASSERT_TRUE(fs::create_directories(A("blobs")));
  ASSERT_TRUE(fs::create_directories(A("snapshots/rev")));
  ASSERT_EQ(WriteFile(A("blobs/etag"), "weights"), 0);
  const std::string target = "../../blobs/etag";
  ASSERT_EQ(symlink(target.c_str(), A("snapshots/rev/model.bin").c_str()), 0);

  char buf[256];
  ssize_t n = readlink(B("snapshots/rev/model.bin").c_str(), buf, sizeof(buf));
  ASSERT_EQ(n, static_cast<ssize_t>(target.size()));
  EXPECT_EQ(std::string(buf, n), target);
  struct stat st {};
  ASSERT_EQ(lstat(B("snapshots/rev/model.bin").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_size, static_cast<off_t>(target.size()));
  ASSERT_EQ(stat(B("snapshots/rev/model.bin").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 7);
  EXPECT_EQ(ReadFile(B("snapshots/rev/model.bin")), "weights");

  // Dangling until its target appears; a link to a directory; a loop.
  ASSERT_EQ(symlink("later", A("dangling").c_str()), 0);
  errno = 0;
  EXPECT_EQ(stat(B("dangling").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  ASSERT_EQ(WriteFile(A("later"), "now"), 0);
  EXPECT_EQ(ReadFile(B("dangling")), "now");
  ASSERT_EQ(symlink("snapshots/rev", A("current").c_str()), 0);
  EXPECT_EQ(ReadFile(B("current/model.bin")), "weights");
  ASSERT_EQ(symlink("loop", A("loop").c_str()), 0);
  errno = 0;
  EXPECT_EQ(open(B("loop").c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, ELOOP);
  // O_NOFOLLOW does not follow.
  errno = 0;
  EXPECT_EQ(open(B("current").c_str(), O_RDONLY | O_NOFOLLOW), -1);
  EXPECT_EQ(errno, ELOOP);
}

TEST_F(PosixMountTest, HardlinksShareOneInode) {
  ASSERT_EQ(WriteFile(A("orig"), "shared"), 0);
  ASSERT_EQ(link(A("orig").c_str(), A("alias").c_str()), 0);
  struct stat a {}, b {};
  ASSERT_EQ(stat(B("orig").c_str(), &a), 0);
  ASSERT_EQ(stat(B("alias").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(b.st_nlink, 2u);

  // A write through one name is read through the other, on the other node.
  ASSERT_EQ(WriteFile(A("alias"), "changed"), 0);
  EXPECT_EQ(ReadFile(B("orig")), "changed");

  ASSERT_EQ(unlink(A("orig").c_str()), 0);
  WaitOutAttrCache();
  ASSERT_EQ(stat(B("alias").c_str(), &b), 0);
  EXPECT_EQ(b.st_nlink, 1u);
  EXPECT_EQ(ReadFile(B("alias")), "changed");
  // Directories cannot be hard-linked.
  ASSERT_TRUE(fs::create_directories(A("d")));
  errno = 0;
  EXPECT_EQ(link(A("d").c_str(), A("d2").c_str()), -1);
  EXPECT_EQ(errno, EPERM);
}

TEST_F(PosixMountTest, DirectoryOfTwoThousandEntries) {
  constexpr int kEntries = 2000;
  ASSERT_EQ(mkdir(A("many").c_str(), 0755), 0);
  std::set<std::string> want;
  for (int i = 0; i < kEntries; ++i) {
    std::string name = "entry-" + std::to_string(i);
    if (i % 10 == 0) {
      ASSERT_EQ(mkdir(A("many/" + name).c_str(), 0755), 0) << name;
    } else {
      int fd = open(A("many/" + name).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      ASSERT_GE(fd, 0) << name << ": " << strerror(errno);
      ASSERT_EQ(close(fd), 0);
    }
    want.insert(name);
  }
  EXPECT_EQ(ListDir(B("many")), want);
  struct stat st {};
  ASSERT_EQ(stat(B("many").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));

  // readdir(plus) hands out attributes: the types are right.
  DIR* d = opendir(B("many").c_str());
  ASSERT_NE(d, nullptr);
  int dirs = 0, files = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    (e->d_type == DT_DIR ? dirs : files)++;
  }
  closedir(d);
  EXPECT_EQ(dirs, kEntries / 10);
  EXPECT_EQ(files, kEntries - kEntries / 10);

  errno = 0;
  EXPECT_EQ(rmdir(B("many").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  // Remove half on B, see the rest on A.
  for (int i = 0; i < kEntries; i += 2) {
    std::string name = "entry-" + std::to_string(i);
    int rc = i % 10 == 0 ? rmdir(B("many/" + name).c_str()) : unlink(B("many/" + name).c_str());
    ASSERT_EQ(rc, 0) << name << ": " << strerror(errno);
    want.erase(name);
  }
  EXPECT_EQ(ListDir(A("many")), want);
  for (const std::string& name : want) {
    int rc = rmdir(A("many/" + name).c_str());
    if (rc != 0 && errno == ENOTDIR) rc = unlink(A("many/" + name).c_str());
    ASSERT_EQ(rc, 0) << name << ": " << strerror(errno);
  }
  EXPECT_EQ(rmdir(A("many").c_str()), 0);
  EXPECT_FALSE(fs::exists(B("many")));
  errno = 0;
  EXPECT_EQ(rmdir(A("many").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(PosixMountTest, ChmodChownUtimensAreSeenOnTheOtherNode) {
  ASSERT_EQ(WriteFile(A("f"), "data"), 0);
  struct stat st {};
  ASSERT_EQ(stat(B("f").c_str(), &st), 0);  // B has it cached now.

  ASSERT_EQ(chmod(A("f").c_str(), 0600), 0);
  ASSERT_EQ(chown(A("f").c_str(), 1234, 5678), 0);
  const struct timespec times[2] = {{1'000'000'000, 123'456'789}, {1'500'000'000, 987'654'321}};
  ASSERT_EQ(utimensat(AT_FDCWD, A("f").c_str(), times, 0), 0);
  ASSERT_EQ(stat(A("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  WaitOutAttrCache();
  ASSERT_EQ(stat(B("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_atim.tv_sec, times[0].tv_sec);
  EXPECT_EQ(st.st_atim.tv_nsec, times[0].tv_nsec);
  EXPECT_EQ(st.st_mtim.tv_sec, times[1].tv_sec);
  EXPECT_EQ(st.st_mtim.tv_nsec, times[1].tv_nsec);
  EXPECT_EQ(ReadFile(B("f")), "data");  // Content untouched.

  // futimens on a descriptor with unflushed writes: the given mtime wins
  // over the write's (cp -p, rsync -t).
  int fd = open(A("f").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(WriteAll(fd, "newer"), 0);
  ASSERT_EQ(futimens(fd, times), 0);
  ASSERT_EQ(close(fd), 0);
  WaitOutAttrCache();
  ASSERT_EQ(stat(B("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, times[1].tv_sec);
  EXPECT_EQ(st.st_mtim.tv_nsec, times[1].tv_nsec);
  EXPECT_EQ(ReadFile(B("f")), "newer");

  // UTIME_NOW sets the current time.
  const struct timespec now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  const time_t before = time(nullptr);
  ASSERT_EQ(utimensat(AT_FDCWD, A("f").c_str(), now, 0), 0);
  WaitOutAttrCache();
  ASSERT_EQ(stat(B("f").c_str(), &st), 0);
  EXPECT_GE(st.st_mtim.tv_sec, before);
  EXPECT_EQ(st.st_atim.tv_sec, times[0].tv_sec);  // UTIME_OMIT kept it.
}

TEST_F(PosixMountTest, ExtendedAttributes) {
  ASSERT_EQ(WriteFile(A("f"), "x"), 0);
  const std::string path_a = A("f"), path_b = B("f");
  ASSERT_EQ(setxattr(path_a.c_str(), "user.etag", "abc123", 6, 0), 0);
  ASSERT_EQ(setxattr(path_a.c_str(), "user.empty", "", 0, 0), 0);

  char buf[256];
  EXPECT_EQ(getxattr(path_b.c_str(), "user.etag", nullptr, 0), 6);  // Size query.
  ssize_t n = getxattr(path_b.c_str(), "user.etag", buf, sizeof(buf));
  ASSERT_EQ(n, 6);
  EXPECT_EQ(std::string(buf, n), "abc123");
  EXPECT_EQ(getxattr(path_b.c_str(), "user.empty", buf, sizeof(buf)), 0);
  errno = 0;
  EXPECT_EQ(getxattr(path_b.c_str(), "user.etag", buf, 3), -1);
  EXPECT_EQ(errno, ERANGE);

  n = listxattr(path_b.c_str(), buf, sizeof(buf));
  ASSERT_GT(n, 0);
  std::set<std::string> names;
  for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(buf + i)) + 1) {
    names.insert(buf + i);
  }
  EXPECT_EQ(names, (std::set<std::string>{"user.etag", "user.empty"}));

  errno = 0;
  EXPECT_EQ(setxattr(path_b.c_str(), "user.etag", "z", 1, XATTR_CREATE), -1);
  EXPECT_EQ(errno, EEXIST);
  errno = 0;
  EXPECT_EQ(setxattr(path_b.c_str(), "user.none", "z", 1, XATTR_REPLACE), -1);
  EXPECT_EQ(errno, ENODATA);
  ASSERT_EQ(setxattr(path_b.c_str(), "user.etag", "v2", 2, XATTR_REPLACE), 0);
  n = getxattr(path_a.c_str(), "user.etag", buf, sizeof(buf));
  EXPECT_EQ(std::string(buf, std::max<ssize_t>(n, 0)), "v2");

  ASSERT_EQ(removexattr(path_a.c_str(), "user.etag"), 0);
  errno = 0;
  EXPECT_EQ(getxattr(path_b.c_str(), "user.etag", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);
  errno = 0;
  EXPECT_EQ(removexattr(path_b.c_str(), "user.etag"), -1);
  EXPECT_EQ(errno, ENODATA);
  errno = 0;
  EXPECT_EQ(getxattr(path_b.c_str(), "user.never", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);
  // On a directory too.
  ASSERT_TRUE(fs::create_directories(A("d")));
  ASSERT_EQ(setxattr(A("d").c_str(), "user.k", "v", 1, 0), 0);
  EXPECT_EQ(getxattr(B("d").c_str(), "user.k", buf, sizeof(buf)), 1);
  // The file's content is untouched by all this.
  EXPECT_EQ(ReadFile(B("f")), "x");
}

TEST_F(PosixMountTest, StatfsShowsTheScopeQuotaAndUsage) {
  constexpr uint64_t kQuota = 64 * kGiB;
  {
    auto client = server_->Client();
    v1::SetQuotaRequest req;
    req.set_scope(scope_.ToString());
    req.set_quota_bytes(kQuota);
    v1::QuotaResponse resp;
    ASSERT_TRUE(client->Call(&v1::Admin::Stub::SetQuota, client->admin(), req, &resp).ok());
  }
  struct statvfs vfs {};
  ASSERT_EQ(statvfs(mnt_b_.c_str(), &vfs), 0);
  EXPECT_EQ(uint64_t{vfs.f_blocks} * vfs.f_frsize, kQuota);
  EXPECT_EQ(vfs.f_namemax, 255u);
  const uint64_t free_before = uint64_t{vfs.f_bfree} * vfs.f_frsize;

  ASSERT_EQ(WriteFile(A("usage"), RandomBytes(8 * kMiB, 11)), 0);
  ASSERT_EQ(statvfs(mnt_b_.c_str(), &vfs), 0);
  const uint64_t free_after = uint64_t{vfs.f_bfree} * vfs.f_frsize;
  EXPECT_GE(free_before - free_after, 8 * kMiB);
  EXPECT_LE(free_before - free_after, 9 * kMiB);
  EXPECT_EQ(vfs.f_bavail, vfs.f_bfree);
}

TEST_F(PosixMountTest, MmapPrivateReadsTheFileAndWritesStayPrivate) {
  const std::string data = RandomBytes(9 * kMiB + 77, 12);
  ASSERT_EQ(WriteFile(A("arrow"), data), 0);
  int fd = open(B("arrow").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* p = mmap(nullptr, data.size(), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  EXPECT_EQ(std::memcmp(p, data.data(), data.size()), 0);
  static_cast<char*>(p)[0] ^= 1;  // Copy-on-write: never reaches the file.
  ASSERT_EQ(munmap(p, data.size()), 0);
  EXPECT_EQ(close(fd), 0);
  EXPECT_TRUE(ReadFile(A("arrow")) == data);
  EXPECT_TRUE(ReadFile(B("arrow")) == data);
}

TEST_F(PosixMountTest, MmapSharedWritesAreCommittedByMsyncAndClose) {
  const size_t size = 5 * kMiB + 300;
  const std::string data = RandomBytes(size, 13);
  int fd = open(A("mapped").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED) << strerror(errno);
  std::memcpy(p, data.data(), size);
  ASSERT_EQ(msync(p, size, MS_SYNC), 0) << strerror(errno);
  // Coherent on the node: read(2) through the same file sees the mapping's bytes.
  EXPECT_TRUE(PreadString(fd, size, 0) == data);
  // msync (an fsync of the file) published it: B sees it before the close.
  EXPECT_TRUE(ReadFile(B("mapped")) == data);

  // More changes, committed by munmap + close without another msync.
  std::memcpy(static_cast<char*>(p) + 4096, "later", 5);
  ASSERT_EQ(munmap(p, size), 0);
  ASSERT_EQ(close(fd), 0);
  std::string want = data;
  want.replace(4096, 5, "later");
  EXPECT_TRUE(ReadFile(B("mapped")) == want);
  struct stat st {};
  ASSERT_EQ(stat(B("mapped").c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), size);
}

}  // namespace
}  // namespace traincache::testing
