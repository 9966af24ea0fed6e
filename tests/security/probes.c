/* Hostile probes run inside `sandpool sandbox-run`: each tries one escape and exits 0 only if it failed the expected way.
 *
 * Usage: probes NAME [ARGS...]. Output: one line per attempt, "BLOCKED what: how"
 * or "ESCAPED what: ...". Exit 0: every attempt was blocked as expected;
 * 1: something got through; 2: bad usage. A probe killed by a signal is judged
 * by the runner (run_probes.py), which knows which probes should be killed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/sysmacros.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int g_escaped = 0;

/* Records one attempt: `rc` is its return value (-1 = failed with errno `err`). */
static void expect_errno(const char* what, long rc, int err, int want) {
  if (rc == -1 && err == want) {
    printf("BLOCKED %s: %s\n", what, strerror(err));
  } else if (rc == -1) {
    printf("BLOCKED %s: %s (expected %s)\n", what, strerror(err), strerror(want));
    /* Blocked, but not for the reason we assert: count it as a failure so the policy is pinned down. */
    g_escaped = 1;
  } else {
    printf("ESCAPED %s: returned %ld\n", what, rc);
    g_escaped = 1;
  }
}
#define EXPECT(what, call, want)      \
  do {                                \
    errno = 0;                        \
    long rc_ = (long)(call);          \
    expect_errno(what, rc_, errno, want); \
  } while (0)

static int p_host_files(int argc, char** argv) {
  EXPECT("open /etc/shadow", open("/etc/shadow", O_RDONLY), ENOENT);
  EXPECT("open /root", open("/root", O_RDONLY | O_DIRECTORY), ENOENT);
  EXPECT("open /home", open("/home", O_RDONLY | O_DIRECTORY), ENOENT);
  EXPECT("open /sys/kernel", open("/sys/kernel", O_RDONLY | O_DIRECTORY), ENOENT);
  EXPECT("open /work", open("/work", O_RDONLY | O_DIRECTORY), ENOENT);
  for (int i = 0; i < argc; ++i) {  /* host paths given by the runner: the server's binary directory */
    char what[512];
    snprintf(what, sizeof what, "open %s", argv[i]);
    EXPECT(what, open(argv[i], O_RDONLY), ENOENT);
  }
  /* /proc/1 is our init, non-dumpable: its exe (our binary) and environment are unreadable. */
  EXPECT("open /proc/1/exe", open("/proc/1/exe", O_RDONLY), EACCES);
  EXPECT("open /proc/1/environ", open("/proc/1/environ", O_RDONLY), EACCES);
  EXPECT("readlink /proc/1/cwd", readlink("/proc/1/cwd", (char[64]){0}, 64), EACCES);
  return g_escaped;
}

static int p_host_procs(int argc, char** argv) {
  /* Only the sandbox's own processes are visible: init, us, perhaps the shell. */
  int n = 0;
  DIR* d = opendir("/proc");
  struct dirent* e;
  while (d && (e = readdir(d)))
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') ++n;
  if (d) closedir(d);
  if (n <= 3) printf("BLOCKED list host processes: %d visible\n", n);
  else { printf("ESCAPED list host processes: %d visible\n", n); g_escaped = 1; }
  char comm[64] = {0};
  int fd = open("/proc/1/cmdline", O_RDONLY);
  if (fd >= 0) { read(fd, comm, sizeof comm - 1); close(fd); }
  if (strncmp(comm, "sandpool", 8) == 0) printf("BLOCKED /proc/1 is the host's init: it is ours (%s)\n", comm);
  else { printf("ESCAPED /proc/1 cmdline is '%s'\n", comm); g_escaped = 1; }
  for (int i = 0; i < argc; ++i) {  /* host pids given by the runner (the runner itself, another sandbox's init) */
    pid_t pid = (pid_t)atoi(argv[i]);
    char what[64];
    snprintf(what, sizeof what, "kill host pid %d", pid);
    if (pid > 3) EXPECT(what, kill(pid, SIGKILL), ESRCH);
  }

  return g_escaped;
}

static int p_ptrace(int argc, char** argv) {
  (void)argc; (void)argv;
  EXPECT("ptrace attach init", ptrace(PTRACE_ATTACH, 1, 0, 0), EPERM);
  EXPECT("ptrace traceme", ptrace(PTRACE_TRACEME, 0, 0, 0), EPERM);
  char buf[8];
  struct iovec l = {buf, 8}, r = {(void*)0x400000, 8};
  EXPECT("process_vm_readv init", syscall(SYS_process_vm_readv, 1, &l, 1, &r, 1, 0), EPERM);
  return g_escaped;
}

