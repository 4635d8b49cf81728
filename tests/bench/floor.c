// The floor of ftx's small-file path: the per-file system calls ftx makes
// and nothing else. Not part of `cargo test`; run through floor.sh.
//
//   floor send DIR PORT   walks DIR/*/* (one level of directories, then
//                         files) and sends each file with a 56-byte header:
//                         statx, open, read, fstat, flistxattr, close each
//   floor recv OUT PORT [HOW]
//                         takes them into OUT, syncfs at the end; HOW:
//     unnamed (default)   as ftx does: O_TMPFILE, write, fchmod, futimens,
//                         linkat, close each (linkat with AT_EMPTY_PATH:
//                         run as root)
//     staged              each directory made under a working name
//                         (.DIR.staged), its files created at their final
//                         names in it (open O_CREAT|O_EXCL, write, fchmod,
//                         futimens, close), the directory renamed into
//                         place (renameat2 RENAME_NOREPLACE) once its last
//                         file is in: no file under its final path before
//                         it is complete either, one rename a directory
//     direct              as tar x does: each file created at its final
//                         name in place (the promise not kept)
//
// No hashing, no answers, no names checked, one thread a side: what a
// transfer keeping ftx's promise (no file under its final name before it
// is complete) costs at the least, to set against `tar | nc`.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

struct hdr {
    uint32_t len, mode;
    int64_t mtime;
    uint32_t nsec;
    char dir[16], name[16];
} __attribute__((packed));

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct sockaddr_in loopback(const char *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    return a;
}

static char out[1 << 18];
static size_t olen;

static void flush_out(int s) {
    for (size_t o = 0; o < olen;) {
        ssize_t n = send(s, out + o, olen - o, 0);
        if (n <= 0)
            die("send");
        o += n;
    }
    olen = 0;
}

static int send_tree(const char *src, const char *port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    if (connect(s, (void *)&a, sizeof a))
        die("connect");
    int root = open(src, O_DIRECTORY | O_RDONLY);
    DIR *top = fdopendir(dup(root));
    if (root < 0 || !top)
        die(src);
    for (struct dirent *d; (d = readdir(top));) {
        if (d->d_name[0] == '.' || strlen(d->d_name) >= 16)
            continue;
        int dfd = openat(root, d->d_name, O_DIRECTORY | O_RDONLY);
        DIR *files = fdopendir(dfd);
        if (!files)
            die(d->d_name);
        for (struct dirent *f; (f = readdir(files));) {
            if (f->d_name[0] == '.' || strlen(f->d_name) >= 16)
                continue;
            struct statx sx;
            if (statx(dfd, f->d_name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx))
                die("statx");
            if (olen + sizeof(struct hdr) + sx.stx_size + 1 > sizeof out)
                flush_out(s);
            struct hdr *h = (void *)(out + olen);
            memset(h->dir, 0, sizeof h->dir + sizeof h->name);
            memcpy(h->dir, d->d_name, strlen(d->d_name));
            h->mode = sx.stx_mode;
            h->mtime = sx.stx_mtime.tv_sec;
            h->nsec = sx.stx_mtime.tv_nsec;
            memcpy(h->name, f->d_name, strlen(f->d_name));
            int fd = openat(dfd, f->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
            ssize_t n = read(fd, out + olen + sizeof *h, sx.stx_size + 1);
            struct stat st;
            char names[256];
            if (fd < 0 || n != (ssize_t)sx.stx_size || fstat(fd, &st))
                die(f->d_name);
            flistxattr(fd, names, sizeof names);
            close(fd);
            h->len = n;
            olen += sizeof *h + n;
        }
        closedir(files);
    }
    flush_out(s);
    shutdown(s, SHUT_WR);
    char done;
    return recv(s, &done, 1, 0) == 1 ? 0 : 1;
}

enum how { UNNAMED, STAGED, DIRECT };

// Puts a staged directory in place under its final name.
static void publish(int root, const char *dir) {
    char work[32];
    snprintf(work, sizeof work, ".%s.staged", dir);
    if (syscall(SYS_renameat2, root, work, root, dir, RENAME_NOREPLACE))
        die(dir);
}

static int recv_tree(const char *dst, const char *port, enum how how) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(port);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1))
        die("listen");
    printf("listening\n");
    fflush(stdout);
    int s = accept(l, 0, 0), root = open(dst, O_DIRECTORY | O_RDONLY);
    if (s < 0 || root < 0)
        die("accept");
    char at[17] = "";
    int od = -1;
    static char in[1 << 19];
    size_t have = 0, pos = 0;
    for (;;) {
        struct hdr *h = (void *)(in + pos);
        int whole = have - pos >= sizeof *h && have - pos >= sizeof *h + h->len;
        if (!whole) {
            memmove(in, in + pos, have - pos);
            have -= pos;
            pos = 0;
            ssize_t n = recv(s, in + have, sizeof in - have, 0);
            if (n < 0)
                die("recv");
            if (n == 0 && have > 0)
                die("truncated");
            if (n == 0)
                break;
            have += n;
            continue;
        }
        char dir[17], name[17];
        memcpy(dir, h->dir, 16);
        memcpy(name, h->name, 16);
        dir[16] = name[16] = 0;
        if (strcmp(dir, at)) {
            // Files come a directory at a time.
            if (od >= 0)
                close(od);
            if (how == STAGED && at[0])
                publish(root, at);
            char work[32];
            snprintf(work, sizeof work, ".%s.staged", dir);
            const char *made = how == STAGED ? work : dir;
            mkdirat(root, made, 0755);
            od = openat(root, made, O_DIRECTORY | O_RDONLY);
            if (od < 0)
                die(dir);
            memcpy(at, dir, sizeof at);
        }
        int fd = how == UNNAMED ? openat(od, ".", O_TMPFILE | O_RDWR, 0600)
                                : openat(od, name, O_CREAT | O_EXCL | O_WRONLY, 0600);
        struct timespec ts[2] = {{0, UTIME_OMIT}, {h->mtime, h->nsec}};
        if (fd < 0 || write(fd, in + pos + sizeof *h, h->len) != h->len ||
            fchmod(fd, h->mode & 0777) || futimens(fd, ts) ||
            (how == UNNAMED && linkat(fd, "", od, name, AT_EMPTY_PATH)))
            die(name);
        close(fd);
        pos += sizeof *h + h->len;
    }
    if (how == STAGED && at[0])
        publish(root, at);
    syncfs(root);
    return send(s, "k", 1, 0) == 1 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "send"))
        return send_tree(argv[2], argv[3]);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "recv")) {
        const char *how = argc == 5 ? argv[4] : "unnamed";
        if (!strcmp(how, "unnamed"))
            return recv_tree(argv[2], argv[3], UNNAMED);
        if (!strcmp(how, "staged"))
            return recv_tree(argv[2], argv[3], STAGED);
        if (!strcmp(how, "direct"))
            return recv_tree(argv[2], argv[3], DIRECT);
    }
    fprintf(stderr, "usage: floor send DIR PORT | floor recv OUT PORT [unnamed|staged|direct]\n");
    return 2;
}
