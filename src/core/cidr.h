/* IP address ranges (CIDRs) for the trusted-proxy check. */
#ifndef CODEHUB_CORE_CIDR_H
#define CODEHUB_CORE_CIDR_H

#include <stdbool.h>
#include <stddef.h>

struct cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network address, host bits cleared */
    unsigned prefix;        /* bits */
};

/* Parses "ADDR" or "ADDR/PREFIX" (IPv4 or IPv6). Returns 0 or -EINVAL. */
int cidr_parse(const char *text, struct cidr *out);

/* True when the IP literal `ip` lies in one of the `n` ranges. An IPv4-mapped IPv6
 * address (::ffff:a.b.c.d) also matches IPv4 ranges. */
bool cidr_match_any(const struct cidr *ranges, size_t n, const char *ip);

#endif
