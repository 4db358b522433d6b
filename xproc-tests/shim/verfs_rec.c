/*
 * verfs_rec.so: an LD_PRELOAD recorder of every change a process makes under one directory.
 *
 * The crash-image test (tests/xproc/crash_images.rs, src/crash.rs) runs the real `verfs` binary
 * with this library preloaded and VERFS_REC_ROOT=<canonical store path>, VERFS_REC_LOG=<file>.
 * Every call that changes a file or a directory entry under the root, or makes one durable, is
 * performed and then appended to the log as one record, both under a lock (a process mutex plus
 * a flock of the log file, so records of all threads and processes are in the order the kernel
 * applied the calls). Nothing in the engine changes: the shim sees what the binary does.
 *
 * Record (native little-endian x86_64), one write(2) to the O_APPEND log:
 *   u32 total length | u8 op | u8 flags | u16 0 | i32 pid | u64 ino | u64 off | u32 n1 | u32 n2
 *   | n1 bytes | n2 bytes
 * Paths are relative to the root ("" is the root). `ino` is st_ino of the file the call acts on.
 * The Rust side (src/crash.rs, `parse_log`) is the only reader; keep both in step.
 *
 * A call the model cannot replay (copy_file_range, a writable shared mmap, fallocate, a raw
 * syscall(2) that writes, O_TMPFILE, ...) on a path under the root is logged as OP_UNSUPPORTED,
 * and the test fails with its text: the recorder never silently misses a change.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    OP_CREATE = 1,  /* path (n1), ino: a regular file was created */
    OP_TRUNC = 2,   /* ino, off = new length */
    OP_WRITE = 3,   /* ino, off, data (n1) */
    OP_FSYNC = 4,   /* ino, flags: 1 = fdatasync, 2 = directory */
    OP_RENAME = 5,  /* from (n1), to (n2), ino of from, flags = renameat2 flags */
    OP_UNLINK = 6,  /* path, ino */
    OP_MKDIR = 7,   /* path, ino */
    OP_RMDIR = 8,   /* path, ino */
    OP_LINK = 9,    /* existing (n1), new (n2), ino */
    OP_SYMLINK = 10, /* target (n1), new path (n2), ino */
    OP_MARK = 11,   /* text: written by the test driver, not by this library */
    OP_UNSUPPORTED = 12, /* text */
    OP_SYNCALL = 13, /* sync(2) / syncfs(2) */
};

static int active;
static int logfd = -1;
static char root[PATH_MAX];
static size_t root_len;
static char log_path[PATH_MAX];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#define REAL(name) real_##name
#define DECL(ret, name, ...) static ret (*real_##name)(__VA_ARGS__)
DECL(int, open, const char *, int, ...);
DECL(int, open64, const char *, int, ...);
DECL(int, openat, int, const char *, int, ...);
DECL(int, openat64, int, const char *, int, ...);
DECL(int, creat, const char *, mode_t);
DECL(int, creat64, const char *, mode_t);
DECL(ssize_t, write, int, const void *, size_t);
DECL(ssize_t, pwrite, int, const void *, size_t, off_t);
DECL(ssize_t, pwrite64, int, const void *, size_t, off_t);
DECL(ssize_t, writev, int, const struct iovec *, int);
DECL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
DECL(ssize_t, pwritev64, int, const struct iovec *, int, off_t);
DECL(ssize_t, pwritev2, int, const struct iovec *, int, off_t, int);
DECL(int, ftruncate, int, off_t);
DECL(int, ftruncate64, int, off_t);
DECL(int, truncate, const char *, off_t);
DECL(int, truncate64, const char *, off_t);
DECL(int, fsync, int);
DECL(int, fdatasync, int);
DECL(void, sync, void);
DECL(int, syncfs, int);
DECL(int, rename, const char *, const char *);
DECL(int, renameat, int, const char *, int, const char *);
DECL(int, renameat2, int, const char *, int, const char *, unsigned int);
DECL(int, unlink, const char *);
DECL(int, unlinkat, int, const char *, int);
DECL(int, mkdir, const char *, mode_t);
DECL(int, mkdirat, int, const char *, mode_t);
DECL(int, rmdir, const char *);
DECL(int, link, const char *, const char *);
DECL(int, linkat, int, const char *, int, const char *, int);
DECL(int, symlink, const char *, const char *);
DECL(int, symlinkat, const char *, int, const char *);
DECL(ssize_t, copy_file_range, int, off_t *, int, off_t *, size_t, unsigned int);
DECL(ssize_t, sendfile, int, int, off_t *, size_t);
DECL(ssize_t, sendfile64, int, int, off_t *, size_t);
DECL(ssize_t, splice, int, off_t *, int, off_t *, size_t, unsigned int);
DECL(int, fallocate, int, int, off_t, off_t);
DECL(int, fallocate64, int, int, off_t, off_t);
DECL(int, posix_fallocate, int, off_t, off_t);
DECL(int, posix_fallocate64, int, off_t, off_t);
DECL(void *, mmap, void *, size_t, int, int, int, off_t);
DECL(void *, mmap64, void *, size_t, int, int, int, off_t);
DECL(long, syscall, long, ...);