static int p_mounts(int argc, char** argv) {
  (void)argc; (void)argv;
  EXPECT("mount tmpfs", mount("tmpfs", "/tmp", "tmpfs", 0, NULL), EPERM);
  EXPECT("umount /proc", umount2("/proc", MNT_DETACH), EPERM);
  EXPECT("unshare user ns", unshare(CLONE_NEWUSER), EPERM);
  EXPECT("unshare mount ns", unshare(CLONE_NEWNS), EPERM);
  EXPECT("setns", syscall(SYS_setns, 0, 0), EPERM);
  EXPECT("clone with CLONE_NEWUSER", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), EPERM);
  EXPECT("clone3", syscall(SYS_clone3, NULL, 0), ENOSYS);
  EXPECT("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"), EPERM);
  EXPECT("chroot", chroot("/tmp"), EPERM);
  EXPECT("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0), EPERM);
  EXPECT("fsopen", syscall(SYS_fsopen, "tmpfs", 0), EPERM);
  return g_escaped;
}

static int p_kernel(int argc, char** argv) {
  (void)argc; (void)argv;
  EXPECT("init_module", syscall(SYS_init_module, NULL, 0, ""), EPERM);
  EXPECT("finit_module", syscall(SYS_finit_module, 0, "", 0), EPERM);
  EXPECT("delete_module", syscall(SYS_delete_module, "x", 0), EPERM);
  EXPECT("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0), EPERM);
  EXPECT("kexec_file_load", syscall(SYS_kexec_file_load, 0, 0, 0, "", 0), EPERM);
  EXPECT("bpf", syscall(SYS_bpf, 0, NULL, 0), EPERM);
  EXPECT("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
  EXPECT("userfaultfd", syscall(SYS_userfaultfd, 0), EPERM);
  EXPECT("io_uring_setup", syscall(SYS_io_uring_setup, 8, NULL), EPERM);
  EXPECT("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0), EPERM);
  EXPECT("add_key", syscall(SYS_add_key, "user", "x", "y", 1, 0), EPERM);
  EXPECT("request_key", syscall(SYS_request_key, "user", "x", NULL, 0), EPERM);
  struct timespec ts = {0, 0};
  EXPECT("clock_settime", clock_settime(CLOCK_REALTIME, &ts), EPERM);
  struct timeval tv = {0, 0};
  EXPECT("settimeofday", settimeofday(&tv, NULL), EPERM);
  EXPECT("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x1234567, NULL), EPERM);
  EXPECT("swapon", syscall(SYS_swapon, "/mnt/data/swap", 0), EPERM);
  EXPECT("personality READ_IMPLIES_EXEC", personality(READ_IMPLIES_EXEC), EPERM);
  EXPECT("personality ADDR_NO_RANDOMIZE", personality(ADDR_NO_RANDOMIZE), EPERM);
  EXPECT("acct", syscall(SYS_acct, "/tmp/x"), EPERM);
  EXPECT("syslog", syscall(SYS_syslog, 3, NULL, 0), EPERM);
  EXPECT("setuid(0)", setuid(0), EPERM);
  EXPECT("setgroups", setgroups(0, NULL), EPERM);
  EXPECT("mknod", mknod("/tmp/mem", S_IFCHR | 0600, makedev(1, 1)), EPERM);
  return g_escaped;
}

/* Sends one rtnetlink change request (`type` with `flags`, an ifaddrmsg or ifinfomsg body of
 * `len` bytes) on a NETLINK_ROUTE socket and records the kernel's answer as an attempt: blocked
 * when it answers an error, escaped when it acknowledges. */
static void rtnl_change(const char* what, int type, int flags, const void* body, size_t len) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) {
    printf("ESCAPED %s: no NETLINK_ROUTE socket to try it on (%s)\n", what, strerror(errno));
    g_escaped = 1;
    return;
  }
  struct {
    struct nlmsghdr h;
    char body[64];
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = NLMSG_LENGTH(len);
  req.h.nlmsg_type = (unsigned short)type;
  req.h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
  req.h.nlmsg_seq = 1;
  memcpy(req.body, body, len);
  char buf[4096];
  long rc = send(s, &req, req.h.nlmsg_len, 0);
  if (rc >= 0) rc = recv(s, buf, sizeof buf, 0);
  close(s);
  const struct nlmsghdr* h = (const struct nlmsghdr*)buf;
  if (rc < (long)NLMSG_LENGTH(sizeof(struct nlmsgerr)) || h->nlmsg_type != NLMSG_ERROR) {
    printf("ESCAPED %s: no error answer (%ld)\n", what, rc);
    g_escaped = 1;
    return;
  }
  const struct nlmsgerr* e = (const struct nlmsgerr*)NLMSG_DATA(h);
  expect_errno(what, e->error < 0 ? -1 : 0, -e->error, EPERM);
}

static int p_devices(int argc, char** argv) {
  (void)argc; (void)argv;
  EXPECT("open /dev/mem", open("/dev/mem", O_RDONLY), ENOENT);
  EXPECT("open /dev/kmem", open("/dev/kmem", O_RDONLY), ENOENT);
  EXPECT("open /dev/kvm", open("/dev/kvm", O_RDWR), ENOENT);
  EXPECT("open /dev/sda", open("/dev/sda", O_RDONLY), ENOENT);
  EXPECT("raw socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), EPERM);
  EXPECT("packet socket", socket(AF_PACKET, SOCK_RAW, htons(0x0003)), EPERM);
  /* Of netlink, only NETLINK_ROUTE opens (getifaddrs and if_nameindex need it), and it only reads:
   * every change needs CAP_NET_ADMIN, which no sandbox has. */
  EXPECT("netlink audit socket", socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT), EPERM);
  EXPECT("netlink uevent socket", socket(AF_NETLINK, SOCK_RAW, NETLINK_KOBJECT_UEVENT), EPERM);
  EXPECT("netlink sock_diag socket", socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG), EPERM);
  EXPECT("netlink generic socket", socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC), EPERM);
  EXPECT("netlink netfilter socket", socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER), EPERM);
  EXPECT("netlink xfrm socket", socket(AF_NETLINK, SOCK_DGRAM, NETLINK_XFRM), EPERM);
  struct {
    struct ifaddrmsg ifa;
    struct rtattr rta;
    unsigned char addr[4];
  } add = {{AF_INET, 8, 0, RT_SCOPE_HOST, if_nametoindex("lo")}, {RTA_LENGTH(4), IFA_LOCAL}, {10, 9, 9, 9}};
  rtnl_change("netlink route: add an address to lo", RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &add, sizeof add);
  struct ifinfomsg down = {.ifi_family = AF_UNSPEC, .ifi_index = (int)if_nametoindex("lo"), .ifi_change = IFF_UP};
  rtnl_change("netlink route: set lo down", RTM_NEWLINK, 0, &down, sizeof down);
  struct ifinfomsg dummy = {.ifi_family = AF_UNSPEC};
  rtnl_change("netlink route: create a link", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &dummy, sizeof dummy);
  char c = 'x';
  EXPECT("TIOCSTI on stdin", ioctl(0, TIOCSTI, &c), EPERM);
  EXPECT("TIOCSTI (high bits set)", syscall(SYS_ioctl, 0, 0x100000000ul | TIOCSTI, &c), EPERM);
  EXPECT("TIOCLINUX", ioctl(0, TIOCLINUX, &c), EPERM);
  int avail = 0;
  errno = 0;
  if (ioctl(0, FIONREAD, &avail) == 0 || errno != EPERM) printf("BLOCKED (sanity) other ioctls still reach the kernel\n");
  else { printf("ESCAPED? FIONREAD refused by the filter too\n"); g_escaped = 1; }
  /* /proc/sys files belong to host root (EACCES) and the mount is read-only as a second layer. */
  EXPECT("write /proc/sys/kernel/hostname", open("/proc/sys/kernel/hostname", O_WRONLY), EACCES);
  EXPECT("write /proc/sys/vm/drop_caches", open("/proc/sys/vm/drop_caches", O_WRONLY), EACCES);
  struct statvfs sv;
  if (statvfs("/proc/sys", &sv) == 0 && (sv.f_flag & ST_RDONLY)) printf("BLOCKED /proc/sys is mounted read-only\n");
  else { printf("ESCAPED /proc/sys is writable as a mount\n"); g_escaped = 1; }
  EXPECT("write /proc/sysrq-trigger", open("/proc/sysrq-trigger", O_WRONLY), ENOENT);
  return g_escaped;
}

