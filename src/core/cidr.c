#include "core/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cidr_parse(const char *text, struct cidr *out)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t len = slash ? (size_t)(slash - text) : strlen(text);
    if (len == 0 || len >= sizeof host)
        return -EINVAL;
    memcpy(host, text, len);
    host[len] = '\0';
    memset(out, 0, sizeof *out);
    unsigned max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -EINVAL;
    }
    out->prefix = max;
    if (slash != NULL) {
        char *end = NULL;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (*end != '\0' || p > max)
            return -EINVAL;
        out->prefix = (unsigned)p;
    }
    for (unsigned bit = out->prefix; bit < max; bit++)
        out->addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    return 0;
}

static bool in_range(const struct cidr *r, const unsigned char *addr)
{
    unsigned full = r->prefix / 8, rest = r->prefix % 8;
    if (memcmp(r->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xffu << (8 - rest));
    return (addr[full] & mask) == r->addr[full];
}

bool cidr_match_any(const struct cidr *ranges, size_t n, const char *ip)
{
    unsigned char a4[4], a6[16];
    bool is4 = inet_pton(AF_INET, ip, a4) == 1;
    bool is6 = !is4 && inet_pton(AF_INET6, ip, a6) == 1;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (is6 && memcmp(a6, mapped, 12) == 0) {
        memcpy(a4, a6 + 12, 4);
        is4 = true;
    }
    for (size_t i = 0; i < n; i++) {
        if (ranges[i].family == AF_INET && is4 && in_range(&ranges[i], a4))
            return true;
        if (ranges[i].family == AF_INET6 && is6 && in_range(&ranges[i], a6))
            return true;
    }
    return false;
}