#define RESOLVE(name)                                                                              \
    do {                                                                                           \
        if (!real_##name) *(void **)(&real_##name) = dlsym(RTLD_NEXT, #name);                      \
    } while (0)

static void resolve_all(void) {
    RESOLVE(open); RESOLVE(open64); RESOLVE(openat); RESOLVE(openat64); RESOLVE(creat);
    RESOLVE(creat64); RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev);
    RESOLVE(pwritev); RESOLVE(pwritev64); RESOLVE(pwritev2); RESOLVE(ftruncate);
    RESOLVE(ftruncate64); RESOLVE(truncate); RESOLVE(truncate64); RESOLVE(fsync);
    RESOLVE(fdatasync); RESOLVE(sync); RESOLVE(syncfs); RESOLVE(rename); RESOLVE(renameat);
    RESOLVE(renameat2); RESOLVE(unlink); RESOLVE(unlinkat); RESOLVE(mkdir); RESOLVE(mkdirat);
    RESOLVE(rmdir); RESOLVE(link); RESOLVE(linkat); RESOLVE(symlink); RESOLVE(symlinkat);
    RESOLVE(copy_file_range); RESOLVE(sendfile); RESOLVE(sendfile64); RESOLVE(splice);
    RESOLVE(fallocate); RESOLVE(fallocate64); RESOLVE(posix_fallocate);
    RESOLVE(posix_fallocate64); RESOLVE(mmap); RESOLVE(mmap64); RESOLVE(syscall);
}

/* A failure of the recorder itself must not pass as "nothing happened": abort loudly. */
static void die(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "verfs_rec: %s: %s\n", what, strerror(errno));
    if (n > 0) (void)!real_write(2, msg, (size_t)n);
    abort();
}

static void open_log(void) {
    logfd = (int)real_syscall(SYS_openat, AT_FDCWD, log_path,
                              O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (logfd < 0) die("open VERFS_REC_LOG");
}

/* A child of fork gets its own open file description, so the flock excludes it too. */
static void after_fork_child(void) {
    if (!active) return;
    close(logfd);
    open_log();
    pthread_mutex_init(&mu, NULL);
}

__attribute__((constructor)) static void init(void) {
    resolve_all();
    const char *r = getenv("VERFS_REC_ROOT");
    const char *l = getenv("VERFS_REC_LOG");
    if (!r || !l || !*r || !*l) return;
    if (strlen(r) >= sizeof root || strlen(l) >= sizeof log_path) return;
    strcpy(root, r);
    root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
    strcpy(log_path, l);
    open_log();
    pthread_atfork(NULL, NULL, after_fork_child);
    active = 1;
}

static void lock(void) {
    pthread_mutex_lock(&mu);
    if (flock(logfd, LOCK_EX) != 0) die("flock log");
}

static void unlock(void) {
    if (flock(logfd, LOCK_UN) != 0) die("unflock log");
    pthread_mutex_unlock(&mu);
}

/* Lexically normalize an absolute path ("." and ".." and repeated slashes). */
static void normalize(char *p) {
    char out[PATH_MAX];
    size_t o = 0;
    const char *s = p;
    while (*s) {
        while (*s == '/') s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != '/') e++;
        size_t n = (size_t)(e - s);
        if (n == 1 && s[0] == '.') {
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--;
        } else if (o + 1 + n < sizeof out) {
            out[o++] = '/';
            memcpy(out + o, s, n);
            o += n;
        }
        s = e;
    }
    if (o == 0) out[o++] = '/';
    out[o] = 0;
    strcpy(p, out);
}

