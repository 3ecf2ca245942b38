/* utf8.c - UTF-8 well-formedness (utf8.h). */
#include "utf8.h"

int mn_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

int mn_utf8_ok(const unsigned char *s, int n) {
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && s[0] == 0xE0 && s[1] < 0xA0) return 0;
    if (n == 3 && s[0] == 0xED && s[1] >= 0xA0) return 0;
    if (n == 4 && s[0] == 0xF0 && s[1] < 0x90) return 0;
    if (n == 4 && s[0] == 0xF4 && s[1] >= 0x90) return 0;
    return 1;
}

int64_t mn_utf8_invalid_at(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        const int l = u[i] ? mn_utf8_len(u[i]) : 0;
        if (!l || i + (size_t)l > n || !mn_utf8_ok(u + i, l)) return (int64_t)i;
        i += (size_t)l;
    }
    return -1;
}