/* connect() to each "ADDR:PORT" argument must fail with the errno given as "=ERRNAME" suffix. */
static int p_connect(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    char addr[64];
    int port = 0;
    char want[32] = "ECONNREFUSED";
    if (sscanf(argv[i], "%63[^:]:%d=%31s", addr, &port, want) < 2) return 2;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int w = strcmp(want, "ENETUNREACH") == 0 ? ENETUNREACH : ECONNREFUSED;
    char what[128];
    snprintf(what, sizeof what, "connect %s:%d", addr, port);
    EXPECT(what, connect(s, (struct sockaddr*)&sa, sizeof sa), w);
    close(s);
  }
  return g_escaped;
}

static int p_readonly(int argc, char** argv) {
  (void)argc; (void)argv;
  EXPECT("create /usr/bin/evil", open("/usr/bin/evil", O_CREAT | O_WRONLY, 0755), EROFS);
  EXPECT("write /usr/bin/python3 (owned by host root)", open("/usr/bin/python3", O_WRONLY), EACCES);
  EXPECT("write /etc/passwd (owned by sandbox root)", open("/etc/passwd", O_WRONLY), EACCES);
  struct statvfs rv;
  if (statvfs("/usr", &rv) == 0 && (rv.f_flag & ST_RDONLY) && statvfs("/", &rv) == 0 && (rv.f_flag & ST_RDONLY) &&
      statvfs("/etc/alternatives", &rv) == 0 && (rv.f_flag & ST_RDONLY))
    printf("BLOCKED /, /usr, /etc/alternatives are mounted read-only\n");
  else { printf("ESCAPED a runtime mount is writable\n"); g_escaped = 1; }
  EXPECT("create /evil", open("/evil", O_CREAT | O_WRONLY, 0644), EROFS);
  EXPECT("mkdir /lib/x", mkdir("/lib/x", 0755), EROFS);
  EXPECT("chmod /usr/bin/env", chmod("/usr/bin/env", 04755), EROFS);
  /* A setuid file in /mnt/data gives nothing: nosuid, NO_NEW_PRIVS, no caps. */
  struct statvfs sv;
  if (statvfs("/mnt/data", &sv) == 0 && (sv.f_flag & ST_NOSUID) && statvfs("/usr", &sv) == 0 && (sv.f_flag & ST_NOSUID))
    printf("BLOCKED setuid bits: /mnt/data and /usr are nosuid\n");
  else { printf("ESCAPED setuid bits: a mount lacks nosuid\n"); g_escaped = 1; }
  int nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
  if (nnp == 1) printf("BLOCKED no_new_privs is set\n");
  else { printf("ESCAPED no_new_privs is %d\n", nnp); g_escaped = 1; }
  return g_escaped;
}