static int fd_path(int fd, char *out) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, PATH_MAX - 1);
    if (n <= 0) return -1;
    out[n] = 0;
    if (out[0] != '/') return -1; /* pipe:[..], socket:[..], anon_inode:... */
    const char *del = " (deleted)";
    size_t dl = strlen(del);
    if ((size_t)n > dl && strcmp(out + n - dl, del) == 0) out[n - dl] = 0;
    return 0;
}

/* Absolute, normalized path of (dirfd, path). */
static int abs_path(int dirfd, const char *path, char *out) {
    char base[PATH_MAX];
    if (!path) return -1;
    if (path[0] == '/') {
        base[0] = 0;
    } else if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return -1;
    } else if (fd_path(dirfd, base) != 0) {
        return -1;
    }
    size_t bl = strlen(base), pl = strlen(path);
    if (bl + 1 + pl + 1 > PATH_MAX) return -1;
    memcpy(out, base, bl);
    out[bl] = '/';
    memcpy(out + bl + 1, path, pl + 1);
    normalize(out);
    return 0;
}

/* The path relative to the root, or NULL when it is not under the root. */
static const char *under_root(const char *abs) {
    if (strncmp(abs, root, root_len) != 0) return NULL;
    if (abs[root_len] == 0) return abs + root_len;
    if (abs[root_len] == '/') return abs + root_len + 1;
    return NULL;
}

static const char *fd_rel(int fd, char *buf) {
    if (!active || fd < 0 || fd == logfd) return NULL;
    if (fd_path(fd, buf) != 0) return NULL;
    return under_root(buf);
}

struct hdr {
    uint32_t len;
    uint8_t op;
    uint8_t flags;
    uint16_t zero;
    int32_t pid;
    uint64_t ino;
    uint64_t off;
    uint32_t n1;
    uint32_t n2;
} __attribute__((packed));

static void emit(uint8_t op, uint8_t flags, uint64_t ino, uint64_t off, const void *a, size_t n1,
                 const void *b, size_t n2) {
    size_t total = sizeof(struct hdr) + n1 + n2;
    char *buf = malloc(total);
    if (!buf) die("malloc record");
    struct hdr h = {(uint32_t)total, op, flags, 0, (int32_t)getpid(), ino, off, (uint32_t)n1,
                    (uint32_t)n2};
    memcpy(buf, &h, sizeof h);
    if (n1) memcpy(buf + sizeof h, a, n1);
    if (n2) memcpy(buf + sizeof h + n1, b, n2);
    ssize_t w = real_write(logfd, buf, total);
    if (w != (ssize_t)total) die("write VERFS_REC_LOG");
    free(buf);
}

static void emit_path(uint8_t op, uint64_t ino, const char *p) {
    emit(op, 0, ino, 0, p, strlen(p), NULL, 0);
}

