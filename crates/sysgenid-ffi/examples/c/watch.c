/* watch.c: prints the System Generation ID, waits for its next change as a tracked watcher,
 * acknowledges it, and exits; the smallest complete client of libsysgenid. */
/* SPDX-License-Identifier: MIT OR Apache-2.0 */

/*
 * Build against an installed libsysgenid:
 *     cc watch.c $(pkg-config --cflags --libs sysgenid) -o watch
 * Run it as root (or a member of the `sysgenid` group), then bump the generation from another
 * terminal with `sysgenid trigger`. SYSGENID_DEVICE and SYSGENID_STATE_DIR select a daemon
 * other than the system one.
 */

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <sysgenid/sysgenid.h>

/* Says which call failed and what its code means, and returns the exit status. */
static int fail(const char *call, int err)
{
    fprintf(stderr, "watch: %s failed: %s\n", call, sysgenid_strerror(err));
    return EXIT_FAILURE;
}

int main(void)
{
    uint32_t generation = 0;
    uint32_t changed = 0;
    uint8_t id[SYSGENID_ID_SIZE];
    sysgenid_watcher *watcher = NULL;
    int err;

    /* One line per step, even when stdout is a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    err = sysgenid_generation(&generation);
    if (err != 0)
        return fail("sysgenid_generation", err);
    printf("generation %" PRIu32 "\n", generation);

    /* Which clone this is: two clones of one snapshot share the generation, not its ID. */
    err = sysgenid_generation_id(&generation, id);
    if (err != 0)
        return fail("sysgenid_generation_id", err);
    printf("id ");
    for (size_t i = 0; i < SYSGENID_ID_SIZE; i++)
        printf("%02x", id[i]);
    printf("\n");

    /* Tracked: an overseer's sysgenid_wait_watchers waits until we acknowledge. */
    err = sysgenid_watcher_open(SYSGENID_TRACK, &watcher);
    if (err != 0)
        return fail("sysgenid_watcher_open", err);
    printf("watching with libsysgenid %s\n", sysgenid_version());

    err = sysgenid_watcher_next_change(watcher, &changed);
    if (err != 0) {
        sysgenid_watcher_free(watcher);
        return fail("sysgenid_watcher_next_change", err);
    }
    printf("changed to %" PRIu32 "\n", changed);

    /* Renew here whatever must not be shared between copies of this system: random seeds,
     * UUIDs, keys, leases. Then say so. */
    err = sysgenid_watcher_ack(watcher, changed);
    if (err != 0) {
        sysgenid_watcher_free(watcher);
        return fail("sysgenid_watcher_ack", err);
    }
    printf("acknowledged %" PRIu32 "\n", changed);

    sysgenid_watcher_free(watcher);
    return EXIT_SUCCESS;
}
