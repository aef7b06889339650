/* Test helper: creates an identity with chosen validity dates, for the expired and
 * not-yet-valid certificate tests.
 *   mkcert KEY CERT NOT_BEFORE_DAYS DAYS
 * The certificate is valid from now - NOT_BEFORE_DAYS to now + DAYS (either may be negative).
 * Prints "fingerprint: FP". Overwrites existing files. */
#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "tls.h"

int main(int argc, char **argv)
{
    char fp[TLS_FP_LEN];
    char *error = NULL;

    if (argc != 5) {
        fprintf(stderr, "usage: mkcert KEY CERT NOT_BEFORE_DAYS DAYS\n");
        return 2;
    }
    int r = tls_identity_create(argv[1], argv[2], "understudy-test", atoi(argv[3]), atoi(argv[4]),
                                true, fp, &error);
    if (r < 0) {
        fprintf(stderr, "mkcert: %s\n", error ? error : err_str(r));
        free(error);
        return 1;
    }
    printf("fingerprint: %s\n", fp);
    return 0;
}