static void unsupported(const char *fmt, ...) {
    char msg[PATH_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(OP_UNSUPPORTED, 0, 0, 0, msg, strlen(msg), NULL, 0);
}

static uint64_t fd_ino(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    return (uint64_t)st.st_ino;
}

static uint64_t path_ino(const char *abs, int follow) {
    struct stat st;
    int r = follow ? stat(abs, &st) : lstat(abs, &st);
    return r == 0 ? (uint64_t)st.st_ino : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* open / creat                                                                                */

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int at, int is64) {
    char abs[PATH_MAX];
    const char *rel = NULL;
    if (active && abs_path(dirfd, path, abs) == 0) rel = under_root(abs);
#define CALL_REAL()                                                                                \
    (at ? (is64 ? real_openat64(dirfd, path, flags, mode) : real_openat(dirfd, path, flags, mode)) \
        : (is64 ? real_open64(path, flags, mode) : real_open(path, flags, mode)))
    if (!rel) return CALL_REAL();
    lock();
    struct stat pre;
    int existed = lstat(abs, &pre) == 0;
    int fd = CALL_REAL();
    int e = errno;
    if (fd >= 0) {
        if ((flags & O_TMPFILE) == O_TMPFILE) {
            unsupported("O_TMPFILE under %s", abs);
        } else if (!existed && (flags & O_CREAT)) {
            emit_path(OP_CREATE, fd_ino(fd), rel);
        } else if (existed && (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY &&
                   S_ISREG(pre.st_mode) && pre.st_size > 0) {
            emit(OP_TRUNC, 0, fd_ino(fd), 0, NULL, 0, NULL, 0);
        }
    }
    unlock();
    errno = e;
    return fd;
#undef CALL_REAL
}

static mode_t va_mode(int flags, va_list ap) {
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, m, 0, 0);
}
int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, m, 0, 1);
}
int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, m, 1, 0);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, m, 1, 1);
}
int creat(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0, 0);
}
int creat64(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* writes                                                                                      */

/* Record `r` bytes gathered from iov written at `off` (-1: the file position before the call). */
static void emit_iov(int fd, const struct iovec *iov, int cnt, ssize_t r, off_t off) {
    if (r <= 0) return;
    if (off < 0) off = lseek(fd, 0, SEEK_CUR) - r;
    char *buf = malloc((size_t)r);
    if (!buf) die("malloc data");
    size_t got = 0;
    for (int i = 0; i < cnt && got < (size_t)r; i++) {
        size_t n = iov[i].iov_len;
        if (n > (size_t)r - got) n = (size_t)r - got;
        memcpy(buf + got, iov[i].iov_base, n);
        got += n;
    }
    emit(OP_WRITE, 0, fd_ino(fd), (uint64_t)off, buf, (size_t)r, NULL, 0);
    free(buf);
}

ssize_t write(int fd, const void *b, size_t n) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return real_write(fd, b, n);
    lock();
    ssize_t r = real_write(fd, b, n);
    int e = errno;
    struct iovec v = {(void *)b, n};
    emit_iov(fd, &v, 1, r, -1);
    unlock();
    errno = e;
    return r;
}

static ssize_t do_pwrite(int fd, const void *b, size_t n, off_t off, int is64) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return is64 ? real_pwrite64(fd, b, n, off) : real_pwrite(fd, b, n, off);
    lock();
    ssize_t r = is64 ? real_pwrite64(fd, b, n, off) : real_pwrite(fd, b, n, off);
    int e = errno;
    if (fcntl(fd, F_GETFL) & O_APPEND) {
        /* Linux appends pwrite on an O_APPEND fd: the offset argument is ignored. */
        struct stat st;
        if (fstat(fd, &st) == 0) off = st.st_size - r;
    }
    struct iovec v = {(void *)b, n};
    emit_iov(fd, &v, 1, r, off);
    unlock();
    errno = e;
    return r;
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t off) { return do_pwrite(fd, b, n, off, 0); }
ssize_t pwrite64(int fd, const void *b, size_t n, off_t off) { return do_pwrite(fd, b, n, off, 1); }

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return real_writev(fd, iov, cnt);
    lock();
    ssize_t r = real_writev(fd, iov, cnt);
    int e = errno;
    emit_iov(fd, iov, cnt, r, -1);
    unlock();
    errno = e;
    return r;
}

