/*
 * LD_PRELOAD shim for SIPp 3.6.1, used by bench/sip_load.py.
 *
 * SIPp's [authentication] reads only the first WWW-Authenticate / Proxy-Authenticate header
 * of a 401/407 and gives up ("authentication must use MD5 or AKAv1-MD5") when it names
 * another algorithm. minipbx offers SHA-256 first and MD5 second (RFC 8760 2.4), so this
 * shim removes, from every datagram SIPp receives, the challenge lines whose algorithm is
 * not MD5: SIPp then answers the MD5 challenge, as a phone that only speaks MD5 would.
 *
 * Build: gcc -O2 -shared -fPIC -o md5_only.so md5_only.c -ldl
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

static int is_challenge(const char *line, size_t len) {
    static const char *names[] = {"WWW-Authenticate:", "Proxy-Authenticate:"};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(names[i]);
        if (len >= n && strncasecmp(line, names[i], n) == 0) return 1;
    }
    return 0;
}

/* 1 when the challenge line names an algorithm other than MD5. */
static int other_algorithm(const char *line, size_t len) {
    static const char key[] = "algorithm=";
    size_t k = sizeof(key) - 1;
    for (size_t i = 0; i + k <= len; i++) {
        if (strncasecmp(line + i, key, k) != 0) continue;
        const char *v = line + i + k;
        size_t rest = len - i - k;
        if (rest && *v == '"') { v++; rest--; }
        if (rest >= 3 && strncasecmp(v, "MD5", 3) == 0 &&
            (rest == 3 || !(isalnum((unsigned char)v[3]) || v[3] == '-')))
            return 0;
        return 1;
    }
    return 0;
}

static ssize_t strip(char *buf, ssize_t size) {
    if (size <= 0) return size;
    char *end = buf + size;
    char *line = buf;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) break;
        size_t len = (size_t)(nl - line);
        if (len == 0 || (len == 1 && line[0] == '\r')) break; /* end of headers */
        if (is_challenge(line, len) && other_algorithm(line, len)) {
            size_t gone = len + 1;
            memmove(line, nl + 1, (size_t)(end - nl - 1));
            end -= gone;
            continue;
        }
        line = nl + 1;
    }
    return (ssize_t)(end - buf);
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen) {
    static ssize_t (*real)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "recvfrom");
    ssize_t got = real(fd, buf, n, flags, addr, alen);
    if (got > 0 && !(flags & MSG_PEEK)) got = strip((char *)buf, got);
    return got;
}