static int p_symlink(int argc, char** argv) {
  (void)argc; (void)argv;
  unlink("/mnt/data/evil");
  if (symlink("/../../../../etc/shadow", "/mnt/data/evil") != 0) { perror("symlink"); return 2; }
  EXPECT("read through symlink to ../../etc/shadow", open("/mnt/data/evil", O_RDONLY), ENOENT);
  unlink("/mnt/data/evil2");
  symlink("/proc/1/root/etc/shadow", "/mnt/data/evil2");
  EXPECT("read through symlink via /proc/1/root", open("/mnt/data/evil2", O_RDONLY), EACCES);
  return g_escaped;
}

static int p_fds(int argc, char** argv) {
  (void)argc; (void)argv;
  DIR* d = opendir("/proc/self/fd");
  struct dirent* e;
  int self = dirfd(d);
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd <= 2 || fd == self) continue;
    char target[256] = {0};
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    readlink(path, target, sizeof target - 1);
    printf("ESCAPED inherited fd %d -> %s\n", fd, target);
    g_escaped = 1;
  }
  closedir(d);
  if (!g_escaped) printf("BLOCKED inherited fds: only 0, 1, 2\n");
  return g_escaped;
}

/* Looks for a file another sandbox wrote to its /mnt/data (name given by the runner). */
static int p_other_session(int argc, char** argv) {
  if (argc < 1) return 2;
  char path[512];
  snprintf(path, sizeof path, "/mnt/data/%s", argv[0]);
  EXPECT("open other session's file in our /mnt/data", open(path, O_RDONLY), ENOENT);
  snprintf(path, sizeof path, "/tmp/%s", argv[0]);
  EXPECT("open other session's file in /tmp", open(path, O_RDONLY), ENOENT);
  for (int i = 1; i < argc; ++i) {  /* host pids of the other sandbox */
    snprintf(path, sizeof path, "/proc/%s/root/mnt/data/%s", argv[i], argv[0]);
    EXPECT("open via /proc/<other>/root", open(path, O_RDONLY), ENOENT);
  }
  return g_escaped;
}

