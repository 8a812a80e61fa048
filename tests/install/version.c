/* version.c -- the installed header and the loaded library agree:
 * prints "resilient-amqp <version> abi <n>" and exits 0, or 1 on a mismatch.
 * Built by scripts/install-test.sh against an installed copy. */
#include <stdio.h>
#include <string.h>

#include <resilient_amqp.h>

int main(void) {
    const char *loaded = amqp_library_version();
    char macros[64];
    snprintf(macros, sizeof macros, "%d.%d.%d", AMQP_LIBRARY_VERSION_MAJOR,
             AMQP_LIBRARY_VERSION_MINOR, AMQP_LIBRARY_VERSION_PATCH);
    if (strcmp(loaded, AMQP_LIBRARY_VERSION_STRING) != 0 || strcmp(loaded, macros) != 0 ||
        amqp_abi_version() != AMQP_ABI_VERSION) {
        fprintf(stderr, "version mismatch: library %s abi %u, header %s (%s) abi %d\n", loaded,
                amqp_abi_version(), AMQP_LIBRARY_VERSION_STRING, macros, AMQP_ABI_VERSION);
        return 1;
    }
    printf("resilient-amqp %s abi %u\n", loaded, amqp_abi_version());
    return 0;
}
