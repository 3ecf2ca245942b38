/* test_keys.c - the scoped API key file (src/server/keys.c): what parses,
 * what is refused with its line, and which owner a presented key names. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mnemo.h"
#include "server/keys.h"
#include "test.h"

static int parse(const char *text, mn_api_keys **k) { return mn_api_keys_parse(text, strlen(text), k); }

static void refused(const char *text, int code, const char *needle) {
    mn_api_keys *k = (mn_api_keys *)1;
    int rc = parse(text, &k);
    CHECK(rc == code && k == NULL && strstr(mn_last_error(), needle), "refused %d (%s) for [%s]: %s", rc, needle,
          text, mn_last_error());
}

int main(void) {
    mn_api_keys *k = NULL;
    const char *good = "# owners and keys\r\n"
                       "alice   alice-key-1\r\n"
                       "\n"
                       "   # indented comment\n"
                       "bob\tbob-key-1\n"
                       "bob bob-key-2   \n"
                       "svc.ingest_2 K!~{}\"'=\n"
                       "carol carol-key"; /* no final newline */
    CHECK(parse(good, &k) == 0 && mn_api_keys_count(k) == 5, "good file: %s", mn_last_error());
    const char *o;
    CHECK((o = mn_api_keys_owner(k, "alice-key-1", 11)) && !strcmp(o, "alice"), "alice's key");
    CHECK((o = mn_api_keys_owner(k, "bob-key-2", 9)) && !strcmp(o, "bob"), "bob's second key");
    CHECK((o = mn_api_keys_owner(k, "K!~{}\"'=", 8)) && !strcmp(o, "svc.ingest_2"), "punctuation key");
    CHECK((o = mn_api_keys_owner(k, "carol-key", 9)) && !strcmp(o, "carol"), "last line without newline");
    CHECK(!mn_api_keys_owner(k, "alice-key-", 10), "a prefix is not the key");
    CHECK(!mn_api_keys_owner(k, "alice-key-11", 12), "a longer key is not the key");
    CHECK(!mn_api_keys_owner(k, "", 0), "empty key");
    CHECK(!mn_api_keys_owner(k, "alice", 5), "an owner name is not a key");
    CHECK(!mn_api_keys_owner(NULL, "alice-key-1", 11), "no table");
    mn_api_keys_free(k);
    mn_api_keys_free(NULL);

    refused("", MN_EINVAL, "no keys");
    refused("# only a comment\n\n", MN_EINVAL, "no keys");
    refused("alice\n", MN_EFORMAT, "line 1");
    refused("alice k1\nbob k2 extra\n", MN_EFORMAT, "line 2");
    refused("al/ice k1\n", MN_EFORMAT, "owner name");
    refused("alice k1\nbob k1\n", MN_EFORMAT, "same key");
    refused("alice k\001ey\n", MN_EFORMAT, "printable");
    refused("alice k\xc3\xa9y\n", MN_EFORMAT, "printable");
    char big[400];
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = 0;
    char line[512];
    snprintf(line, sizeof line, "%.70s key\n", big);
    refused(line, MN_EFORMAT, "over 64");
    snprintf(line, sizeof line, "alice %.300s\n", big);
    refused(line, MN_EFORMAT, "over 256");
    /* a NUL inside the text is a byte like any other: refused, never a
     * silent end of the file */
    mn_api_keys *z = NULL;
    CHECK(mn_api_keys_parse("alice k1\nbob k\0x\n", 16, &z) == MN_EFORMAT && !z, "NUL in a key refused");

    char path[64];
    snprintf(path, sizeof path, "/tmp/mnemo_test_keys_%d", (int)getpid());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "temp file");
    if (f) {
        fputs("dave dave-key\n", f);
        fclose(f);
        CHECK(mn_api_keys_load(path, &k) == 0 && mn_api_keys_count(k) == 1, "load: %s", mn_last_error());
        mn_api_keys_free(k);
        f = fopen(path, "w");
        fputs("dave\n", f);
        fclose(f);
        CHECK(mn_api_keys_load(path, &k) == MN_EFORMAT && strstr(mn_last_error(), path) &&
                  strstr(mn_last_error(), "line 1"),
              "load names the file and the line: %s", mn_last_error());
        unlink(path);
    }
    CHECK(mn_api_keys_load("/nonexistent/keys", &k) == MN_EIO && !k, "missing file");
    CHECK(mn_api_keys_load("/tmp", &k) == MN_EINVAL && !k, "a directory");
    TEST_MAIN_END();
}