/* i386 syscall through int 0x80: the filter kills the process (runner expects SIGSYS). */
static int p_int80(int argc, char** argv) {
  (void)argc; (void)argv;
  long ret;
  __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");  /* i386 getpid */
  printf("ESCAPED int 0x80 getpid returned %ld\n", ret);
  return 1;
}

/* x32 syscall: also killed (runner expects SIGSYS). */
static int p_x32(int argc, char** argv) {
  (void)argc; (void)argv;
  long ret = syscall(0x40000000L | SYS_getpid);
  printf("ESCAPED x32 getpid returned %ld (errno %d)\n", ret, errno);
  return 1;
}

/* Forks until refused; the pids cgroup must refuse with EAGAIN well before the host notices. */
static int p_forkbomb(int argc, char** argv) {
  int limit = argc > 0 ? atoi(argv[0]) : 64;
  int n = 0;
  for (;;) {
    pid_t p = fork();
    if (p == 0) { pause(); _exit(0); }
    if (p < 0) {
      int err = errno;
      if (err == EAGAIN && n < limit) printf("BLOCKED fork bomb: EAGAIN after %d forks\n", n);
      else { printf("ESCAPED fork bomb: %d forks, then %s\n", n, strerror(err)); g_escaped = 1; }
      break;
    }
    if (++n > 100000) { printf("ESCAPED fork bomb: 100000 forks\n"); g_escaped = 1; break; }
  }
  kill(0, SIGKILL);  /* init reaps them all; exit status 137 */
  return g_escaped;
}

/* Writes /mnt/data full: the write must fail with ENOSPC, not succeed past the quota. */
static int p_fill_data(int argc, char** argv) {
  long quota = argc > 0 ? atol(argv[0]) : 0;
  int fd = open("/mnt/data/fill", O_CREAT | O_WRONLY | O_TRUNC, 0644);
  static char buf[1 << 16];
  memset(buf, 'x', sizeof buf);
  long total = 0;
  for (;;) {
    ssize_t n = write(fd, buf, sizeof buf);
    if (n < 0) {
      int err = errno;
      if (err == ENOSPC && (quota == 0 || total <= quota)) printf("BLOCKED fill /mnt/data: ENOSPC after %ld bytes\n", total);
      else { printf("ESCAPED fill /mnt/data: %s after %ld bytes\n", strerror(err), total); g_escaped = 1; }
      break;
    }
    total += n;
  }
  close(fd);
  return g_escaped;
}

/* Spins on `threads` processes forever (the runner kills it). */
static int p_burn(int argc, char** argv) {
  int n = argc > 0 ? atoi(argv[0]) : 2;
  for (int i = 1; i < n; ++i)
    if (fork() == 0) break;
  printf("burning\n");
  fflush(stdout);
  for (volatile unsigned long x = 0;; ++x) {
  }
  return 0;
}

/* Times a fixed chunk of work `reps` times; prints the median in µs. */
static int cmp_long(const void* a, const void* b) { long x = *(const long*)a, y = *(const long*)b; return (x > y) - (x < y); }
static int p_latency(int argc, char** argv) {
  int reps = argc > 0 ? atoi(argv[0]) : 200;
  long* t = calloc((size_t)reps, sizeof *t);
  for (int i = 0; i < reps; ++i) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (volatile int k = 0; k < 200000; ++k) {
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    t[i] = (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000;
    usleep(2000);  /* an "execute" every few ms, like an interactive session */
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_long);
  printf("median_us %ld\n", t[reps / 2]);
  return 0;
}

struct Probe { const char* name; int (*fn)(int, char**); };
static const struct Probe kProbes[] = {
    {"host-files", p_host_files}, {"host-procs", p_host_procs}, {"ptrace", p_ptrace}, {"mounts", p_mounts},
    {"kernel", p_kernel}, {"devices", p_devices}, {"connect", p_connect}, {"readonly", p_readonly},
    {"symlink", p_symlink}, {"fds", p_fds}, {"other-session", p_other_session}, {"int80", p_int80},
    {"x32", p_x32}, {"forkbomb", p_forkbomb}, {"fill-data", p_fill_data}, {"burn", p_burn},
    {"latency", p_latency},
};

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) return 2;
  for (size_t i = 0; i < sizeof kProbes / sizeof kProbes[0]; ++i)
    if (strcmp(argv[1], kProbes[i].name) == 0) return kProbes[i].fn(argc - 2, argv + 2);
  fprintf(stderr, "unknown probe %s\n", argv[1]);
  return 2;
}