static ssize_t do_pwritev(int fd, const struct iovec *iov, int cnt, off_t off, int flags,
                          int which) {
    char p[PATH_MAX];
#define CALL_REAL()                                                                                \
    (which == 0   ? real_pwritev(fd, iov, cnt, off)                                               \
     : which == 1 ? real_pwritev64(fd, iov, cnt, off)                                             \
                  : real_pwritev2(fd, iov, cnt, off, flags))
    if (!fd_rel(fd, p)) return CALL_REAL();
    lock();
    ssize_t r = CALL_REAL();
    int e = errno;
    if (which == 2 && (flags != 0 || off == -1))
        unsupported("pwritev2 with flags %d offset %lld on %s", flags, (long long)off, p);
    else
        emit_iov(fd, iov, cnt, r, off);
    unlock();
    errno = e;
    return r;
#undef CALL_REAL
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    return do_pwritev(fd, iov, cnt, off, 0, 0);
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    return do_pwritev(fd, iov, cnt, off, 0, 1);
}
ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    return do_pwritev(fd, iov, cnt, off, flags, 2);
}

static int do_ftruncate(int fd, off_t len, int is64) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return is64 ? real_ftruncate64(fd, len) : real_ftruncate(fd, len);
    lock();
    int r = is64 ? real_ftruncate64(fd, len) : real_ftruncate(fd, len);
    int e = errno;
    if (r == 0) emit(OP_TRUNC, 0, fd_ino(fd), (uint64_t)len, NULL, 0, NULL, 0);
    unlock();
    errno = e;
    return r;
}
int ftruncate(int fd, off_t len) { return do_ftruncate(fd, len, 0); }
int ftruncate64(int fd, off_t len) { return do_ftruncate(fd, len, 1); }

static int do_truncate(const char *path, off_t len, int is64) {
    char abs[PATH_MAX];
    const char *rel = NULL;
    if (active && abs_path(AT_FDCWD, path, abs) == 0) rel = under_root(abs);
    if (!rel) return is64 ? real_truncate64(path, len) : real_truncate(path, len);
    lock();
    int r = is64 ? real_truncate64(path, len) : real_truncate(path, len);
    int e = errno;
    if (r == 0) emit(OP_TRUNC, 0, path_ino(abs, 1), (uint64_t)len, NULL, 0, NULL, 0);
    unlock();
    errno = e;
    return r;
}
int truncate(const char *path, off_t len) { return do_truncate(path, len, 0); }
int truncate64(const char *path, off_t len) { return do_truncate(path, len, 1); }

/* ------------------------------------------------------------------------------------------ */
/* durability                                                                                  */

static int do_sync(int fd, int data_only) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return data_only ? real_fdatasync(fd) : real_fsync(fd);
    lock();
    int r = data_only ? real_fdatasync(fd) : real_fsync(fd);
    int e = errno;
    if (r == 0) {
        struct stat st;
        if (fstat(fd, &st) != 0) die("fstat");
        uint8_t fl = (uint8_t)((data_only ? 1 : 0) | (S_ISDIR(st.st_mode) ? 2 : 0));
        emit(OP_FSYNC, fl, (uint64_t)st.st_ino, 0, NULL, 0, NULL, 0);
    }
    unlock();
    errno = e;
    return r;
}
int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

void sync(void) {
    if (!active) {
        real_sync();
        return;
    }
    lock();
    real_sync();
    emit(OP_SYNCALL, 0, 0, 0, NULL, 0, NULL, 0);
    unlock();
}

int syncfs(int fd) {
    if (!active) return real_syncfs(fd);
    lock();
    int r = real_syncfs(fd);
    int e = errno;
    if (r == 0) emit(OP_SYNCALL, 0, 0, 0, NULL, 0, NULL, 0);
    unlock();
    errno = e;
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* directory entries                                                                           */

static int do_rename(int od, const char *o, int nd, const char *n, unsigned flags, int which) {
    char ao[PATH_MAX], an[PATH_MAX];
    const char *ro = NULL, *rn = NULL;
#define CALL_REAL()                                                                                \
    (which == 0 ? real_rename(o, n)                                                                \
     : which == 1 ? real_renameat(od, o, nd, n)                                                    \
                  : real_renameat2(od, o, nd, n, flags))
    if (active && abs_path(od, o, ao) == 0 && abs_path(nd, n, an) == 0) {
        ro = under_root(ao);
        rn = under_root(an);
    }
    if (!ro && !rn) return CALL_REAL();
    lock();
    uint64_t ino = path_ino(ao, 0);
    int r = CALL_REAL();
    int e = errno;
    if (r == 0) {
        if (!ro || !rn)
            unsupported("rename across the root: %s -> %s", ao, an);
        else
            emit(OP_RENAME, (uint8_t)flags, ino, 0, ro, strlen(ro), rn, strlen(rn));
    }
    unlock();
    errno = e;
    return r;
#undef CALL_REAL
}
int rename(const char *o, const char *n) { return do_rename(AT_FDCWD, o, AT_FDCWD, n, 0, 0); }
int renameat(int od, const char *o, int nd, const char *n) { return do_rename(od, o, nd, n, 0, 1); }
int renameat2(int od, const char *o, int nd, const char *n, unsigned int flags) {
    return do_rename(od, o, nd, n, flags, 2);
}

static int do_unlink(int dirfd, const char *path, int flags, int which) {
    char abs[PATH_MAX];
    const char *rel = NULL;
#define CALL_REAL()                                                                                \
    (which == 0 ? real_unlink(path) : which == 1 ? real_rmdir(path) : real_unlinkat(dirfd, path, flags))
    if (active && abs_path(dirfd, path, abs) == 0) rel = under_root(abs);
    if (!rel) return CALL_REAL();
    lock();
    uint64_t ino = path_ino(abs, 0);
    int r = CALL_REAL();
    int e = errno;
    int is_dir = which == 1 || (which == 2 && (flags & AT_REMOVEDIR));
    if (r == 0) emit_path(is_dir ? OP_RMDIR : OP_UNLINK, ino, rel);
    unlock();
    errno = e;
    return r;
#undef CALL_REAL
}
int unlink(const char *path) { return do_unlink(AT_FDCWD, path, 0, 0); }
int rmdir(const char *path) { return do_unlink(AT_FDCWD, path, 0, 1); }
int unlinkat(int dirfd, const char *path, int flags) { return do_unlink(dirfd, path, flags, 2); }

static int do_mkdir(int dirfd, const char *path, mode_t mode, int at) {
    char abs[PATH_MAX];
    const char *rel = NULL;
    if (active && abs_path(dirfd, path, abs) == 0) rel = under_root(abs);
    if (!rel) return at ? real_mkdirat(dirfd, path, mode) : real_mkdir(path, mode);
    lock();
    int r = at ? real_mkdirat(dirfd, path, mode) : real_mkdir(path, mode);
    int e = errno;
    if (r == 0) emit_path(OP_MKDIR, path_ino(abs, 0), rel);
    unlock();
    errno = e;
    return r;
}
int mkdir(const char *path, mode_t mode) { return do_mkdir(AT_FDCWD, path, mode, 0); }
int mkdirat(int dirfd, const char *path, mode_t mode) { return do_mkdir(dirfd, path, mode, 1); }

static int do_link(int od, const char *o, int nd, const char *n, int flags, int at) {
    char ao[PATH_MAX], an[PATH_MAX];
    const char *ro = NULL, *rn = NULL;
    if (active && abs_path(od, o, ao) == 0 && abs_path(nd, n, an) == 0) {
        ro = under_root(ao);
        rn = under_root(an);
    }
    if (!rn) return at ? real_linkat(od, o, nd, n, flags) : real_link(o, n);
    lock();
    int r = at ? real_linkat(od, o, nd, n, flags) : real_link(o, n);
    int e = errno;
    if (r == 0) {
        uint64_t ino = path_ino(an, 0);
        if (!ro)
            unsupported("hard link from outside the root: %s -> %s", ao, an);
        else
            emit(OP_LINK, 0, ino, 0, ro, strlen(ro), rn, strlen(rn));
    }
    unlock();
    errno = e;
    return r;
}
int link(const char *o, const char *n) { return do_link(AT_FDCWD, o, AT_FDCWD, n, 0, 0); }
int linkat(int od, const char *o, int nd, const char *n, int flags) {
    return do_link(od, o, nd, n, flags, 1);
}

static int do_symlink(const char *target, int dirfd, const char *path, int at) {
    char abs[PATH_MAX];
    const char *rel = NULL;
    if (active && abs_path(dirfd, path, abs) == 0) rel = under_root(abs);
    if (!rel) return at ? real_symlinkat(target, dirfd, path) : real_symlink(target, path);
    lock();
    int r = at ? real_symlinkat(target, dirfd, path) : real_symlink(target, path);
    int e = errno;
    if (r == 0) emit(OP_SYMLINK, 0, path_ino(abs, 0), 0, target, strlen(target), rel, strlen(rel));
    unlock();
    errno = e;
    return r;
}
int symlink(const char *t, const char *p) { return do_symlink(t, AT_FDCWD, p, 0); }
int symlinkat(const char *t, int d, const char *p) { return do_symlink(t, d, p, 1); }

/* ------------------------------------------------------------------------------------------ */
/* what the model cannot replay: reported, then performed                                      */

static void unsupported_fd(const char *what, int fd) {
    char p[PATH_MAX];
    if (!fd_rel(fd, p)) return;
    lock();
    unsupported("%s on %s", what, p);
    unlock();
}

ssize_t copy_file_range(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned int fl) {
    unsupported_fd("copy_file_range", fo);
    return real_copy_file_range(fi, oi, fo, oo, n, fl);
}
ssize_t sendfile(int out, int in, off_t *off, size_t n) {
    unsupported_fd("sendfile", out);
    return real_sendfile(out, in, off, n);
}
ssize_t sendfile64(int out, int in, off_t *off, size_t n) {
    unsupported_fd("sendfile64", out);
    return real_sendfile64(out, in, off, n);
}
ssize_t splice(int fi, off_t *oi, int fo, off_t *oo, size_t n, unsigned int fl) {
    unsupported_fd("splice", fo);
    return real_splice(fi, oi, fo, oo, n, fl);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
    unsupported_fd("fallocate", fd);
    return real_fallocate(fd, mode, off, len);
}
int fallocate64(int fd, int mode, off_t off, off_t len) {
    unsupported_fd("fallocate64", fd);
    return real_fallocate64(fd, mode, off, len);
}
int posix_fallocate(int fd, off_t off, off_t len) {
    unsupported_fd("posix_fallocate", fd);
    return real_posix_fallocate(fd, off, len);
}
int posix_fallocate64(int fd, off_t off, off_t len) {
    unsupported_fd("posix_fallocate64", fd);
    return real_posix_fallocate64(fd, off, len);
}

static void check_mmap(int prot, int flags, int fd) {
    if (fd >= 0 && (prot & PROT_WRITE) && (flags & MAP_SHARED)) unsupported_fd("shared writable mmap", fd);
}
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
    if (!real_mmap) resolve_all();
    check_mmap(prot, flags, fd);
    return real_mmap(a, n, prot, flags, fd, off);
}
void *mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off) {
    if (!real_mmap64) resolve_all();
    check_mmap(prot, flags, fd);
    return real_mmap64(a, n, prot, flags, fd, off);
}

/* Raw syscall(2) bypasses every wrapper above: any that can change a file is reported. */
long syscall(long nr, ...) {
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (active) {
        switch (nr) {
        case SYS_write: case SYS_pwrite64: case SYS_writev: case SYS_pwritev: case SYS_pwritev2:
        case SYS_fsync: case SYS_fdatasync: case SYS_ftruncate: case SYS_truncate: case SYS_open:
        case SYS_openat: case SYS_openat2: case SYS_creat: case SYS_rename: case SYS_renameat:
        case SYS_renameat2: case SYS_unlink: case SYS_unlinkat: case SYS_mkdir: case SYS_mkdirat:
        case SYS_rmdir: case SYS_link: case SYS_linkat: case SYS_symlink: case SYS_symlinkat:
        case SYS_copy_file_range: case SYS_sendfile: case SYS_splice: case SYS_fallocate:
        case SYS_sync: case SYS_syncfs: case SYS_io_uring_setup: case SYS_mmap:
            lock();
            unsupported("raw syscall(%ld)", nr);
            unlock();
            break;
        default:
            break;
        }
    }
    return real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
